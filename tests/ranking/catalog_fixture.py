"""A small synthetic catalog written for these tests, embedded with the real encoder."""

from __future__ import annotations

from dataclasses import replace

from ranking_support import listing

from search.documents import text_of
from search.embeddings import Encoder
from search.types import IndexedListing

SPEECH = ("Audio", "Automatic Speech Recognition")
DETECTION = ("Computer Vision", "Object Detection")
TRANSLATION = ("Natural Language Processing", "Translation")

_SPECS = [
    ("asr-1", SPEECH, "whisper-small-en", "Transcribes English speech recordings to text.", "audio", "text"),
    ("asr-2", SPEECH, "wav2vec-call-center", "Speech-to-text for telephone audio.", "audio", "text"),
    (
        "det-1",
        DETECTION,
        "yolo-traffic",
        "Finds cars, bikes and pedestrians in street photos with boxes.",
        "image",
        "bounding-boxes",
    ),
    (
        "det-2",
        DETECTION,
        "detr-shelf",
        "Detects products on supermarket shelves in images.",
        "image",
        "bounding-boxes",
    ),
    ("tr-1", TRANSLATION, "opus-en-de", "Translates English sentences into German.", "text", "text"),
    (
        "tr-2",
        TRANSLATION,
        "marian-fr-en",
        "French to English machine translation of documents.",
        "text",
        "text",
    ),
]


def synthetic_catalog(encoder: Encoder) -> dict[str, IndexedListing]:
    docs = [
        listing(i, label[0], label[1], name=name, description=text, input_format=fin, output_format=fout)
        for i, label, name, text, fin, fout in _SPECS
    ]
    vectors = encoder.encode_documents([text_of(d) for d in docs])
    return {d.id: replace(d, embedding=v) for d, v in zip(docs, vectors, strict=True)}
