"""GraphQL search latency at catalog scale, against a real ``mlrepo serve`` (uvicorn) over HTTP.

    python -m benchmarks.search_latency [--sizes 1000,10000,100000] [--queries 200] [--root var/bench]

For each size it builds (once; cached under ``--root``) a data dir holding that many synthetic listings
(``benchmarks.synthetic_catalog``: realistic names and descriptions, imported through the real importer,
so the embeddings are real MiniLM vectors — ~4-5 min of CPU for 100k on 2 cores). Then, in one run:

1. ``mlrepo serve`` in a subprocess, measured once ``/healthz`` says it serves and any HNSW build has
   finished; GraphQL ``search`` p50/p95 over HTTP with unique request texts (the query-embedding cache
   never hits), and the server's peak RSS (VmHWM);
2. where each of those searches spent its time, as the server itself timed it (its ``Server-Timing``
   header, ``infra.timing``): index sync, query encode (the wait for the model thread, word distances
   included), keyword candidates, vector candidates (the HNSW graph once built), the candidates'
   projections, ranking (explanations for the page only), hydration (view cache, else the database),
   the rest of the GraphQL view, and the transport outside it. Timed inside the serving process because
   a re-enactment elsewhere measures another machine state: the encode alone runs ~1.3x slower in the
   server than back to back, and the work after the model's forward pass slower again;
3. encode-only p50 of the same texts in this process (the model's encode alone: no word distances),
   alternating with the HTTP searches in blocks of ``ALTERNATE_BLOCK``, so both see the same machine load.
   These encodes run back to back, which flatters them (CPU caches and frequency of this VM, not our
   code), so the report also shows the ratio against the encode as the server saw it, and against the
   same encodes each run after reading ``SWEEP_MB`` of memory (cold caches, as in a server);
4. each block's requests sent again: the server now has their query vectors cached, so this p50 is a
   search without the model, what the rest of the stack costs.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from api.app import GRAPHQL_STAGE
from benchmarks.synthetic_catalog import queries, write_listings
from catalog.search_service import SEARCH_STAGES
from infra.timing import parse_server_timing

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
# Read before each cold encode: more than the 100k catalog's vectors (100k x 384 float32 = 147 MB), so
# more than any CPU cache.
SWEEP_MB = 160


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


def http_search(client: httpx.Client, text: str) -> tuple[float, dict[str, float]]:
    """Seconds one GraphQL search took as the client saw it, and the server's own stage timings (ms, from
    its ``Server-Timing`` header: ``infra.timing``)."""
    started = time.perf_counter()
    response = client.post("/graphql", json={"query": GRAPHQL_SEARCH, "variables": {"input": {"text": text}}})
    elapsed = time.perf_counter() - started
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise SystemExit(f"search failed: {response.status_code} {body}")
    return elapsed, parse_server_timing(response.headers.get("server-timing", ""))


def fresh_encoder():
    """An encoder of its own, warmed up, that caches nothing (both encode series below read the same
    texts): the encode-only side of the ratio."""
    from search.embeddings import Encoder

    encoder = Encoder(cache_size=0)
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


def encode_cold(encoder, texts: list[str], sweep: np.ndarray) -> list[float]:
    """Encoding alone, each after reading ``sweep`` (``SWEEP_MB``): the model's weights are then out of the
    CPU caches, as they are in a server whose search in between went through the index. Measured because
    the back-to-back figure flatters the encode by ~1.4x on this VM (6.1 vs 8.6 ms in one run), which no
    server can see; the issue's ratio stays against the back-to-back encode."""
    timings = []
    for text in texts:
        float(sweep.sum())  # single-threaded: no BLAS threads left spinning against the model's
        started = time.perf_counter()
        encoder.encode_query(text)
        timings.append(time.perf_counter() - started)
    return timings


# ---------------------------------------------------------------------------- run


def server_breakdown(timings: list[dict[str, float]], http: list[float]) -> dict[str, dict[str, float]]:
    """p50/p95 per stage as the server timed it, plus what no stage covers: ``graphql_other`` (parsing,
    execution, JSON: the view's time outside the search stages) and ``transport`` (the client's time
    outside the view: HTTP, uvicorn, the socket)."""
    named = {name for timing in timings for name in timing} - {GRAPHQL_STAGE}
    order = {name: position for position, name in enumerate(SEARCH_STAGES)}
    stages = sorted(named, key=lambda name: (order.get(name, len(order)), name))
    per_stage: dict[str, list[float]] = {name: [] for name in (*stages, "graphql_other", "transport")}
    for timing, seconds in zip(timings, http, strict=True):
        for name in stages:
            per_stage[name].append(timing.get(name, 0.0) / 1000)
        view = timing.get(GRAPHQL_STAGE, 0.0)
        per_stage["graphql_other"].append((view - sum(timing.get(name, 0.0) for name in stages)) / 1000)
        per_stage["transport"].append(seconds - view / 1000)
    return {name: summary(values) for name, values in per_stage.items()}


def measure(root: Path, size: int, count: int) -> dict:
    data_dir = ensure_catalog(root, size)
    texts = queries(count + WARMUP, seed=size)
    warmup, measured = texts[:WARMUP], texts[WARMUP:]
    encoder = fresh_encoder()
    http: list[float] = []
    timings: list[dict[str, float]] = []
    cached: list[float] = []
    encode: list[float] = []
    cold: list[float] = []
    sweep = np.ones(SWEEP_MB * 2**20 // 4, dtype=np.float32)
    with served(data_dir) as (base, process, startup_s), httpx.Client(base_url=base, timeout=30) as client:
        for text in warmup:
            http_search(client, text + " warmup")
        for start in range(0, len(measured), ALTERNATE_BLOCK):
            block = measured[start : start + ALTERNATE_BLOCK]
            for text in block:
                seconds, timing = http_search(client, text)
                http.append(seconds)
                timings.append(timing)
            encode += encode_only(encoder, block)
            cold += encode_cold(encoder, block, sweep)
            cached += [http_search(client, text)[0] for text in block]  # the server has their vectors now
        rss_mb = peak_rss_mb(process.pid)
    result = {
        "listings": size,
        "queries": count,
        "startup_s": round(startup_s, 1),
        "graphql_http": summary(http),
        "graphql_http_query_cached": summary(cached),
        "encode_only": summary(encode),
        "encode_only_cold_caches": summary(cold),
        "server_breakdown": server_breakdown(timings, http),
        "serve_peak_rss_mb": round(rss_mb, 1),
    }
    result["ratio_p50"] = result["graphql_http"]["p50"] / result["encode_only"]["p50"]
    result["ratio_p50_cold_encode"] = result["graphql_http"]["p50"] / result["encode_only_cold_caches"]["p50"]
    return result


def report(result: dict) -> None:
    size = result["listings"]
    http, cached, encode = result["graphql_http"], result["graphql_http_query_cached"], result["encode_only"]
    breakdown = result["server_breakdown"]
    queries_run, startup = result["queries"], result["startup_s"]
    print(f"\n=== {size:,} listings, {queries_run} unique queries (serve ready in {startup} s)")
    print(f"  GraphQL search over HTTP   p50 {http['p50']:7.2f} ms   p95 {http['p95']:7.2f} ms")
    print(f"  the same, vector cached    p50 {cached['p50']:7.2f} ms   p95 {cached['p95']:7.2f} ms")
    print(f"  query encode only          p50 {encode['p50']:7.2f} ms   p95 {encode['p95']:7.2f} ms")
    print(f"  ratio search/encode (p50)  {result['ratio_p50']:.2f}x   (target <= 2x; issue 6: 1.5x)")
    cold = result["encode_only_cold_caches"]
    print(
        f"  encode only, cold caches   p50 {cold['p50']:7.2f} ms   p95 {cold['p95']:7.2f} ms"
        f"   (search/this {result['ratio_p50_cold_encode']:.2f}x)"
    )
    served = breakdown["encode"]["p50"]
    print(
        f"  encode inside the server   p50 {served:7.2f} ms   ({served / encode['p50']:.2f}x the same encodes"
        f" back to back; search/this {http['p50'] / served:.2f}x)"
    )
    print("  where a search's time goes in the server (Server-Timing), p50 ms:")
    for stage, values in breakdown.items():
        print(f"    {stage:<14} {values['p50']:7.2f}   (p95 {values['p95']:.2f})")
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
