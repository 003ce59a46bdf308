"""The embedded backend with real MiniLM embeddings of realistic listings, as the catalog will use it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from search.documents import text_of
from search.embedded import EmbeddedBackend
from search.embeddings import Encoder
from search.types import IndexedListing, SearchFilters

LISTINGS = [
    IndexedListing("sent", "model", "distilbert-sst2-sentiment", "Natural Language Processing",
                   "Predicts whether an English review is positive or negative.",
                   ("Text Classification",), ("sentiment",)),
    IndexedListing("det", "model", "yolo-street-detector", "Computer Vision",
                   "Finds cars, bikes and pedestrians in street images.", ("Object Detection",)),
    IndexedListing("asr", "model", "whisper-tiny-en", "Audio", "Transcribes English speech to text.",
                   ("Automatic Speech Recognition",)),
    IndexedListing("churn", "dataset", "telecom-churn", "Tabular",
                   "Customer records labelled with whether they cancelled their contract.",
                   ("Tabular Classification",)),
]  # fmt: skip


def test_sentiment_request_finds_the_sentiment_model(tmp_path: Path, encoder: Encoder) -> None:
    vectors = encoder.encode_documents([text_of(doc) for doc in LISTINGS])
    docs = [replace(doc, embedding=v) for doc, v in zip(LISTINGS, vectors, strict=True)]
    with EmbeddedBackend(tmp_path / "index", encoder.dim) as backend:
        backend.load(docs)
        text = "classify the sentiment of product reviews"
        assert backend.vector(encoder.encode_query(text), SearchFilters(), 4)[0].id == "sent"
        assert backend.keyword(text, SearchFilters(), 4)[0].id == "sent"
        speech = encoder.encode_query("turn recorded speech into text")
        assert backend.vector(speech, SearchFilters(kinds=("model",)), 1)[0].id == "asr"
