"""``mlrepo publish`` and ``mlrepo verify``: publishing and re-verification from the command line.

``publish`` submits like ``Mutation.publishPackage/publishImage/publishDataset/publishNotebook`` does
(same service, same checks) as the account of ``--token``; with ``MLREPO_REDIS_URL`` set the job goes
to the arq worker, otherwise it runs in this process. It waits for the outcome unless ``--no-wait``
(which needs Redis: a job of this process ends with it) and exits 1 when the publication fails.
``verify --all`` re-runs every verified listing's unit tests and suspends those whose behaviour changed
(exit 1 when any was suspended or could not be checked).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from api.commands import (
    EXIT_FAILURE,
    fail,
    open_catalog,
    print_json,
    resources_given,
    run_async,
    settings_of,
)
from catalog.publishing.service import (
    ArqQueue,
    InProcessQueue,
    PublicationView,
    PublishingService,
    expected_upload_digest,
)
from executor.publish_sandbox import ExecutorSandbox
from infra.errors import Unauthenticated

POLL_S = 0.5


def _requirements(cpu: float | None, memory_mb: int | None, gpu: int | None, **rest: Any) -> dict[str, Any]:
    resources = resources_given(cpu, memory_mb, gpu)
    out = {k: v for k, v in rest.items() if v is not None}
    if resources:
        out["resources"] = resources
    return out


def _summary(view: PublicationView) -> dict[str, Any]:
    data = asdict(view)
    data["steps"] = [
        {k: s[k] for k in ("name", "status", "duration_ms", "error", "error_code")} | {"log": s["log"][-5:]}
        for s in data["steps"]
    ]
    return data


def register(app: typer.Typer) -> None:
    @app.command()
    def publish(
        ctx: typer.Context,
        path: Path | None = typer.Argument(
            None,
            exists=True,
            dir_okay=False,
            help="Code package (zip/tar.gz), dataset file, Jupyter notebook (.ipynb) or docker save tarball.",
        ),
        kind: str | None = typer.Option(
            None,
            "--kind",
            help="package | image | dataset | notebook (default: image with --image, notebook for a .ipynb "
            "file, else package).",
        ),
        manifest: Path | None = typer.Option(
            None,
            "--manifest",
            exists=True,
            help="JSON manifest (images and datasets; packages carry their own; optional for a "
            "notebook, over its metadata.mlrepo).",
        ),
        image: str | None = typer.Option(
            None,
            "--image",
            help="Image pushed to mlrepo's registry under your account's prefix, "
            "HOST:PORT/<account name>/name:tag (kind image).",
        ),
        listing: str | None = typer.Option(
            None, "--listing", help="Publish a new version of this listing id."
        ),
        encrypt: bool | None = typer.Option(
            None,
            "--encrypt/--no-encrypt",
            help="Encrypt at rest (own key); default: the manifest's `encrypt`.",
        ),
        verify: bool | None = typer.Option(
            None,
            "--verify/--no-verify",
            help="Run the unit tests in the sandbox; default: the manifest's `verify`.",
        ),
        timeout: float | None = typer.Option(None, "--timeout", help="Max seconds per scoring call."),
        cpu: float | None = typer.Option(None, "--cpu", help="Suggested cores (over the manifest's)."),
        memory_mb: int | None = typer.Option(
            None, "--memory-mb", help="Suggested MiB, at least 64 (over the manifest's)."
        ),
        gpu: int | None = typer.Option(None, "--gpu", help="Suggested GPUs (over the manifest's)."),
        visibility: str | None = typer.Option(
            None,
            "--visibility",
            help="A new listing's audience: public (default) or private (over the manifest's).",
        ),
        sha256: str | None = typer.Option(None, "--sha256", help="Expected SHA-256 (hex) of the upload."),
        wait: bool = typer.Option(
            True,
            "--wait/--no-wait",
            help="Wait for the outcome (--no-wait: print the queued publication; without Redis the "
            "publication runs in this process, which always waits).",
        ),
        token: str | None = typer.Option(
            None, "--token", envvar="MLREPO_TOKEN", help="The producer's API token."
        ),
    ) -> None:
        """Publish a code package, a container image, a dataset or a notebook, and print the publication."""
        if kind is None:  # a notebook published without --kind was refused as "not a zip, tar or tar.gz"
            if image is not None:
                kind = "image"
            else:
                kind = "notebook" if path is not None and path.suffix.lower() == ".ipynb" else "package"
        if kind not in ("package", "image", "dataset", "notebook"):
            fail("--kind must be package, image, dataset or notebook")
        if kind != "image" and path is None:
            fail(f"give the {kind} file to publish")
        settings = settings_of(ctx)
        requirements = _requirements(
            cpu, memory_mb, gpu, encrypt=encrypt, verify=verify, timeout_s=timeout, visibility=visibility
        )
        manifest_data = _read_manifest(manifest) if manifest else None
        if kind in ("image", "dataset") and manifest_data is None:
            fail(f"--manifest is required for kind {kind}")

        async def run() -> PublicationView:
            # Without the index, like the worker: a running `mlrepo serve` holds it and picks the listing up.
            async with open_catalog(settings, with_index=False) as catalog:
                if not token:
                    raise Unauthenticated("give --token (or MLREPO_TOKEN) of the producer account")
                actor = await catalog.accounts.authenticate(token)
                queue = ArqQueue(settings.redis_url) if settings.redis_url else None
                service = PublishingService(
                    settings, catalog.db, catalog.listings, ExecutorSandbox(settings), queue=queue
                )
                expected = expected_upload_digest(sha256)
                try:
                    view = await _submit(
                        service, actor, kind, path, manifest_data, image, listing, requirements, expected
                    )
                    # Without Redis the job runs in this process: it must not end before the job does.
                    if wait or isinstance(service.queue, InProcessQueue):
                        view = await _wait(service, actor, view)
                finally:
                    if queue is not None:
                        await queue.close()
                return view

        view = run_async(run())
        print_json(_summary(view))
        if view.status == "failed":
            raise typer.Exit(EXIT_FAILURE)

    @app.command("verify")
    def verify_command(
        ctx: typer.Context,
        listing_ids: list[str] = typer.Argument(None, help="Listings to re-verify (or --all)."),
        all_: bool = typer.Option(False, "--all", help="Every verified listing."),
    ) -> None:
        """Re-run published unit tests; listings whose behaviour changed are SUSPENDED."""
        if not all_ and not listing_ids:
            fail("give listing ids or --all")
        settings = settings_of(ctx)

        async def run() -> list[dict[str, Any]]:
            async with open_catalog(settings, with_index=False) as catalog:
                service = PublishingService(settings, catalog.db, catalog.listings, ExecutorSandbox(settings))
                if all_:
                    results = await service.verify_all()
                else:
                    results = [await service.verify_listing(i) for i in listing_ids]
                return [asdict(r) for r in results]

        results = run_async(run())
        print_json(results)
        if any(r["outcome"] in ("suspended", "error") for r in results):
            raise typer.Exit(EXIT_FAILURE)


def _read_manifest(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(f"{path}: not valid JSON: {exc}")


async def _submit(
    service: PublishingService,
    actor: Any,
    kind: str,
    path: Path | None,
    manifest: dict[str, Any] | None,
    image: str | None,
    listing: str | None,
    requirements: dict[str, Any],
    expected: str | None,
) -> PublicationView:
    if kind == "image":
        if path is None:
            return await service.submit_image(
                actor, manifest or {}, image_ref=image, listing_id=listing, requirements=requirements
            )
        with open(path, "rb") as f:
            return await service.submit_image(
                actor, manifest or {}, tarball=f, listing_id=listing, requirements=requirements
            )
    with open(path or "", "rb") as f:
        if kind == "notebook":
            return await service.submit_notebook(
                actor,
                f,
                manifest,
                listing_id=listing,
                requirements=requirements,
                expected_digest=expected,
            )
        if kind == "dataset":
            return await service.submit_dataset(
                actor,
                f,
                manifest or {},
                listing_id=listing,
                requirements=requirements,
                expected_digest=expected,
            )
        return await service.submit_package(
            actor, f, listing_id=listing, requirements=requirements, expected_digest=expected
        )


async def _wait(service: PublishingService, actor: Any, view: PublicationView) -> PublicationView:
    if isinstance(service.queue, InProcessQueue):
        await service.queue.drain()
        return await service.get(actor, view.id)
    while view.status in ("queued", "running"):
        await asyncio.sleep(POLL_S)
        view = await service.get(actor, view.id)
    return view
