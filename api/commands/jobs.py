"""``mlrepo worker`` and ``mlrepo run``: the arq worker, and running a listing from the command line.

``worker`` consumes the queue of its resource class (``--resource-class``, default cpu: also publishing)
from ``MLREPO_REDIS_URL``. ``run`` submits like ``Mutation.runJob`` (same service, same checks) as the
account of ``--token``, with records from ``--input FILE.jsonl`` (one JSON value per line), ``--record``
or ``--dataset`` (a dataset listing: scored for inference, trained on for training); ``--pipeline ID``
runs one of your pipelines instead of a listing (``--task training`` trains it, like
``Mutation.trainPipeline``). With Redis the job goes to a worker, otherwise it runs in this process.
It waits for the outcome and prints the job as JSON, its per-record ``outputs`` included; exit 1 when the
job did not succeed.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import typer

from api.commands import (
    EXIT_FAILURE,
    fail,
    open_catalog,
    operator_log_level,
    resources_given,
    run_async,
    settings_of,
)
from catalog.enums import JobStatus
from executor.allocation import CPU_CLASS, GPU_CLASS
from executor.contract import reject_constant
from executor.job_outputs import iter_lines
from infra.artifacts import ArtifactStore
from infra.errors import BadInput


def _records(input_file: Path | None, record: list[str]) -> list[Any]:
    values: list[Any] = []
    try:
        lines = input_file.read_text(encoding="utf-8-sig").splitlines() if input_file else []
    except UnicodeDecodeError as exc:
        raise BadInput(f"{input_file}: not UTF-8 text (byte {exc.start}); expected JSON lines") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                values.append(json.loads(line, parse_constant=reject_constant))
            except ValueError as exc:
                raise BadInput(f"{input_file}:{number}: not JSON: {exc}") from None
    for text in record:
        try:
            values.append(json.loads(text, parse_constant=reject_constant))
        except ValueError:
            values.append(text)  # a bare string is the common case: --record "great movie"
    return values


def print_job(job: dict[str, Any], store: ArtifactStore) -> None:
    """The job as one JSON object, its per-record ``outputs`` included: written one output at a time
    from the stored file, so printing a job of a million records does not hold them all."""
    head = json.dumps(job, indent=2, default=str, ensure_ascii=False)
    out = sys.stdout
    out.write(head[:-2] + ',\n  "outputs": [')
    digest = job.get("outputs_digest")
    for index, line in enumerate(iter_lines(store, digest) if digest else ()):
        record = json.dumps(json.loads(line), ensure_ascii=False)
        out.write(("," if index else "") + "\n    " + record)
    out.write(("\n  ]" if digest and job.get("outputs_count") else "]") + "\n}\n")


def register(app: typer.Typer) -> None:
    @app.command()
    def worker(
        ctx: typer.Context,
        resource_class: str = typer.Option(
            None,
            "--resource-class",
            help="cpu (default; also publishing) or gpu; env MLREPO_WORKER_RESOURCE_CLASS.",
        ),
        burst: bool = typer.Option(False, "--burst", help="Exit once the queue is empty."),
        check: bool = typer.Option(
            False,
            "--check",
            help="Start no worker: exit 0 if this host's worker of the queue recorded its health in Redis "
            "in the last 31 s, else 1 (a container healthcheck).",
        ),
    ) -> None:
        """Run the arq worker for jobs (and publishing) from MLREPO_REDIS_URL. It logs its start, each job
        and publication claimed and finished, and Redis or the database lost and back (-q: only
        problems; -v: arq's and the libraries' lines too)."""
        from executor.worker import NEEDS_REDIS, OPERATOR_LOGGERS, run_worker, worker_health

        settings = settings_of(ctx)
        if resource_class:
            if resource_class not in (CPU_CLASS, GPU_CLASS):  # no queue of another name is ever fed
                fail(f"--resource-class must be {CPU_CLASS} or {GPU_CLASS}; got {resource_class!r}")
            settings = settings.model_copy(update={"worker_resource_class": resource_class})
        if not settings.redis_url:
            fail(NEEDS_REDIS, EXIT_FAILURE)
        if check:
            typer.echo(f"worker alive: {run_async(worker_health(settings))}")
            return
        for name in OPERATOR_LOGGERS:
            logging.getLogger(name).setLevel(operator_log_level(ctx))
        run_worker(settings, burst=burst)

    @app.command()
    def run(
        ctx: typer.Context,
        listing_id: str | None = typer.Argument(None, help="The listing to run (or give --pipeline)."),
        pipeline: str | None = typer.Option(None, "--pipeline", help="Run (or train) one of your pipelines."),
        task: str = typer.Option("inference", "--task", help="inference | training"),
        input_file: Path | None = typer.Option(
            None, "--input", exists=True, dir_okay=False, help="JSON lines."
        ),
        record: list[str] = typer.Option(
            [], "--record", help="One input (JSON, or a plain string); repeatable."
        ),
        dataset: str | None = typer.Option(None, "--dataset", help="Training data: a dataset listing id."),
        cpu: float | None = typer.Option(
            None, "--cpu", help="Cores (within your quota; default: the listing's suggestion)."
        ),
        memory_mb: int | None = typer.Option(
            None, "--memory-mb", help="MiB, at least 64 (within your quota; default: the listing's)."
        ),
        gpu: int | None = typer.Option(None, "--gpu", help="GPUs (within your quota; 0 runs on CPU)."),
        token: str | None = typer.Option(None, "--token", envvar="MLREPO_TOKEN", help="Your API token."),
    ) -> None:
        """Run a listing or a pipeline (inference or training) in sandboxed copies and print the job."""
        if (listing_id is None) == (pipeline is None):
            fail("give a LISTING_ID or --pipeline ID (one of them)")
        if not token:
            fail("give --token (or MLREPO_TOKEN) of your account [UNAUTHENTICATED]")
        settings = settings_of(ctx)

        async def go() -> dict[str, Any]:
            from executor.events import job_events_for
            from executor.job_queues import ArqJobQueue
            from executor.jobs import JobService

            async with open_catalog(settings, with_index=False) as catalog:
                actor = await catalog.accounts.authenticate(token)
                queue = ArqJobQueue(settings.redis_url) if settings.redis_url else None
                service = JobService(
                    settings, catalog, events=job_events_for(settings.redis_url), queue=queue
                )
                try:
                    resources = resources_given(cpu, memory_mb, gpu)
                    submitted = await service.submit(
                        actor,
                        listing_id,
                        task,
                        records=_records(input_file, record) or None,
                        resources=resources or None,
                        dataset_listing_id=dataset,
                        pipeline_id=pipeline,
                    )
                    final = submitted
                    async for final in service.watch(actor, submitted.id):  # noqa: B007 - the last is the outcome
                        pass
                    return dict(final.__dict__)
                finally:
                    await service.queue.close()
                    await service.events.close()

        job = run_async(go())
        print_job(job, ArtifactStore.from_settings(settings))
        if job["status"] != JobStatus.SUCCEEDED:
            raise typer.Exit(EXIT_FAILURE)
