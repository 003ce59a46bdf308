"""Jobs: inference (and training) runs as database rows moving QUEUED → RUNNING → a final status.

The row is the truth; the queue carries only the job id (arq on Redis, one queue per resource class, or
an in-process task when there is no Redis); events are notifications for ``Subscription.jobStatus``.

Recovery, because workers die and Redis forgets:
- a RUNNING job proves its worker alive with a heartbeat; ``reconcile`` finds RUNNING jobs whose heartbeat
  is older than ``job_stale_after_s`` and re-queues them (bounded by ``job_max_attempts``, then FAILED
  with the reason), and re-enqueues QUEUED jobs (the arq job id dedupes what Redis still has);
- ``run`` claims a job atomically, so a job re-enqueued twice still runs once at a time; each claim
  counts up ``attempts``, the run's fencing token (``infra.fencing``): a run whose job was re-queued
  while it still ran (it could not beat) writes nothing more once another run holds it, and stops.
Cancellation marks the row CANCELLED; the running worker notices at its next heartbeat or batch and
stops the sandbox.

``JobService`` is assembled here from its parts, one module each, all on ``executor.job_base``'s shared
state: ``job_submission`` (checks and queues a request; ``job_inputs`` checks inputs against schemas),
``job_reads`` (a requester's views, outputs and status stream), ``job_claims`` (QUEUED → RUNNING),
``job_runs`` (the run loop), ``job_inference`` (an inference job's work; training and pipelines are in
``training``, ``pipeline_jobs`` and ``pipeline_training``, whose steps are fed their data by
``training_feed``), ``job_writes`` (what a run writes while it holds the job), ``job_outcomes`` (the
final write), ``job_cancellation`` (cancel, and the heartbeat that stops a run) and ``job_recovery`` (the
reconciler). Views are in ``job_views``, queues in ``job_queues``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from executor.events import JobEvents, LocalJobEvents
from executor.gpus import GpuPool, parse_devices, shared_pool
from executor.job_cancellation import JobCancellation
from executor.job_claims import JobClaims
from executor.job_inference import JobInference
from executor.job_outcomes import JobOutcomes
from executor.job_outputs import StoredOutputs
from executor.job_queues import InProcessJobQueue, JobQueue
from executor.job_reads import JobReads
from executor.job_recovery import JobRecovery
from executor.job_runs import JobRuns
from executor.job_submission import JobSubmission
from executor.job_writes import JobRunWrites
from executor.runtimes import RuntimeSelector
from infra.artifacts import ArtifactStore
from infra.settings import Settings
from infra.tables import UsageEvent

if TYPE_CHECKING:
    from catalog.app import CatalogApp


class JobService(
    JobSubmission,
    JobReads,
    JobRuns,
    JobInference,
    JobRecovery,
    JobOutcomes,
    JobRunWrites,
    JobCancellation,
    JobClaims,
):
    def __init__(
        self,
        settings: Settings,
        catalog: CatalogApp,
        events: JobEvents | None = None,
        queue: JobQueue | None = None,
        selector: RuntimeSelector | None = None,
        gpus: GpuPool | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.db = catalog.db
        self.events = events or LocalJobEvents()
        self.queue: JobQueue = queue or InProcessJobQueue(self.run, retry_deferred_s=settings.job_heartbeat_s)
        self.selector = selector or RuntimeSelector(settings)
        self.gpus = gpus or shared_pool(parse_devices(settings.gpu_devices))
        # Per run (job id, attempt): counted, and referenced, once it finishes.
        self._uses: dict[tuple[str, int], list[UsageEvent]] = {}
        self._outputs: dict[tuple[str, int], StoredOutputs] = {}
        self._artifacts: ArtifactStore | None = None
