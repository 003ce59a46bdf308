"""Publishing (image builds) and jobs (containers) reach the same Docker engine, chosen in one place."""

from __future__ import annotations

import pytest

from catalog.publishing.images import ImageService
from executor.runtimes import DockerRuntime, RuntimeSelector
from infra.docker_engine import DEFAULT_DOCKER_HOST, docker_base_url
from infra.settings import Settings


def test_one_rule_picks_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert docker_base_url(None) == DEFAULT_DOCKER_HOST  # not /var/run/docker.sock
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/other.sock")
    assert docker_base_url(None) == "unix:///tmp/other.sock"
    assert docker_base_url("tcp://10.0.0.1:2375") == "tcp://10.0.0.1:2375"  # MLREPO_DOCKER_HOST wins


def test_publishing_and_jobs_talk_to_the_same_engine(docker_runtime: DockerRuntime) -> None:
    settings = Settings()
    images = ImageService.from_settings(settings)
    jobs = RuntimeSelector(settings).docker
    assert images.available() and jobs.available()
    assert images.client.info()["ID"] == jobs.client.info()["ID"] == docker_runtime.client.info()["ID"]
