"""``docker-compose.yml`` checked without Docker (no Docker Hub on the build machines): what the stack
needs to work at all, read from the file itself."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import Settings
from tests.services import free_port

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


def shell_healthchecks() -> dict[str, str]:
    return {
        name: service["healthcheck"]["test"][1]
        for name, service in services().items()
        if service.get("healthcheck", {}).get("test", [None])[0] == "CMD-SHELL"
    }


def test_shell_healthchecks_report_the_status_of_their_probe() -> None:
    """OpenSearch's probe URL had an unquoted ``&`` (``...?wait_for_status=yellow&timeout=5s``): the shell
    ran curl in the background and returned the status of ``timeout=5s``, an assignment, so the service
    was healthy at once and the api started against an OpenSearch not yet up. An unquoted control
    operator in a CMD-SHELL check makes its exit status something other than the probe's."""
    checks = shell_healthchecks()
    assert "opensearch" in checks
    for name, command in checks.items():
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        operators = [token for token in lexer if token in {"&", ";", "|", "&&", "||"}]
        assert not operators, f"{name}: {command!r} has unquoted {operators}"


def test_the_stacks_settings_are_settings_mlrepo_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings ignore unknown variables, so a misspelt MLREPO_ name in the file would be dropped
    silently; and each service's values must pass the startup checks."""
    for name, service in services().items():
        environment = service.get("environment", {})
        variables = {key: str(value) for key, value in environment.items() if key.startswith("MLREPO_")}
        if not variables:
            continue
        fields = {key.removeprefix("MLREPO_").lower() for key in variables}
        unknown = fields - set(Settings.model_fields)
        assert not unknown, f"{name}: {unknown}"
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        Settings()
        for key in variables:
            monkeypatch.delenv(key)


def test_every_worker_has_a_healthcheck_that_fails_without_a_live_worker(redis_url: str) -> None:
    """The workers had no healthcheck: one that had died inside its container, hung, or lost Redis for
    good showed as running. Each worker's check is ``mlrepo worker --check`` with the worker's own
    arguments (so it asks about the queue that worker takes), and it fails when no worker of that queue
    lives on the host, or Redis cannot be reached (a live worker passes: tests/cli/test_worker_cli.py)."""
    workers = {name: s for name, s in services().items() if s.get("command", [])[:2] == ["mlrepo", "worker"]}
    assert {"worker", "gpu-worker"} <= set(workers)
    mlrepo = str(Path(sys.executable).parent / "mlrepo")
    for name, service in workers.items():
        test = service.get("healthcheck", {}).get("test")
        assert test == ["CMD", *service["command"], "--check"], f"{name}: {test}"
        for redis, why in (
            (redis_url, "no worker of queue"),
            (f"redis://127.0.0.1:{free_port()}/0", "Redis"),
        ):
            env = {**os.environ, "MLREPO_REDIS_URL": redis}
            probe = subprocess.run([mlrepo, *test[2:]], env=env, capture_output=True, text=True, timeout=60)
            assert probe.returncode == 1 and why in probe.stderr, (name, probe)
