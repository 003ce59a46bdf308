"""GraphQL search latency at catalog scale, against a real ``mlrepo serve`` (uvicorn) over HTTP.

    python -m benchmarks.search_latency [--sizes 1000,10000,100000] [--queries 200] [--root var/bench]

For each size it builds (once; cached under ``--root``) a data dir holding that many synthetic listings
(``benchmarks.synthetic_catalog``: realistic names and descriptions, imported through the real importer,
so the embeddings are real MiniLM vectors — ~4-5 min of CPU for 100k on 2 cores). Then, in one run:

1. in-process breakdown over the same kind of requests, each stage exactly as the search service runs
   it: query encode (with the word distances the keyword query is weighted by: one more tokenization),
   keyword candidates (after the encode, as the service runs them), vector candidates (the HNSW graph
   once built: the run waits for it), reading the candidates' projections, fusion/ranking (explanations
   for the page only), hydration (view cache, else the database), scheduling the unmet-demand log write
   (written in the background), and the whole catalog search service call;
2. ``mlrepo serve`` in a subprocess, measured once ``/healthz`` says it serves and any HNSW build has
   finished; GraphQL ``search`` p50/p95 over HTTP with unique request texts (the query-embedding cache
   never hits), and the server's peak RSS (VmHWM);
3. encode-only p50 of the same texts in this process (the model's encode alone: no word distances),
   alternating with the HTTP searches in blocks of ``ALTERNATE_BLOCK``, so both see the same machine load.
   These encodes run back to back, which flatters them: the breakdown's encode stage, timed between
   searches, is ~1.4x slower on this machine (a 8 ms idle gap alone costs as much: CPU caches and
   frequency, not our code), so the report shows the ratio against both.

Prints a table per size, ``search p50 / encode p50`` (targets: at most 2x — issue 6 asks 1.5x — and RSS
under 1.5 GB at 100k) and one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.synthetic_catalog import queries, write_listings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GRAPHQL_SEARCH = """query($input: SearchInput!) {
  search(input: $input) { totalCount searchId results { score listing { id name kind category }
    explanation { summary } } } }"""
WARMUP = 15
# Searches over HTTP and encode-only calls alternate in blocks of this many, so that both sides of the ratio
# see the same machine: this one's speed drifts by up to 2x within minutes.
ALTERNATE_BLOCK = 20
READY_MARK = "ready"
STARTUP_TIMEOUT_S = 900


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "mean": statistics.fmean(ms)}


def rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def settings_for(data_dir: Path):
    from infra.settings import Settings

    return Settings(data_dir=data_dir, database_url=None, redis_url=None)


# ---------------------------------------------------------------------------- data (cached)


async def _import(data_dir: Path, source: Path) -> str:
    from catalog.app import CatalogApp
    from infra.migrate import upgrade_async

    settings = settings_for(data_dir)
    await upgrade_async(settings)
    async with await CatalogApp.open(settings, with_index=False) as catalog:
        report = await catalog.importer.import_file(source, batch_size=512)
    if report.errors:
        raise SystemExit(f"synthetic data did not import cleanly: {report.errors[:3]}")
    return report.summary()


def ensure_catalog(root: Path, size: int) -> Path:
    """The data dir with ``size`` listings, built once and reused (marked ready only when complete)."""
    data_dir = root / f"n{size}"
    if (data_dir / READY_MARK).exists():
        return data_dir
    if data_dir.exists():
        import shutil

        shutil.rmtree(data_dir)  # an interrupted build: start over
    data_dir.mkdir(parents=True)
    source = write_listings(root / f"listings-{size}.jsonl", size)
    print(f"[{size}] importing {size} synthetic listings (cached under {data_dir})...", flush=True)
    started = time.perf_counter()
    print(
        f"[{size}] {asyncio.run(_import(data_dir, source))}; {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    (data_dir / READY_MARK).write_text("ok\n")
    return data_dir


# ---------------------------------------------------------------------------- in-process breakdown


def _timed(fn: Callable[[], object], into: list[float]) -> object:
    started = time.perf_counter()
    result = fn()
    into.append(time.perf_counter() - started)
    return result


async def _breakdown(data_dir: Path, texts: list[str]) -> dict[str, dict[str, float]]:
    """Each stage of a search, timed separately, through the same components the service uses."""
    from catalog.actors import ANONYMOUS
    from catalog.app import CatalogApp
    from catalog.search_service import SearchRequest, build_filters

    stages: dict[str, list[float]] = {
        k: [] for k in ("encode", "keyword", "vector", "projections", "fusion", "hydrate", "demand_log")
    }
    service: list[float] = []
    async with await CatalogApp.open(settings_for(data_dir)) as catalog:
        backend, ranker = catalog.index.backend, catalog.search.ranker
        assert backend is not None
        backend.wait_for_ann()  # the steady state: past the threshold the graph answers vector search
        filters = build_filters(SearchRequest(text=""), ANONYMOUS, None)
        depth = ranker.weights.candidate_depth
        for text in texts[:WARMUP]:
            await catalog.search.search(ANONYMOUS, SearchRequest(text=text + " warmup"))
        half = len(texts) // 2
        for text in texts[:half]:
            encoding = _timed(  # with the word distances the keyword query is weighted by
                lambda t=text: catalog.encoder.submit_query(t, with_words=True).result(), stages["encode"]
            )
            vector, word_weights = encoding.vector, ranker.keyword_word_weights(encoding.word_distances or {})
            keyword = _timed(
                lambda t=text, w=word_weights: backend.keyword(t, filters, depth, w), stages["keyword"]
            )
            vectors = _timed(lambda v=vector: backend.vector(v, filters, depth), stages["vector"])
            ids = list(dict.fromkeys([h.id for h in keyword] + [h.id for h in vectors]))
            found = _timed(lambda i=ids: backend.get(i, with_embeddings=False), stages["projections"])
            _, ranked = _timed(
                lambda t=text, v=vector, k=keyword, vs=vectors, p=found: ranker.rank(
                    t, v, k, vs, p, limit=10
                ),
                stages["fusion"],
            )
            top = [r.id for r in ranked]
            started = time.perf_counter()
            await catalog.search._hydrate(ANONYMOUS, top)
            stages["hydrate"].append(time.perf_counter() - started)
            started = time.perf_counter()  # every first page of a text search is logged (unmet demand)
            catalog.demand.log_search_soon(
                text, result_count=len(found), account_id=None, category=None, facets={}, top_ids=top,
                embedding=vector,
            )  # fmt: skip
            stages["demand_log"].append(time.perf_counter() - started)
            await catalog.demand.flush()  # written in the background; not part of the next stage's time
        for text in texts[half:]:
            started = time.perf_counter()
            await catalog.search.search(ANONYMOUS, SearchRequest(text=text))
            service.append(time.perf_counter() - started)
    result = {name: summary(values) for name, values in stages.items()}
    result["service"] = summary(service)
    return result


# ---------------------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def served(data_dir: Path) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """``mlrepo serve`` on a free port; yields (base url, process, seconds until /healthz answered and
    any HNSW build had finished)."""
    port = _free_port()
    command = [sys.executable, "-c", "from api.cli import app; app()", "--data-dir", str(data_dir),
               "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log = (data_dir / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"mlrepo serve exited with {process.returncode}; see {data_dir / 'serve.log'}"
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > STARTUP_TIMEOUT_S:
                raise SystemExit("mlrepo serve did not become healthy in time")
            time.sleep(0.2)
        while httpx.get(f"{base}/healthz", timeout=5).json().get("vector_index") == "building":
            time.sleep(0.5)  # the steady state: vector search answered by the HNSW graph
        yield base, process, time.perf_counter() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def http_search(client: httpx.Client, text: str) -> float:
    started = time.perf_counter()
    response = client.post("/graphql", json={"query": GRAPHQL_SEARCH, "variables": {"input": {"text": text}}})
    elapsed = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise SystemExit(f"search failed: {response.status_code} {body}")
    return elapsed


def fresh_encoder():
    """An encoder of its own (nothing cached), warmed up: the encode-only side of the ratio."""
    from search.embeddings import Encoder

    encoder = Encoder()
    encoder.encode_query("warm the model up")
    return encoder


def encode_only(encoder, texts: list[str]) -> list[float]:
    """Encoding alone, back to back, the same texts the server answered."""
    timings = []
    for text in texts:
        started = time.perf_counter()
        encoder.encode_query(text)
        timings.append(time.perf_counter() - started)
    return timings


# ---------------------------------------------------------------------------- run


def measure(root: Path, size: int, count: int) -> dict:
    data_dir = ensure_catalog(root, size)
    texts = queries(count * 3 + WARMUP, seed=size)
    breakdown_texts, http_texts = texts[:count], texts[count:]
    breakdown = asyncio.run(_breakdown(data_dir, breakdown_texts))
    encoder = fresh_encoder()
    measured = http_texts[WARMUP : WARMUP + count]
    http: list[float] = []
    encode: list[float] = []
    with served(data_dir) as (base, process, startup_s), httpx.Client(base_url=base, timeout=30) as client:
        for text in http_texts[:WARMUP]:
            http_search(client, text + " warmup")
        for start in range(0, len(measured), ALTERNATE_BLOCK):
            block = measured[start : start + ALTERNATE_BLOCK]
            http += [http_search(client, text) for text in block]
            encode += encode_only(encoder, block)
        rss_mb = peak_rss_mb(process.pid)
    result = {
        "listings": size,
        "queries": count,
        "startup_s": round(startup_s, 1),
        "graphql_http": summary(http),
        "encode_only": summary(encode),
        "breakdown": breakdown,
        "serve_peak_rss_mb": round(rss_mb, 1),
    }
    result["ratio_p50"] = result["graphql_http"]["p50"] / result["encode_only"]["p50"]
    result["graphql_overhead_p50_ms"] = result["graphql_http"]["p50"] - breakdown["service"]["p50"]
    return result


def report(result: dict) -> None:
    size = result["listings"]
    http, encode = result["graphql_http"], result["encode_only"]
    queries_run, startup = result["queries"], result["startup_s"]
    print(f"\n=== {size:,} listings, {queries_run} unique queries (serve ready in {startup} s)")
    print(f"  GraphQL search over HTTP   p50 {http['p50']:7.2f} ms   p95 {http['p95']:7.2f} ms")
    print(f"  query encode only          p50 {encode['p50']:7.2f} ms   p95 {encode['p95']:7.2f} ms")
    print(f"  ratio search/encode (p50)  {result['ratio_p50']:.2f}x   (target <= 2x; issue 6: 1.5x)")
    in_app = result["breakdown"]["encode"]["p50"]
    print(
        f"  encode between searches    p50 {in_app:7.2f} ms   (the same encoder, cold: searches run between"
        f" encodes; search/this {http['p50'] / in_app:.2f}x)"
    )
    print("  breakdown (in-process, p50 ms):")
    for stage, values in result["breakdown"].items():
        print(f"    {stage:<10} {values['p50']:7.2f}   (p95 {values['p95']:.2f})")
    print(f"    graphql+http overhead {result['graphql_overhead_p50_ms']:.2f} (HTTP p50 - service p50)")
    print(f"  serve peak RSS {result['serve_peak_rss_mb']:.0f} MB   (target < 1536 MB at 100k)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated catalog sizes")
    parser.add_argument("--queries", type=int, default=200, help="measured requests per size")
    parser.add_argument("--root", type=Path, default=Path("var/bench"), help="where cached catalogs live")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.root.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        result = measure(args.root, size, args.queries)
        report(result)
        results.append(result)
    print(json.dumps({"search_latency": rounded(results)}))


if __name__ == "__main__":
    main()
