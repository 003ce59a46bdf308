"""Publish time per step: a small verified sentiment model as a code package (bubblewrap, and with Docker
containerization + registry push when an engine is up), and as a container image through the registry.

    python -m benchmarks.publishing [--runs N] [--docker-host unix:///run/mlrepo-docker.sock]
                                    [--registry 127.0.0.1:5000]

Prints one JSON line per scenario: median milliseconds per step over N runs, and the total.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.sentiment_package import sentiment_manifest, wait_published, zip_package
from catalog.app import CatalogApp
from catalog.publishing.images import ImageService
from catalog.publishing.service import PublishingService
from executor.publish_sandbox import ExecutorSandbox
from infra.migrate import upgrade_async
from infra.settings import Settings

PREDICT = textwrap.dedent(
    """
    import json, sys
    POSITIVE = {"love", "great", "good"}
    for line in sys.stdin:
        r = json.loads(line)
        label = "positive" if set(str(r["input"]).lower().split()) & POSITIVE else "negative"
        print(json.dumps({"id": r["id"], "output": {"label": label}}), flush=True)
    """
)


def manifest(name: str) -> dict[str, Any]:
    return sentiment_manifest(
        name,
        "Positive or negative sentiment of a review.",
        timeout_s=5,
        tests=[
            {"name": "pos", "input": "I love it", "expected_output": {"label": "positive"}},
            {"name": "neg", "input": "it broke", "expected_output": {"label": "negative"}},
        ],
        verify=True,
    )


def producer_image(images: ImageService, registry: str, name: str) -> str:
    dockerfile = f"FROM {images.base_image}\nCOPY predict.py /srv/predict.py\nWORKDIR /srv\n"
    dockerfile += 'ENTRYPOINT ["python3", "predict.py"]\n'
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for file_name, data in (("Dockerfile", dockerfile.encode()), ("predict.py", PREDICT.encode())):
            info = tarfile.TarInfo(file_name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    image, _ = images.client.images.build(fileobj=buffer, custom_context=True, tag=f"bench/{name}:1", rm=True)
    remote = f"{registry}/{name}"  # under the account's own prefix (``check_own_registry_ref``)
    image.tag(remote, tag="1")
    for event in images.client.images.push(remote, tag="1", stream=True, decode=True):
        if "error" in event:
            raise RuntimeError(event["error"])
    return f"{remote}:1"


async def scenario(
    label: str, settings: Settings, catalog: CatalogApp, runs: int, kind: str
) -> dict[str, Any]:
    service = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
    actor = (await catalog.accounts.create(f"bench-{label}", "producer")).as_actor()
    per_step: dict[str, list[float]] = {}
    totals = []
    for run in range(runs):
        started = time.perf_counter()
        name = f"bench-{label}-{run}"
        if kind == "image":
            ref = producer_image(service.images, f"{settings.registry_url}/{actor.name}", name)
            data = manifest(name)
            del data["entrypoint"]
            pub = await service.submit_image(actor, data, image_ref=ref)
        else:
            pub = await service.submit_package(actor, io.BytesIO(zip_package(manifest(name), PREDICT)))
        pub = await wait_published(service, actor, pub)
        totals.append((time.perf_counter() - started) * 1000)
        for step in pub.steps:
            per_step.setdefault(step.name, []).append(step.duration_ms or 0.0)
    return {
        "scenario": label,
        "runs": runs,
        "median_ms": {k: round(statistics.median(v), 1) for k, v in per_step.items()},
        "total_median_ms": round(statistics.median(totals), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--docker-host", default=None)
    parser.add_argument("--registry", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlrepo-bench-publish-") as tmp:
        base = Settings(data_dir=Path(tmp), redis_url=None)
        await upgrade_async(base)
        catalog = await CatalogApp.open(base)
        try:
            scenarios = [("package-bwrap", base.model_copy(update={"runtime": "bwrap"}), "package")]
            if args.docker_host and args.registry:
                docker = base.model_copy(
                    update={"runtime": "auto", "docker_host": args.docker_host, "registry_url": args.registry}
                )
                scenarios += [
                    ("package-containerized", docker, "package"),
                    ("image-registry", docker, "image"),
                ]
            for label, settings, kind in scenarios:
                print(json.dumps(await scenario(label, settings, catalog, args.runs, kind)), flush=True)
        finally:
            await catalog.close()


if __name__ == "__main__":
    asyncio.run(main())
