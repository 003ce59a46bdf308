"""How well unmet queries group into topics, per similarity threshold: the measurement behind
``Settings.demand_topic_similarity``.

    python -m benchmarks.demand_grouping [--thresholds 0.3,0.35,...]

The set: short search-box requests for distinct needs, five phrasings each, written for this benchmark
(including two needs a producer would serve differently although they share words: bird *songs* vs bird
*photos*). For each threshold it prints pairwise precision (queries put together that belong together),
recall (queries that belong together put together), F1 and the number of topics, for the grouping the
demand service uses (average linkage on MiniLM query embeddings); then the time grouping takes for 200,
1000 and 2000 distinct queries. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from catalog.demand_topics import cluster_by_similarity
from search.embeddings import Encoder

NEEDS: dict[str, list[str]] = {
    "sign language": [
        "sign language recognition from video",
        "translate sign language videos to text",
        "recognize ASL hand gestures in webcam footage",
        "model that reads sign language",
        "american sign language interpreter",
    ],
    "potholes": [
        "detect potholes in road photos",
        "pothole detection from dashcam images",
        "find road damage and cracks in street images",
        "road surface defect detector",
        "identify potholes on highways",
    ],
    "medical dictation": [
        "transcribe doctors' dictation",
        "medical speech to text",
        "speech recognition for clinical notes",
        "convert physician voice recordings into text",
        "ASR model for medical terminology",
    ],
    "load forecasting": [
        "forecast electricity demand",
        "predict hourly power consumption of a building",
        "energy load forecasting time series",
        "electric grid load prediction",
        "how much electricity will we use tomorrow",
    ],
    "contract summaries": [
        "summarize legal contracts",
        "contract summarization",
        "short summary of a long legal agreement",
        "condense terms and conditions into key points",
        "legal document summarizer",
    ],
    "bird songs": [
        "identify bird species from their songs",
        "bird call audio classification",
        "which bird is singing in this recording",
        "recognize birds by sound",
        "birdsong species detector",
    ],
    "bird photos": [
        "classify bird species in photos",
        "bird image classifier",
        "identify the bird in a picture",
        "recognize bird species from camera trap images",
        "what bird is this photo",
    ],
    "math OCR": [
        "convert handwritten math equations to latex",
        "OCR for handwritten formulas",
        "recognize math expressions in scanned notes",
        "handwriting to LaTeX",
        "read equations from a photo of a whiteboard",
    ],
    "swahili": [
        "translate english to swahili",
        "swahili translation model",
        "machine translation from English into Kiswahili",
        "english-swahili translator",
        "translate my app strings into swahili",
    ],
    "card fraud": [
        "detect credit card fraud",
        "fraudulent transaction detection on tabular data",
        "flag suspicious payments",
        "anomaly detection for card transactions",
        "predict whether a bank transaction is fraud",
    ],
    "tumor segmentation": [
        "segment brain tumors in MRI",
        "tumor segmentation for MRI scans",
        "find and outline lesions in brain scans",
        "medical image segmentation of gliomas",
        "MRI tumor boundary detection",
    ],
    "text to music": [
        "generate music from a text description",
        "text to music generation",
        "compose a song from a prompt",
        "create background music from text",
        "AI music generator from words",
    ],
    "sarcasm": [
        "detect sarcasm in tweets",
        "sarcasm classifier for social media posts",
        "is this sentence sarcastic",
        "irony detection in text",
        "identify sarcastic comments",
    ],
    "crop yield": [
        "predict crop yield from satellite images",
        "estimate harvest from remote sensing data",
        "agricultural yield prediction with satellite imagery",
        "forecast wheat production from satellite photos",
        "crop yield estimation model",
    ],
}
# Distinct-query counts timed for grouping (Settings.demand_max_queries caps it at 2000 by default).
SCALE_QUERIES = (200, 1000, 2000)
DEFAULT_THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def pairwise_scores(groups: list[list[int]], labels: list[str]) -> tuple[float, float, float]:
    """Precision, recall and F1 over query pairs (same predicted group vs same need)."""
    predicted = np.empty(len(labels), dtype=int)
    for number, members in enumerate(groups):
        predicted[members] = number
    truth = np.array(labels)
    upper = np.triu_indices(len(labels), 1)
    together = (predicted[:, None] == predicted[None, :])[upper]
    belong = (truth[:, None] == truth[None, :])[upper]
    hits = int((together & belong).sum())
    precision = hits / max(int(together.sum()), 1)
    recall = hits / max(int(belong.sum()), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return precision, recall, f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thresholds", default=",".join(map(str, DEFAULT_THRESHOLDS)))
    args = parser.parse_args()
    thresholds = [float(value) for value in args.thresholds.split(",")]

    texts = [text for phrasings in NEEDS.values() for text in phrasings]
    labels = [need for need, phrasings in NEEDS.items() for _ in phrasings]
    encoder = Encoder(cache_size=0)
    started = time.perf_counter()
    vectors = encoder.encode_documents(texts)
    encode_ms = (time.perf_counter() - started) * 1000

    same = np.array(labels)[:, None] == np.array(labels)[None, :]
    upper = np.triu_indices(len(texts), 1)
    similarity = (vectors @ vectors.T)[upper]
    within, between = similarity[same[upper]], similarity[~same[upper]]
    print(f"{len(texts)} queries, {len(NEEDS)} needs; model load + encoding {encode_ms:.0f} ms")
    print(
        f"cosine within a need: mean {within.mean():.3f}, 10th pct {np.percentile(within, 10):.3f}; "
        f"between needs: mean {between.mean():.3f}, 99th pct {np.percentile(between, 99):.3f}"
    )
    results = []
    for threshold in thresholds:
        started = time.perf_counter()
        groups = cluster_by_similarity(vectors, threshold)
        group_ms = (time.perf_counter() - started) * 1000
        precision, recall, f1 = pairwise_scores(groups, labels)
        results.append(
            {"threshold": threshold, "P": round(precision, 3), "R": round(recall, 3), "F1": round(f1, 3)}
            | {"topics": len(groups), "group_ms": round(group_ms, 2)}
        )
        print(
            f"threshold {threshold:.2f}: P {precision:.2f} R {recall:.2f} F1 {f1:.2f} "
            f"topics {len(groups)} ({group_ms:.1f} ms)"
        )
    scale = {str(count): round(grouping_seconds(count, encoder.dim), 3) for count in SCALE_QUERIES}
    print(f"grouping time (s) by distinct unmet queries: {scale}")
    print(json.dumps({"queries": len(texts), "needs": len(NEEDS), "results": results, "scale_s": scale}))


def grouping_seconds(count: int, dim: int) -> float:
    """Time to group ``count`` distinct queries (random unit vectors: the cost depends on count only)."""
    vectors = np.random.default_rng(0).standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    cluster_by_similarity(vectors, 0.45)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
