"""Synthetic but realistic catalogs and requests for benchmarks, generated from word lists.

Identical or random-token listings would flatter (or punish) BM25 and the vector index unrealistically, so
each listing is composed from a task family (what it does, to what, in which domain), an architecture, an
organisation and varied sentences; requests are phrased the way people ask, over the same families, and
every request text is unique (the query-embedding cache must not turn the benchmark into a cache test).
Deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TaskFamily:
    category: str
    subcategory: str
    input_format: str
    output_format: str
    verbs: tuple[str, ...]
    objects: tuple[str, ...]
    domains: tuple[str, ...]
    short: str


FAMILIES = (
    TaskFamily(
        "Natural Language Processing",
        "Sentiment Analysis",
        "text",
        "class-label",
        ("classify the sentiment of", "detect the polarity of", "score the opinion in"),
        ("product reviews", "tweets", "customer feedback", "movie reviews", "survey answers"),
        ("e-commerce", "social media", "hospitality", "finance", "retail"),
        "sentiment",
    ),
    TaskFamily(
        "Natural Language Processing",
        "Named Entity Recognition",
        "text",
        "text",
        ("extract named entities from", "tag people and places in", "find organisations in"),
        ("news articles", "legal contracts", "clinical notes", "emails", "resumes"),
        ("legal", "healthcare", "journalism", "recruiting", "banking"),
        "ner",
    ),
    TaskFamily(
        "Natural Language Processing",
        "Summarization",
        "text",
        "text",
        ("summarize", "condense", "write abstracts for"),
        ("research papers", "meeting transcripts", "news stories", "support tickets", "reports"),
        ("science", "enterprise", "media", "customer support", "government"),
        "summarizer",
    ),
    TaskFamily(
        "Natural Language Processing",
        "Translation",
        "text",
        "text",
        ("translate", "localize", "convert the language of"),
        ("German documents", "Spanish subtitles", "French manuals", "Japanese chat logs", "product pages"),
        ("travel", "manufacturing", "entertainment", "gaming", "e-commerce"),
        "translator",
    ),
    TaskFamily(
        "Computer Vision",
        "Image Classification",
        "image",
        "class-label",
        ("classify", "recognize the species in", "label the content of"),
        ("photos", "plant leaves", "x-ray images", "satellite tiles", "product pictures"),
        ("agriculture", "radiology", "remote sensing", "retail", "wildlife"),
        "classifier",
    ),
    TaskFamily(
        "Computer Vision",
        "Object Detection",
        "image",
        "bounding-boxes",
        ("detect", "locate", "draw boxes around"),
        ("cars and pedestrians", "defects on circuit boards", "faces", "ships", "shelf products"),
        ("autonomous driving", "manufacturing", "security", "maritime", "retail"),
        "detector",
    ),
    TaskFamily(
        "Computer Vision",
        "Image Segmentation",
        "image",
        "image",
        ("segment", "outline", "separate the regions of"),
        (
            "tumours in MRI scans",
            "roads in aerial images",
            "cells in microscopy",
            "people in photos",
            "crops in fields",
        ),
        ("medical imaging", "mapping", "biology", "photography", "farming"),
        "segmenter",
    ),
    TaskFamily(
        "Audio",
        "Speech Recognition",
        "audio",
        "text",
        ("transcribe", "convert to text", "caption"),
        ("phone calls", "podcasts", "voice notes", "lectures", "court hearings"),
        ("call centres", "media", "education", "legal", "accessibility"),
        "asr",
    ),
    TaskFamily(
        "Audio",
        "Audio Classification",
        "audio",
        "class-label",
        ("classify", "recognize", "tag"),
        ("bird songs", "machine noises", "music genres", "environmental sounds", "coughs"),
        ("ecology", "predictive maintenance", "music streaming", "smart cities", "health"),
        "audio-tagger",
    ),
    TaskFamily(
        "Tabular",
        "Tabular Regression",
        "tabular",
        "vector",
        ("predict", "forecast", "estimate"),
        ("house prices", "energy demand", "delivery times", "crop yields", "insurance claims"),
        ("real estate", "utilities", "logistics", "agriculture", "insurance"),
        "regressor",
    ),
    TaskFamily(
        "Tabular",
        "Tabular Classification",
        "tabular",
        "class-label",
        ("predict", "flag", "score"),
        (
            "customer churn",
            "fraudulent transactions",
            "loan defaults",
            "hospital readmissions",
            "equipment failures",
        ),
        ("telecom", "payments", "lending", "healthcare", "industry"),
        "scorer",
    ),
    TaskFamily(
        "Multimodal",
        "Image Captioning",
        "image",
        "text",
        ("describe", "caption", "write alt text for"),
        ("photos", "product images", "charts", "memes", "street scenes"),
        ("accessibility", "e-commerce", "publishing", "social media", "mapping"),
        "captioner",
    ),
    TaskFamily(
        "Multimodal",
        "Visual Question Answering",
        "image",
        "text",
        ("answer questions about", "explain", "query"),
        ("documents", "diagrams", "receipts", "screenshots", "infographics"),
        ("finance", "education", "accounting", "software", "journalism"),
        "vqa",
    ),
)

ARCHITECTURES = (
    "bert",
    "roberta",
    "distilbert",
    "t5",
    "resnet",
    "efficientnet",
    "vit",
    "yolo",
    "unet",
    "wav2vec2",
    "whisper",
    "xgboost",
    "lightgbm",
    "mlp",
    "convnext",
    "deberta",
    "clip",
    "bart",
)
ORGS = (
    "acme-ai",
    "northwind",
    "datalab",
    "openvision",
    "polyglot",
    "soundwave",
    "tabula",
    "medai",
    "agritech",
    "finml",
    "geosense",
    "retailiq",
    "voxlab",
    "docuai",
    "fastnets",
)
SIZES = ("tiny", "small", "base", "large", "xl")
KINDS = ("model", "model", "model", "algorithm", "dataset", "notebook", "pipeline")
FRAMEWORKS = ("pytorch", "tensorflow", "onnx", "scikit-learn", "jax")
LICENSES = ("apache-2.0", "mit", "cc-by-4.0", "bsd-3-clause", "proprietary")
QUALIFIERS = (
    "",
    "fast",
    "accurate",
    "lightweight",
    "multilingual",
    "on a CPU",
    "for mobile devices",
    "in real time",
    "with high recall",
    "for production",
    "open source",
    "small",
)
ASKS = (
    "I need to {verb} {obj}",
    "{verb} {obj} for {domain}",
    "something that can {verb} {obj}",
    "a {qualifier} model to {verb} {obj}",
    "how do I {verb} {obj} in {domain}",
    "{domain}: {verb} {obj}",
    "tool to {verb} {obj} {qualifier}",
    "looking for a way to {verb} {obj}",
)
SENTENCES = (
    "Trained on {n} labelled {obj} from the {domain} sector.",
    "Fine-tuned from a {arch} checkpoint with mixed precision.",
    "Works best on {obj} shorter than a few minutes or pages.",
    "Evaluated on a held-out split; see the documentation for per-class results.",
    "Suitable for {domain} teams that need to {verb} {obj} at scale.",
    "Exported to {framework} for serving behind a REST endpoint.",
    "Includes preprocessing for noisy {obj}.",
    "Maintained by {org}; contributions welcome.",
)


def _listing(rng: random.Random, index: int) -> dict:
    family = rng.choice(FAMILIES)
    kind = rng.choice(KINDS)
    arch, org, size = rng.choice(ARCHITECTURES), rng.choice(ORGS), rng.choice(SIZES)
    verb, obj, domain = rng.choice(family.verbs), rng.choice(family.objects), rng.choice(family.domains)
    framework = rng.choice(FRAMEWORKS)
    if kind == "dataset":
        lead = f"A {domain} dataset of {obj} for training models to {verb} them."
    elif kind == "notebook":
        lead = f"A notebook showing how to {verb} {obj} with {arch}."
    else:
        lead = f"A {size} {arch} {kind} that can {verb} {obj} for {domain}."
    extra = rng.sample(SENTENCES, k=2)
    fill = {
        "n": f"{rng.randint(2, 900)}k",
        "obj": obj,
        "domain": domain,
        "arch": arch,
        "verb": verb,
        "framework": framework,
        "org": org,
    }
    description = " ".join([lead, *(sentence.format(**fill) for sentence in extra)])
    listing = {
        "name": f"{org}/{arch}-{size}-{family.short}-{obj.split()[0].lower()}-{index}",
        "kind": kind,
        "category": family.category,
        "subcategory": family.subcategory,
        "description": description,
        "tags": sorted({family.short, domain, arch}),
        "framework": framework,
        "license": rng.choice(LICENSES),
        "input_format": family.input_format if kind != "dataset" else None,
        "output_format": family.output_format if kind != "dataset" else None,
        "resources": {
            "cpu": rng.choice((1, 2, 4)),
            "memory_mb": rng.choice((512, 1024, 2048, 8192)),
            "gpu": rng.choice((0, 0, 0, 1)),
        },
    }
    if kind in ("model", "algorithm", "pipeline"):
        listing["accuracy"] = round(rng.uniform(0.55, 0.98), 3)
        listing["accuracy_metric"] = "accuracy"
        listing["latency_ms"] = round(rng.lognormvariate(3.0, 0.8), 1)
    return {k: v for k, v in listing.items() if v is not None}


def listings(count: int, seed: int = 7) -> Iterator[dict]:
    rng = random.Random(seed)
    for index in range(count):
        yield _listing(rng, index)


def write_listings(path: Path, count: int, seed: int = 7) -> Path:
    """Write ``count`` listings as JSON Lines atomically (a half-written file is never reused)."""
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for listing in listings(count, seed):
            handle.write(json.dumps(listing) + "\n")
    partial.replace(path)
    return path


def queries(count: int, seed: int = 11) -> list[str]:
    """``count`` distinct request texts, phrased the way people ask."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        family = rng.choice(FAMILIES)
        text = rng.choice(ASKS).format(
            verb=rng.choice(family.verbs),
            obj=rng.choice(family.objects),
            domain=rng.choice(family.domains),
            qualifier=rng.choice(QUALIFIERS),
        )
        if len(seen) >= len(FAMILIES) * 40:  # past the natural variety: add a distinguishing detail
            text += f" ({rng.choice(ARCHITECTURES)} or similar, {rng.randint(1, 999)} items a day)"
        seen[" ".join(text.split())] = None
    return list(seen)
