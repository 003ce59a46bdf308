"""Which Docker engine mlrepo talks to, decided in one place for publishing (image builds) and the executor
(job containers), so both always reach the same engine.

``Settings.docker_host`` (``MLREPO_DOCKER_HOST``) wins; then the standard ``DOCKER_HOST``; then the engine
``scripts/start-dockerd.sh`` starts — never a system dockerd at /var/run/docker.sock unless configured,
since that one may share the host with unrelated containers.
"""

from __future__ import annotations

import os

import docker

DEFAULT_DOCKER_HOST = "unix:///run/mlrepo-docker.sock"


def docker_base_url(docker_host: str | None) -> str:
    return docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def docker_client(docker_host: str | None, timeout: int) -> docker.DockerClient:
    """A client of the engine ``docker_base_url`` names (connects lazily: creating it does not ping)."""
    return docker.DockerClient(base_url=docker_base_url(docker_host), timeout=timeout)
