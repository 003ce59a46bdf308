"""Publishing fixtures: a real CatalogApp, the real bubblewrap sandbox, and (where asked) the real Docker
engine and registry of scripts/ — missing services skip locally and FAIL under CI=true."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from publishing_support import REPO, make_service

from catalog.actors import Actor
from catalog.app import CatalogApp
from catalog.publishing.images import ImageService
from catalog.publishing.service import PublishingService
from executor.runtimes.bwrap import BwrapRuntime
from infra.settings import Settings
from tests.services import require_service

DOCKER_SOCK = "/run/mlrepo-docker.sock"
REGISTRY_PORT = int(os.environ.get("MLREPO_TEST_REGISTRY_PORT", "5000"))


def _script(name: str, *args: str) -> str:
    if os.geteuid() != 0:
        return ""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / name), *args], capture_output=True, text=True, timeout=600
    )
    return done.stdout.strip().splitlines()[-1] if done.returncode == 0 and done.stdout.strip() else ""


def _registry_answers(addr: str) -> bool:
    try:
        urllib.request.urlopen(f"http://{addr}/v2/", timeout=2)
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def bwrap_ok() -> bool:
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "sandboxes as other uids need root")
    return True


@pytest.fixture(scope="session")
def docker_services() -> dict[str, str]:
    """dockerd, the base image and the registry, started by the idempotent scripts when missing."""
    host = f"unix://{DOCKER_SOCK}"
    os.environ.setdefault("DOCKER_HOST", host)
    images = ImageService(host, None, Settings().base_image)
    if not images.available():
        _script("start-dockerd.sh")
    require_service("Docker engine", images.available(), f"no engine answers at {host}")
    try:
        images.client.images.get(images.base_image)
    except Exception:
        _script("build-base-image.sh")
    tags = {t for image in images.client.images.list() for t in image.tags}
    require_service("base image", images.base_image in tags, "scripts/build-base-image.sh did not build it")
    addr = f"127.0.0.1:{REGISTRY_PORT}"
    if not _registry_answers(addr):
        _script("start-registry.sh", str(REGISTRY_PORT))
    require_service("container registry", _registry_answers(addr), f"nothing answers /v2/ at {addr}")
    return {"docker_host": host, "registry_url": addr}


@pytest.fixture
def app(catalog_app: CatalogApp) -> CatalogApp:
    """The catalog under test (``catalog_app``; ``alice`` and ``bob`` come from tests/conftest.py)."""
    return catalog_app


@pytest.fixture
async def mallory(app: CatalogApp) -> Actor:
    return (await app.accounts.create("mallory", "producer")).as_actor()


@pytest.fixture
def publishing(settings: Settings, app: CatalogApp, bwrap_ok: bool) -> PublishingService:
    """Code packages under bubblewrap only (no container engine involved)."""
    return make_service(settings.model_copy(update={"runtime": "bwrap"}), app)


@pytest.fixture
def docker_publishing(
    settings: Settings, app: CatalogApp, bwrap_ok: bool, docker_services: dict[str, str]
) -> PublishingService:
    """The whole path: bubblewrap for package tests, Docker + the registry for images."""
    return make_service(settings.model_copy(update={"runtime": "auto", **docker_services}), app)


def data_dir_of(service: PublishingService) -> Path:
    return service.settings.data_dir
