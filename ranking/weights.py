"""Every number the ranker uses, in one frozen dataclass, with where each value came from.

Scale: fused relevance is 1.0 for a listing ranked first by every candidate list (``ranking.fusion``);
boosts are additive on that scale. Relevance values of neighbouring ranks differ by about 0.01-0.03, so a
boost of 0.02 moves a listing about one place, and the sum of all quality boosts is capped at
``quality_cap`` so that signals reorder near-ties but never lift an irrelevant listing over a relevant one.
Request words rare among the candidates (``ranking.contrast``) are relevance evidence of their own, not a
quality signal: up to ``distinctive_words_boost`` on top of the fused relevance.

Values marked "tuned" were chosen by ``python -m benchmarks.relevance DIR --tune`` on
``shared/data/relevance/hf-dev`` (a small grid, checked on two halves of the queries; see that module).
Quality-signal values cannot be tuned there (the dev catalog has no usage, latency or verification data):
they are conservative defaults, kept small by the cap.

Re-measured after listings were embedded description first and keyword fields weighted equally
(``search.documents``; through the search service MRR@10 0.271 -> 0.280 -> 0.283), from one snapshot of
the depth-200 candidate lists; figures are MRR@10 all / even half / odd half unless said otherwise:

- the chosen values below stay at the top of a flat grid (keyword_weight 0.7-1.3 x category_boost
  0.1-0.3 x depth 100/200): 0.283 / 0.239 / 0.328; the grid's best (keyword 1.3, category 0.1, depth 200)
  is 0.287 / 0.235 / 0.338, worse on the even half, so not taken. Before the keyword change, RRF and
  score fusion x keyword_weight 0.5-1.4 x depth 50-200, and label_temperature 0.02-0.2 x category_boost
  0.2-0.8 x max_labels 3/10, left them best as well (0.280 / 0.243 / 0.318);
- query understanding puts a relevant listing's label first for 0.637 / 0.575 / 0.699 of the queries
  and among its first three for 0.852 (``benchmarks.relevance`` prints both); the top-level category is
  right for 0.90. Given the relevant label (an oracle) the ranker reaches 0.321 at this category_boost
  and 0.378 at 1.0, so better label inference alone cannot lift much past ~0.32: the rest is ordering
  among near-identical listings of one label. Most label misses are between labels that overlap in
  meaning (zero-shot vs plain classification, text-to-text vs translation / summarization);
- tried and rejected, because neither half improved beyond noise (~0.005) or both got worse:
  BM25 over one "label document" per label (all its listings' text) as extra label evidence (alone it
  picks the right label for 0.41; added at weight 0.1-0.4: 0.275-0.277); label scores from each
  label's best hits in the vector / keyword lists (0.278-0.281); label text embedded several ways
  (name, definition, clauses; max or mean): label@1 0.632 -> 0.651 but MRR@10 0.279; a log-probability
  prior over all labels, score += w log(P + eps) (<= 0.279); an extra boost for the inferred top-level
  category (0.281); labels named by a listing's tags, or the same subcategory under another category,
  sharing the boost (<= 0.280); raw cosine(query, label text) per listing (0.282); down-weighting query
  words whose catalog occurrences spread over many labels (label entropy: BM25 0.221 -> 0.146-0.221,
  ranker 0.245-0.277) or that are rare in the catalog (0.267-0.272); up-weighting rare words (0.281-
  0.287, odd half only); a second listing embedding (description only, or subcategory + name +
  description) by max or mean (within noise); the label's task definition appended to the embedded
  listing text (0.285 / 0.249 / 0.322 at category_boost 0.1: within noise, and it would tie stored
  embeddings to this module's wording); the query embedded per sentence (best sentence by label
  similarity, mean, last, without the first: 0.262-0.278); maximal-marginal-relevance diversification
  of the top 30 (0.277-0.280); other score normalizations (max-scaled BM25, min-max over the top 20/50,
  floored cosine: 0.254-0.278); a per-query keyword weight growing with the top BM25 score relative to
  the median query's (0.285-0.288 / 0.244-0.248 / 0.325-0.330: within noise, and it needs a running
  statistic of past queries); a per-query vector weight from the top cosine (0.264-0.272).
- a LEARNED linear reranker, rejected: 18 per-candidate features (min-max BM25 and cosine parts, 1/rank
  in each list, in both / keyword only / vector only, P(listing's label) truncated and untruncated,
  top-label indicator, cosine(query, label text) minus the best label's, log label prior, share of query
  words in the name and in the tags, log description length, raw cosine, log BM25), fitted with a
  listwise softmax loss (L2 0.001-0.1; over all candidates or the current top 20 / 50; alone or as a
  residual on the current score) or a pairwise logistic loss, 2-fold on the even / odd halves. Trained on
  one half and scored on the other: even 0.224-0.249, odd 0.280-0.325, against 0.239 / 0.328 — worse on
  the odd half in every configuration; even fitted and scored on all queries (in-sample) it reaches only
  0.263-0.293. The hand-set score already sits where a linear model over these features can get (its
  word-coverage features used catalog-wide word weights; see ``distinctive_words_boost`` for what did
  help);
- a logistic-regression label classifier trained on the catalog's own listing embeddings -> their
  labels (L2 1e-4 / 1e-3, training accuracy 0.98 / 0.89), its probability or log-probability added to
  the label evidence at 0.05-0.4: label@1 0.610-0.637, MRR@10 0.280-0.285 / 0.236-0.242 / 0.324-0.328;
  label centroids (mean listing embedding) as evidence instead: 0.279-0.282;
- pseudo-relevance feedback (Rocchio: the query vector plus 0.3 / 0.7 x the mean embedding of the top
  3-10 vector hits, or of the top 3-5 keyword hits, then searched again): 0.261-0.281;
- hubness correction of the cosine (CSLS: cosine minus 0.1-0.5 x the listing's mean cosine to its 5-20
  nearest listings): 0.278-0.285 / 0.233-0.244 / 0.322-0.329.

Tried on top of the distinctive-words boost (0.293 / 0.250 / 0.336) and rejected, within noise or worse:
the same contrast in embedding space (cosine after subtracting the mean embedding of all or the top 20
candidates, x0.5 / x1, added at 0.1-0.5 on a min-max scale; it would also need candidate vectors at
rank time): 0.278-0.293 / 0.240-0.248 / 0.312-0.339; fusion adapted to how much the two lists agree
(keyword_weight 0.7 / 1.0 / 1.3 switched at a top-10 overlap of 0.1 / 0.2 / 0.3): 0.286-0.293 /
0.242-0.250 / 0.327-0.339; label votes from the candidates with the largest distinctive-word shares
(weight 0.1-0.4 of the top 5 / 10): 0.289-0.293; variants of the word weights (matches in the name
x1.5-3, document length normalization 0.25-0.75, matching word pairs added at 0.25-1, query word counts,
weight^0.5 or ^2): 0.287-0.295 / 0.243-0.254 / 0.328-0.340; the listing-side mirror of it (the share of
a listing's own candidate-local word weight that the request contains, penalizing specifics nobody
asked for; 0.1-0.8): 0.287-0.294 / 0.240-0.250 / 0.335-0.341.

Label inference, re-examined on top of the distinctive-words boost (0.293 / 0.250 / 0.336; label@1 0.637 /
0.575 / 0.699). The label oracle (``benchmarks.relevance`` prints it: every label of a relevant listing
at probability 1 instead of the inferred ones) reaches 0.333 / 0.287 / 0.380 at category_boost 0.2, 0.351
at 0.3, 0.377 at 0.5, 0.392 at 1.0. So even perfect labels only just reach 0.33 at this boost, and a
stronger boost pays only if nearly every label is right: at 0.5 the inferred labels give 0.286. Per query,
a wrong top label that becomes right gains ~0.10 in reciprocal rank at boost 0.2 (0.24 at 0.5), so each
+0.01 of label@1 is worth ~+0.001 of MRR@10 here. Of the wrong top labels, 18% have no relevant listing
among the candidates at all and most of the rest are labels a request's wording does not decide (a
translation request answered by a text-to-text model, a plain image classification request by a
zero-shot one). Everything below was chosen looking only at failures of the even half and checked on
the odd half; rejected, since none moved MRR@10 beyond noise on both halves:
- confidence-gated boost (category boost lo x p, or hi x p when the top label's p >= 0.5 / 0.7 / 0.9;
  lo 0-0.2, hi 0.2-0.6, label_temperature 0.03-0.08): 0.289-0.294 / 0.246-0.250 / 0.329-0.339. The
  probabilities are poorly calibrated (top p >= 0.9 for 244 queries, right for 78% of them; below,
  ~45%), and being sure when the label is right adds nothing: p set to 1 exactly where the top label is
  right gives 0.291 at 0.2. Also flat: p^0.5 or p^2 (0.291-0.294), max_labels 1 / 2 / 5 / all and
  min_label_probability 0-0.2 (0.291-0.293);
- task definitions rewritten to say what goes in and what comes out and what separates a task from its
  neighbours (text-to-image vs image-to-text, zero-shot vs trained label sets, table vs passage QA,
  speech emotion as audio classification), and an unknown subcategory looked up as "category
  subcategory" ("Classification" under "Audio"): the label text ALONE picks the right label for 0.477 ->
  0.513 (even 0.449 -> 0.483, odd, held out, 0.505 -> 0.544), but mixed with the neighbour votes label@1
  0.637 -> 0.627-0.632 and MRR@10 0.292 / 0.249 / 0.335 (the votes already fix what the text fixes);
  with vote weights 0.1-0.3 each re-tuned: 0.287-0.295;
- label evidence combined as a product of experts (log softmax of the label-text similarity at
  temperature 0.02 / 0.05 + b x log(votes + eps), b 0.5 / 1, eps 0.05 / 0.2), with either label text:
  label@1 up to 0.649 / 0.580 / 0.718, MRR@10 0.290-0.296 / 0.246-0.252 / 0.332-0.340 over category
  boosts 0.1-0.5 (best +0.003: noise);
- general-purpose labels sharing the boost of the tasks they can serve (zero-shot classifiers for plain
  classification, text-to-text models for translation / summarization / QA, text generation for
  conversation; share 0.25-1 of that probability): 0.287-0.293 / 0.245-0.250 / 0.329-0.336, worse on the
  even half that suggested it;
- label votes from the top 5 / 10 / 20 of the fused list before the category boost (keyword, semantic
  and distinctive-word parts together; by 1/rank or exp(score gap / 0.05-0.1)), alone (label@1
  0.586-0.613) or added at 0.2-0.4 beside or instead of the two per-list votes: label@1 0.605-0.654,
  MRR@10 0.285-0.296 / 0.239-0.251 / 0.330-0.342 (it would also need a second scoring pass).
The lever left is ordering among candidates of one label (the oracle at boost 1.0 stays at 0.39).

Embedding-side ideas, on top of the distinctive-words boost, from one snapshot of the depth-200 lists
(0.292 / 0.247 / 0.338 there; the benchmark's search-service path prints 0.292 / 0.250 / 0.336):
- kept: request words weighted in the keyword query by the model's own reading of the request
  (``ranking.term_weights``, ``keyword_term_weight_power`` below): 0.302 / 0.260 / 0.345. BM25 alone gets
  slightly worse with it (0.238 -> 0.232): the gain is in what the keyword list adds to the vector list.
  Controls: the same weights shuffled among each request's words 0.270-0.280 / 0.223-0.245 / 0.309-0.318;
  a stop list instead (weight 0 for NLTK's 179 words, scikit-learn's 318, or pronouns only) 0.288-0.293 /
  0.243-0.247 / 0.333-0.339, and the weights on top of any of them still 0.300-0.301. Within noise of the
  kept form: a word's wordpieces by mean / max / first distance instead of the distance of their mean
  vector (0.299-0.302 / 0.254 / 0.344-0.349); rank-based weights 0.294 / 0.252 / 0.335. Rejected: the
  same weights also in the distinctive-words weights (0.299 / 0.260 / 0.338: the odd half loses the
  gain); the reverse, cosine to the mean (filler scores highest), 0.284-0.293; weights from what a word
  does to the query vector (its tokens left out of the mean pool, or the word deleted and the request
  re-encoded, scored by the drop in cosine to the centroid of the top 10 vector hits or to the full
  query; floors 0 / 0.25 / 0.5): in BM25 0.251-0.291 / 0.224-0.245 / 0.279-0.339, in the distinctive
  words 0.271-0.295 / 0.234-0.251 / 0.307-0.340, in both 0.229-0.289;
- rejected, the same word weights without the forward pass, so BM25 could run while the query encodes
  (the kept form re-run alongside: power 1 / 1.5 / 2 / 2.5 / 3 -> 0.297-0.302 / 0.253-0.260 /
  0.339-0.345): the model's input wordpiece embeddings in place of its contextual token vectors, same
  formula, power 1-3, 0.289-0.292 / 0.241-0.251 / 0.330-0.338 (with or without [CLS]/[SEP] in the mean,
  or the vocabulary's mean row subtracted first): it is the context that sets filler apart ("their",
  "am", "want" keep 0.6-0.7 of the top weight); each word's catalog IDF / the request's largest, power
  1 / 2 / 3, 0.288 / 0.277 / 0.268 (odd half 0.331-0.313);
- rejected, isotropy post-processing ("all-but-the-top", Mu & Viswanath 2018: the catalog's mean listing
  embedding subtracted and its top D = 1-8 principal components projected out of listings and query
  alike, re-normalized; for the vector list only, for the neighbour votes too, or with the label vectors
  transformed as well): dense alone 0.238 -> 0.201-0.220, ranker 0.270-0.280 / 0.231-0.242 /
  0.303-0.322. Queries and listings are not centred alike (cosine of the two means 0.68): centring the
  queries by their own mean instead (in-sample; it would need a log of past queries) gives dense 0.252
  but the ranker 0.291-0.295 / 0.246-0.254 / 0.333-0.340, within noise;
- rejected, a second query text of only the request's words found in the catalog's listing texts
  (document frequency >= 1 or >= 2), encoded in the same batch and blended with the full query's vector
  (weight 0.7 / 0.5 / 0.3 / 0 on the full one), for the vector list only or for query understanding too:
  0.262-0.294 / 0.228-0.256 / 0.296-0.340.

The same reading on the dense side, on top of the kept keyword weights (0.302 / 0.259 / 0.345; dense list
alone 0.240 / 0.203 / 0.276): the query vector re-pooled from the one forward pass's token vectors with
weights, for the vector list only (figures below), or for query understanding too (all variants
0.295-0.307 / 0.245-0.267 / 0.336-0.353, never above the former by more than 0.004). Rejected, no
variant lifting both halves beyond noise:
- each token weighted by its distance d from the mean token vector (d^0.5 / 1 / 2 / 3 / 4, (d / max)^1-3,
  1 + 1 / 3 / 10 x d; [CLS]/[SEP] at their own weight, at 1 or at 0), alone or blended 0.3 / 0.5 / 0.7
  with the plain vector: 0.295-0.307 / 0.253-0.264 / 0.336-0.353. Where the odd half gains (d^2-3 with
  [CLS]/[SEP] at 1: 0.306-0.307 / 0.260-0.261 / 0.352-0.353) it is the special tokens' growing share:
  plain mean pooling with [CLS]/[SEP] weighted 2-20 does as much, 0.302-0.305 / 0.253-0.260 /
  0.347-0.354; the distances shuffled among the words, 0.298-0.301 / 0.251-0.255 / 0.342-0.351;
- each token weighted by its word's keyword weight ((d / max)^1-3 as above, [CLS]/[SEP] at 1 or 0, blends
  0.3-0.7): the dense list alone gains (0.249-0.254, best 0.253 / 0.210 / 0.296 at power 2), the ranker
  0.300-0.307 / 0.259-0.267 / 0.338-0.348; the best (power 2, [CLS]/[SEP] at 1) 0.307 / 0.267 / 0.347,
  paired bootstrap of its gain 90% [-0.001, +0.011] (32 queries better, 21 worse); presumably what they find
  reaches the fused list already through the weighted keyword list.

Morphology in the distinctive words, on top of the kept keyword weights (0.302 / 0.259 / 0.345 through the
search service; request words match whole words only, no stemming), rejected as noise: variants a hair
apart disagree, and as many queries lose as gain. Request words matched by their Snowball stem as a prefix
of a listing's words (stems under 4 / 5 / 6 characters as whole words): 0.308-0.310 / 0.265-0.267 /
0.351-0.353, but 29 queries better and 30 worse, paired bootstrap 90% [-0.000, +0.014]; matching by the
common prefix of word and stem instead ("classif" for "classify", which the stem "classifi" misses):
0.303-0.307 / 0.255-0.261 / 0.350-0.354 (even half within noise); the request word itself as a prefix,
no stemmer: 0.301 / 0.263 / 0.339; exact stem equality (every candidate text through the analyzer):
0.300 / 0.260 / 0.340. Also rejected: request words whose keyword weight is under 0.05 / 0.1 / 0.2 / 0.3
left out of the distinctive words (filler such as "our", "want"): 0.295-0.301 / 0.256-0.258 / 0.335-0.345.

Late interaction (ColBERT-style MaxSim over MiniLM's own contextual token vectors, no training), measured
and NOT taken: the best single list found on hf-dev, but a small gain on top of the ranker for a large
storage cost. Each request word's vector (its wordpieces' mean, as ``search.word_distances`` reads them)
is matched to its most similar token of a listing's embedded text ([CLS]/[SEP] left out), and the
listing scores the mean of those maxima. Alone, over the whole catalog, it reaches MRR@10 0.262 / 0.221 /
0.304 against dense 0.238 and BM25 0.238 (request words weighted by the keyword weights instead of
equally: 0.255; the listing-to-request direction: 0.224; both directions averaged: 0.262). Added to the
ranker's score at 0.3-0.7 x its min-max over the candidates: 0.310-0.311 / 0.256-0.267 / 0.356-0.366;
the best, 0.3, is 41 queries better and 24 worse, paired bootstrap 90% [+0.002, +0.016]; only over the
top 20 / 30 / 50 candidates: 0.306-0.312. Variants, no better: the distinctive-words boost dropped for it
(0.310 / 0.267 / 0.353), earlier layers of the model (layer 5: 0.297-0.305; layers 0-4 alone 0.09-0.15),
tokens centred by the catalog's mean token vector (0.305-0.309), each word scored by its contrast to the
other candidates (z-score or excess over the mean or a quantile: 0.286-0.309). The cost is the listings'
token vectors, ~75 per listing here: 29 KB per listing in int8, which keeps the gain (~2.9 GB at 100k
listings, against a 1.5 GB memory budget for the whole server); projected to 64 / 128 principal
dimensions 0.306-0.310; 1 bit per dimension 0.300-0.305; only each listing's 8-32 tokens farthest from
its mean 0.275-0.288 (the matches on common tokens matter). So +0.009 would need a token store of its
own, kept in step with the index, and ~1-2 ms per search; left for when a stronger encoder is not an
option.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True, slots=True)
class RankingWeights:
    # --- candidate fusion. Tuned on hf-dev (413 queries; MRR@10 all / even half / odd half) with
    # ``benchmarks.relevance --tune`` (grid: fusion x rrf_k x keyword_weight x category_boost x depth):
    #   chosen (score fusion, keyword 1.0, category 0.2, depth 100)     0.271 / 0.239 / 0.303
    #   best of grid (keyword 0.7, depth 200)                           0.272 / 0.241 / 0.304
    #   best RRF (k=60, keyword 0.7, category 0.2, depth 200)           0.261 / 0.225 / 0.297
    #   plain RRF (k=60, equal weights, no boosts)                      0.252
    # z-score instead of min-max scaling: 0.269 at depth 100. The grid is flat (0.25-0.27): the choice is
    # stable across halves, not a sharp optimum.
    fusion: Literal["rrf", "score"] = "score"
    rrf_k: float = 30.0
    keyword_weight: float = 1.0
    vector_weight: float = 1.0
    # Hits requested from each list. Min-max scaling needs a deep enough list to set a meaningful
    # minimum: MRR@10 at depth 30 / 50 / 100 / 200 = 0.263 / 0.265 / 0.271 / 0.272, and ranking costs about
    # 1 ms per 100 candidates, so 100.
    candidate_depth: int = 100

    # --- query understanding. Top-label accuracy on hf-dev: all three signals 0.62; without keyword votes
    # 0.59, without vector votes 0.60, without label text 0.55. MRR@10 moved by < 0.005 across
    # vote_depth 5-20, vote weights 0-0.4 and vote_temperature 0.02-0.1, so these stay at round values.
    label_text_weight: float = 1.0  # cosine(query, label text)
    vector_vote_weight: float = 0.2  # labels of the top vector hits
    keyword_vote_weight: float = 0.2  # labels of the top keyword hits
    vote_depth: int = 10
    vote_temperature: float = 0.05  # cosine gap at which a neighbour's vote drops by e
    label_temperature: float = (
        0.05  # softmax temperature over label evidence (depth 50: 0.02 -> 0.264, 0.05 -> 0.265)
    )
    max_labels: int = 3
    min_label_probability: float = 0.05
    format_min_probability: float = 0.5  # infer formats only from a label this probable

    # --- boosts from the interpretation. category_boost at depth 100: 0 -> 0.264, 0.05 -> 0.268,
    # 0.1 -> 0.267, 0.2 -> 0.271, 0.3 -> 0.270. 0.2 keeps the boost below the relevance of a listing
    # first in one of the two lists (0.5). format_boost: untested (hf-dev declares no formats).
    category_boost: float = 0.2  # times P(listing's label)
    format_boost: float = 0.02  # per matching inferred input/output format

    # --- request words rare among the candidates (``ranking.contrast``): times the listing's share of
    # their candidate-local weight (0..1). The one addition that lifted both halves of hf-dev. MRR@10 all /
    # even / odd at the other values' defaults (depth 100), from ``--tune``:
    #   0 -> 0.283 / 0.239 / 0.328;  0.3 -> 0.290 / 0.244 / 0.335;  0.5 -> 0.293 / 0.250 / 0.336;
    #   0.6 -> 0.295 / 0.251 / 0.338;  0.7 -> 0.294 / 0.253 / 0.336;  0.9 -> 0.291 / 0.251 / 0.331.
    # 2-fold: the value best on the even half (0.7) scores 0.336 on the odd half (+0.008), the value best
    # on the odd half (0.6-0.7) 0.251-0.253 on the even half (+0.012-0.014); paired bootstrap of the gain
    # on all queries, 90% interval: 0.3 [+0.000, +0.012], 0.5 [+0.002, +0.017], 0.6 [+0.003, +0.020]
    # (0.5: 34 queries better, 30 worse). 0.5: the middle of the plateau, not its best point. With
    # it the rest of the grid (fusion x keyword_weight x category_boost x depth) stays best at the values
    # above (depth 200: 0.294 / 0.251 / 0.337, within noise). Variants within noise of it: description
    # words only; a short stop list; two-letter words; normalizing by the best candidate's share instead
    # of the request's total (worse past 0.3). Cost: one scan of each candidate's text for the
    # request's own words (``ranking.contrast.RequestWords``), ~1 ms for ~170 candidates at 100k.
    # Lucene's English stop words are left out (0.2929 -> 0.2924, within noise) so that no explanation
    # credits "the", which in a small catalog can be rare among the candidates.
    distinctive_words_boost: float = 0.5

    # --- request words weighted in the keyword query (``ranking.term_weights``): each word's BM25 term
    # boosted by (its distance from the request's mean token vector / the largest) ** power; 0 = off.
    # MRR@10 all / even / odd from one snapshot at the values above (unweighted 0.292 / 0.247 / 0.338):
    #   power 0.5 -> 0.293 / 0.247 / 0.339;  1 -> 0.297 / 0.253 / 0.341;  1.5 -> 0.299 / 0.255 / 0.343;
    #   2 -> 0.302 / 0.260 / 0.345;  2.5 -> 0.300 / 0.261 / 0.339;  3 -> 0.296 / 0.256 / 0.336.
    # 2: the middle of the plateau; paired bootstrap of its gain, 90% interval [+0.001, +0.019] (45 queries
    # better, 26 worse). With it every cell of distinctive_words_boost 0.3-0.7 x category_boost 0.1-0.3
    # gains 0.005-0.012 and the values above stay best; keyword_weight 0.7 / 1.3: 0.293 / 0.292. At other
    # depths one half gains: 50: 0.288 / 0.247 / 0.329 -> 0.293 / 0.244 / 0.341; 200: 0.291 / 0.246 /
    # 0.337 -> 0.300 / 0.263 / 0.338.
    # Cost: BM25 now waits for the encode (whose forward pass gives the distances) instead of running
    # beside it (``catalog.search_service``); the words' spans come from the same tokenization.
    keyword_term_weight_power: float = 2.0
    # Requests with fewer distinct words than this keep every word at 1: in a short request every word is
    # content, and the distances say nothing ("image captioning": 'captioning' 0.07, "translate english to
    # german": 'to' 0.70 over 'english' 0.35). A guard, not tuned: hf-dev's shortest request has 9
    # distinct words, so its figures are unchanged.
    keyword_term_weight_min_words: int = 8

    # --- quality signals (defaults; bounded by quality_cap)
    usage_boost: float = 0.02  # times relative usage in its category (0..1)
    accuracy_boost: float = 0.01  # times accuracy (0..1)
    latency_boost: float = 0.01  # times ref / (ref + p50 latency)
    latency_reference_ms: float = 100.0
    verified_boost: float = 0.01
    failed_penalty: float = 0.03  # verification failed
    gpu_penalty: float = 0.03  # needs a GPU while the request says CPU only
    stated_preference_factor: float = 2.0  # accuracy/latency boosts when the request asks for them
    quality_cap: float = 0.05  # |sum of quality boosts| never exceeds this

    def with_(self, **changes: object) -> RankingWeights:
        return replace(self, **changes)


DEFAULT_WEIGHTS = RankingWeights()
