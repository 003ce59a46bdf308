"""Executor fixtures: the REAL sandboxes (bubblewrap, the Docker engine of scripts/start-dockerd.sh) and
real small packages following the invocation contract, built into real images FROM the local base image.

A runtime that cannot run here skips locally and fails under CI=true (``require_service``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from executor_support import BASE_IMAGE, TEST_UID_BASE, TEST_UID_COUNT, build_image

from catalog.actors import Actor
from executor.runtimes import BwrapRuntime, DockerRuntime, Package, Runtime
from infra.settings import Settings
from infra.tables import Account
from tests.services import require_service

if TYPE_CHECKING:
    from catalog.app import CatalogApp

REPO = Path(__file__).resolve().parents[2]


def _try_script(name: str) -> None:
    """Our setup scripts are idempotent and quick once done; run them when we may (root)."""
    if os.geteuid() == 0:
        subprocess.run(["bash", str(REPO / "scripts" / name)], capture_output=True, timeout=600)


@pytest.fixture(scope="session")
def bwrap_runtime(tmp_path_factory: pytest.TempPathFactory) -> BwrapRuntime:
    if not BwrapRuntime.available():
        _try_script("install-bwrap.sh")
    require_service("bubblewrap", BwrapRuntime.available(), "bwrap/prlimit/setpriv not installed")
    require_service("bubblewrap", os.geteuid() == 0, "starting sandboxes as other uids needs root")
    # A uid range of its own, so leftover checks never see other suites' sandboxes running meanwhile.
    return BwrapRuntime(
        work_dir=tmp_path_factory.mktemp("bwrap-work"), uid_base=TEST_UID_BASE, uid_count=TEST_UID_COUNT
    )


@pytest.fixture(scope="session")
def docker_runtime() -> DockerRuntime:
    runtime = DockerRuntime()
    if not runtime.available():
        _try_script("start-dockerd.sh")
    require_service("Docker engine", runtime.available(), "no engine answers at DOCKER_HOST")
    try:
        runtime.client.images.get(BASE_IMAGE)
    except Exception:
        _try_script("build-base-image.sh")
    images = {tag for image in runtime.client.images.list() for tag in image.tags}
    require_service("base image", BASE_IMAGE in images, f"{BASE_IMAGE} missing (scripts/build-base-image.sh)")
    return runtime


PackageFactory = Callable[[str], Package]


@pytest.fixture(params=["bwrap", "docker"])
def sandbox(request: pytest.FixtureRequest) -> Runtime:
    """Each sandbox test runs against both real runtimes."""
    return request.getfixturevalue(f"{request.param}_runtime")


@pytest.fixture
def make_package(sandbox: Runtime, tmp_path: Path) -> PackageFactory:
    """Write ``model.py`` (dedented source) as a package and make it runnable by ``sandbox``."""
    return package_factory(sandbox, tmp_path)


@pytest.fixture
def make_package_bwrap(bwrap_runtime: BwrapRuntime, tmp_path: Path) -> PackageFactory:
    return package_factory(bwrap_runtime, tmp_path)


@pytest.fixture
def make_package_docker(docker_runtime: DockerRuntime, tmp_path: Path) -> PackageFactory:
    return package_factory(docker_runtime, tmp_path)


def package_factory(sandbox: Runtime, tmp_path: Path) -> PackageFactory:
    counter = iter(range(1000))

    def make(source: str, train: bool = False) -> Package:
        code_dir = tmp_path / f"pkg{next(counter)}"
        code_dir.mkdir()
        (code_dir / "model.py").write_text(textwrap.dedent(source))
        image = build_image(sandbox, code_dir) if isinstance(sandbox, DockerRuntime) else None
        return Package(
            entrypoint=("python3", "model.py"),
            train_entrypoint=("python3", "model.py", "train") if train else None,
            image=image,
            code_dir=code_dir,
        )

    return make


# --------------------------------------------------------------------------- published listings for jobs


@pytest.fixture
async def catalog(settings: Settings) -> AsyncIterator[CatalogApp]:
    """The real catalog on the test database, without the embedded index (as the worker opens it)."""
    from catalog.app import CatalogApp

    app = await CatalogApp.open(settings, with_index=False)
    yield app
    await app.close()


@pytest.fixture
async def people(catalog: CatalogApp) -> dict[str, Actor]:
    actors = {}
    async with catalog.db.session() as session:
        for name, role, cpu in (
            ("producer", "producer", 4.0),
            ("alice", "requester", 2.0),
            ("bob", "requester", 2.0),
        ):
            row = Account(name=name, role=role, quota_cpu=cpu, quota_memory_mb=1024, quota_gpu=0)
            session.add(row)
            await session.flush()
            actors[name] = Actor(account_id=row.id, role=role, name=name)
    return actors


@pytest.fixture
def fake_dev() -> Iterator[Path]:
    """A /dev with two "GPUs" and the control nodes, world-traversable (bwrap binds as the sandbox uid)."""
    root = Path(tempfile.mkdtemp(prefix="mlrepo-fake-dev-"))
    root.chmod(0o755)
    for name, target in (
        ("nvidia0", "/dev/zero"),
        ("nvidia1", "/dev/zero"),
        ("nvidiactl", "/dev/null"),
        ("nvidia-uvm", "/dev/null"),
    ):
        (root / name).symlink_to(target)
    (root / "nvidia-caps").mkdir()  # a directory, not a GPU
    (root / "nvidia10x").touch()  # not a GPU node name
    yield root
    shutil.rmtree(root)
