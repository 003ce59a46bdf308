"""``docker-compose.yml`` checked without Docker (no Docker Hub on the build machines): what the stack
needs to work at all, read from the file itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
DOCKER_SOCKET = "/var/run/docker.sock"


def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def bind_sources(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> what is mounted there (a host path or a named volume)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        mounts[target] = source
    return mounts


def test_a_worker_on_the_hosts_engine_keeps_its_data_dir_at_the_same_path_on_the_host() -> None:
    """Job containers are created by the host's Docker engine (through the mounted socket), so the host
    path of a job's bind mount (training data under ``data_dir/job-staging``) must be the path the worker
    sees; a named volume or another host path gives the job an empty directory instead of its data."""
    workers = {n: s for n, s in services().items() if DOCKER_SOCKET in bind_sources(s).values()}
    assert workers, "no service drives the host's engine"
    for name, service in workers.items():
        data_dir = service["environment"]["MLREPO_DATA_DIR"]
        assert bind_sources(service).get(data_dir) == data_dir, name


def test_every_mlrepo_process_shares_one_data_dir() -> None:
    """The api stores uploaded artifacts that the workers package and run: one data directory for all."""
    mounted = {
        name: bind_sources(service).get(service["environment"]["MLREPO_DATA_DIR"])
        for name, service in services().items()
        if "MLREPO_DATA_DIR" in service.get("environment", {})
    }
    assert {"api", "worker", "gpu-worker"} <= set(mounted)
    assert len(set(mounted.values())) == 1 and None not in mounted.values(), mounted
