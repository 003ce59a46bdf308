"""Recorded steps of a publication: status, timing and error log of each, persisted as they happen.

Why persisted at every transition: ``Query.publication(id)`` is how a producer watches a publish job
that runs in another process (the arq worker), and a worker that dies mid-step leaves the step RUNNING
in the database (recovery finds such a publication by its heartbeat, which stopped: ``infra.heartbeat``).
Each write is the run's only while its claim holds the publication (``infra.fencing``): a run that
recovery took over records no more steps over the next run's. Each is retried while the database is
unreachable (``infra.db.retry_while_unreachable``), for ``job_final_write_retry_s``: a restart or a
failover in the middle of a publication delays it rather than failing it; a step that cannot reach the
database for longer leaves the publication RUNNING, to be run again by recovery (not the producer's fault).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select

from infra.db import Database, is_unreachable, retry_while_unreachable
from infra.errors import MlrepoError
from infra.fencing import Claim, Superseded
from infra.tables import Publication

logger = logging.getLogger("mlrepo.publishing")

MAX_LOG_LINES = 200
MAX_LOG_LINE = 2000


class StepName(StrEnum):
    PACKAGE = "package"
    TEST = "test"
    VERIFY = "verify"
    PUBLISH = "publish"
    LIST = "list"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class PublicationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PUBLISHED = "published"
    FAILED = "failed"


STEP_ORDER = tuple(StepName)


def initial_steps() -> list[dict[str, Any]]:
    return [
        {"name": s.value, "status": StepStatus.PENDING.value, "log": [], "error": None, "error_code": None}
        for s in STEP_ORDER
    ]


class Skip(Exception):
    """Raised by a step that does not apply (e.g. verify when verification was not requested)."""


class StepFailed(Exception):
    def __init__(self, step: str, error: MlrepoError) -> None:
        super().__init__(f"{step}: {error.message}")
        self.step = step
        self.error = error


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StepRecorder:
    """Runs one step at a time and writes its record into ``publications.steps``, while ``claim`` holds
    the publication (``Superseded`` when it does not), trying each write again while the database is
    unreachable, for up to ``retry_s``."""

    def __init__(self, db: Database, claim: Claim, retry_s: float) -> None:
        self.db = db
        self.claim = claim
        self.retry_s = retry_s
        self.publication_id = claim.row_id
        self.timings: dict[str, float] = {}

    async def _update(self, name: str, **changes: Any) -> None:
        """Set ``changes`` on step ``name``; safe to repeat (it sets, never adds)."""
        await retry_while_unreachable(
            lambda: self._write(name, changes),
            self.retry_s,
            f"publication {self.publication_id}: recording step {name}",
        )

    async def _write(self, name: str, changes: dict[str, Any]) -> None:
        async with self.db.session() as session:
            stored = await session.scalar(
                select(Publication.steps).where(Publication.id == self.publication_id)
            )
            steps = [dict(s) for s in (stored or initial_steps())]
            for step in steps:
                if step["name"] == name:
                    step.update(changes)
            await self.claim.write(session, steps=steps)

    async def run(self, name: StepName, body: Callable[[Callable[[str], None]], Awaitable[None]]) -> None:
        """Run ``body(log)``; MlrepoError fails the step with its message, anything else as internal."""
        lines: list[str] = []

        def log(line: str) -> None:
            if len(lines) < MAX_LOG_LINES:
                lines.append(line[:MAX_LOG_LINE])

        started = time.perf_counter()
        await self._update(name, status=StepStatus.RUNNING.value, started_at=_now())
        try:
            await body(log)
        except Skip as reason:
            await self._finish(name, started, lines, StepStatus.SKIPPED, log_extra=str(reason))
            return
        except Superseded:
            raise  # the run stops: its step is the next run's to record
        except MlrepoError as exc:
            await self._finish(name, started, lines, StepStatus.FAILED, error=exc)
            raise StepFailed(name, exc) from exc
        except Exception as exc:
            if is_unreachable(exc):  # past the step's own retries: the database's fault, not the upload's
                logger.warning(
                    "publication %s: step %s found the database unreachable", self.publication_id, name
                )
                raise  # RUNNING, its heartbeat stopped: recovery runs it again
            logger.exception("publication %s: step %s crashed", self.publication_id, name)
            # Its text is the server's (host paths, engine addresses): the log above has it in full.
            error = MlrepoError(
                f"internal error in step {name}; the operator's log has it under publication "
                f"{self.publication_id}"
            )
            await self._finish(name, started, lines, StepStatus.FAILED, error=error)
            raise StepFailed(name, error) from exc
        await self._finish(name, started, lines, StepStatus.SUCCEEDED)

    async def _finish(
        self,
        name: str,
        started: float,
        lines: list[str],
        status: StepStatus,
        error: MlrepoError | None = None,
        log_extra: str | None = None,
    ) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 1)
        self.timings[name] = duration_ms
        if log_extra:
            lines.append(log_extra)
        await self._update(
            name,
            status=status.value,
            finished_at=_now(),
            duration_ms=duration_ms,
            log=lines,
            error=error.message if error else None,
            error_code=error.code if error else None,
        )
