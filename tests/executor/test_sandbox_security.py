"""A published model that attacks its sandbox: each attack is its own test, against each REAL runtime.

Every job must fail with a clear reason, while a well-behaved job running at the same time succeeds,
nothing leaks, and the original package (and image) is unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from executor_support import RUN_ID, TEST_UID_BASE, TEST_UID_COUNT

from catalog.enums import JobStatus
from executor.inference import InferencePlan, run_inference, verdict
from executor.output_filter import OutputFilter
from executor.runtimes import DockerRuntime, Limits, Package, Runtime

LIMITS = Limits(timeout_s=3.0, memory_mb=256, pids=32, max_output_bytes=8 << 20, tmpfs_mb=16, max_file_mb=64)

GOOD_MODEL = """
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    print(json.dumps({"id": record["id"], "output": {"length": len(record["input"])}}))
"""


def attack_model(body: str) -> str:
    """A contract-following model whose scoring runs ``body`` (indented into the loop) first."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return f"""
import json, os, sys
for line in sys.stdin:
    record = json.loads(line)
{indented}
    print(json.dumps({{"id": record["id"], "output": {{"length": 0}}}}))
"""


async def run_one(sandbox: Runtime, package: Package, limits: Limits = LIMITS) -> tuple[JobStatus, str]:
    labels = (("mlrepo.test", RUN_ID),)
    plan = InferencePlan(package=package, limits=limits, output_filter=OutputFilter(None), labels=labels)
    outcome = await run_inference(sandbox, plan, ["hello"])
    status, reason = verdict(outcome)
    return status, reason or ""


async def attack_alongside_good_job(
    sandbox: Runtime, make_package, body: str, limits: Limits = LIMITS
) -> tuple[JobStatus, str, Package]:
    """Run the attack and a good job at the same time; the good one must not notice."""
    attacker = make_package(attack_model(body))
    good = make_package(GOOD_MODEL)
    before = tree_digest(attacker.code_dir)
    (status, reason), (good_status, good_reason) = await asyncio.gather(
        run_one(sandbox, attacker, limits), run_one(sandbox, good, LIMITS)
    )
    assert good_status == JobStatus.SUCCEEDED, good_reason
    assert tree_digest(attacker.code_dir) == before, "the original package changed"
    assert_no_leftovers(sandbox)
    return status, reason, attacker


def tree_digest(root: Path | None) -> str:
    assert root is not None
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def assert_no_leftovers(sandbox: Runtime) -> None:
    """No container and no sandbox process survives a run."""
    if isinstance(sandbox, DockerRuntime):
        left = sandbox.client.containers.list(all=True, filters={"label": f"mlrepo.test={RUN_ID}"})
        assert left == []
        return
    deadline = time.monotonic() + 5.0  # a killed tree needs a moment to be gone from /proc
    while (left := sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"sandbox processes outlived their run: {left}"


def sandbox_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and TEST_UID_BASE <= entry.stat().st_uid < TEST_UID_BASE + TEST_UID_COUNT:
                found.append(entry.name + " " + (entry / "cmdline").read_bytes().decode(errors="replace"))
        except (FileNotFoundError, ProcessLookupError):  # it exited while we looked (ESRCH on read)
            continue
    return found


@pytest.fixture
def listener() -> Iterator[dict[str, int]]:
    """A TCP server on every host address that counts connections: the sandbox must never reach it."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))
    server.listen(16)
    server.settimeout(0.2)
    state = {"port": server.getsockname()[1], "connections": 0}
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            state["connections"] += 1
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield state
    stop.set()
    thread.join()
    server.close()


def host_addresses() -> list[str]:
    addresses = {"127.0.0.1"}
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            addresses.add(probe.getsockname()[0])
    except OSError:
        pass
    return sorted(addresses)


async def test_network_connection_attempt_fails(sandbox: Runtime, make_package, listener) -> None:
    targets = [(addr, listener["port"]) for addr in host_addresses()] + [("1.1.1.1", 53)]
    body = f"""
for host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=1).close()
        reached = True
    except OSError as exc:
        reached = False
        err = exc
    if reached:
        raise SystemExit("REACHED " + host)
raise ConnectionError(f"no network: {{err}}")
"""
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, "import socket\n" + body)
    assert status == JobStatus.FAILED
    assert "no network" in reason and "REACHED" not in reason
    assert listener["connections"] == 0


async def test_udp_and_unix_sockets_of_the_host_are_out_of_reach(
    sandbox: Runtime, make_package, tmp_path: Path
) -> None:
    """Datagrams (DNS included) and unix sockets, as the host's Redis or PostgreSQL listen on: a socket
    path is not in the sandbox, and an abstract one belongs to the host's network namespace."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 0))
    udp.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX)
    abstract_name = f"\0mlrepo-test-{RUN_ID}"
    abstract.bind(abstract_name)
    abstract.listen(1)
    abstract.setblocking(False)
    path = tmp_path / "redis.sock"
    named = socket.socket(socket.AF_UNIX)
    named.bind(str(path))
    path.chmod(0o777)
    named.listen(1)
    named.setblocking(False)
    targets = [(addr, udp.getsockname()[1]) for addr in host_addresses()] + [("1.1.1.1", 53)]
    body = f"""
import socket
for host, port in {targets!r}:
    try:  # 127.0.0.1 is the sandbox's own loopback: the send may succeed, the host must not receive
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (host, port))
    except OSError:
        pass
for address in ({abstract_name!r}, {str(path)!r}):
    try:
        socket.socket(socket.AF_UNIX).connect(address)
        raise SystemExit("CONNECTED TO " + repr(address))
    except OSError:
        pass
try:
    socket.getaddrinfo("example.com", 80)
    raise SystemExit("RESOLVED")
except OSError:
    pass
raise ConnectionError("no datagram or unix socket reached")
"""
    try:
        status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
        assert status == JobStatus.FAILED
        assert "no datagram or unix socket reached" in reason, reason
        with pytest.raises(BlockingIOError):
            udp.recvfrom(16)
        for listener in (abstract, named):
            with pytest.raises(BlockingIOError):
                listener.accept()
    finally:
        for opened in (udp, abstract, named):
            opened.close()


async def test_fork_bomb_hits_the_process_limit(sandbox: Runtime, make_package) -> None:
    body = """
while True:
    os.fork()
"""
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "process limit of 32" in reason
    assert os.system("true") == 0  # the host still forks


async def test_memory_past_the_limit_is_stopped(sandbox: Runtime, make_package) -> None:
    body = """
hog = b"x" * (1024 << 20)
"""
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "memory limit of 256 MB exceeded" in reason


def fill_disk_body(refused: tuple[str, ...], fill: str, first: str = "") -> str:
    """An attack that fails loudly if it can write any of ``refused``, then writes ``fill`` until stopped
    (``first``: lines run before)."""
    return f"""{first}
chunk = b"x" * (1 << 20)
for target in {refused!r}:
    try:
        open(target, "wb").write(chunk)
        raise SystemExit("WROTE OUTSIDE TMPFS " + target)
    except OSError:
        pass
with open({fill!r}, "wb") as f:
    while True:
        f.write(chunk)
        f.flush()
"""


async def test_filling_the_disk_stops_at_the_tmpfs_limit(sandbox: Runtime, make_package) -> None:
    body = fill_disk_body(("/app/fill", "/fill"), "/tmp/fill")
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "disk space exhausted (tmpfs limit 16 MB)" in reason


async def test_dev_is_no_unbounded_disk(sandbox: Runtime, make_package) -> None:
    """bwrap's /dev is a tmpfs of its own, owned by the sandbox uid and of no size limit: files written
    there were held in the host's memory, past every limit where no cgroup holds the run. /dev is
    read-only now and /dev/shm (multiprocessing's semaphores) a capped tmpfs."""
    semaphores = "import multiprocessing\nmultiprocessing.Lock()  # POSIX semaphores still work"
    body = fill_disk_body(("/dev/fill", "/dev/pts/fill"), "/dev/shm/fill", first=semaphores)
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "disk space exhausted" in reason, reason


async def test_an_image_volume_is_no_unbounded_disk_and_is_not_left_behind(
    docker_runtime: DockerRuntime, make_package_docker
) -> None:
    """A VOLUME the producer's image declares was an anonymous volume on the engine's disk: writable past
    every size limit (files under the file size limit, any number of them), and left behind when the
    container was removed. It is a tmpfs capped like /tmp now, gone with the container."""
    body = """
chunk = b"x" * (1 << 20)
for number in range(100):
    with open(f"/scratch/fill{number}", "wb") as f:
        for _ in range(8):
            f.write(chunk)
raise SystemExit("WROTE 800 MB TO THE ENGINE'S DISK")
"""
    package = make_package_docker(attack_model(body))
    assert package.image is not None
    dockerfile = f"FROM {package.image}\nUSER 0\nRUN mkdir -m 777 /scratch\nVOLUME /scratch\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    image = package.image + "-volume"
    docker_runtime.client.images.build(
        fileobj=context, custom_context=True, tag=image, rm=True, network_mode="none"
    )
    volumes_before = {volume.name for volume in docker_runtime.client.volumes.list()}
    status, reason = await run_one(docker_runtime, replace(package, image=image))
    assert status == JobStatus.FAILED
    assert "disk space exhausted (tmpfs limit 16 MB)" in reason, reason
    assert_no_leftovers(docker_runtime)
    left = {volume.name for volume in docker_runtime.client.volumes.list()} - volumes_before
    assert not left, f"volumes left behind: {left}"


async def test_host_files_are_not_readable(sandbox: Runtime, make_package, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("TOP-SECRET-HOST-FILE")
    secret.chmod(0o644)  # even a world-readable host file must be out of reach
    body = f"""
found = []
for path in ({str(secret)!r}, "/etc/shadow", "/root/.bash_history", {str(Path.cwd() / "pyproject.toml")!r}):
    try:
        found.append(open(path).read()[:100])
    except OSError as exc:
        pass
if not found:
    raise FileNotFoundError("no host file readable")
raise SystemExit("READ: " + repr(found))
"""
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "no host file readable" in reason, reason


async def test_worker_environment_is_not_visible(sandbox: Runtime, make_package, monkeypatch) -> None:
    monkeypatch.setenv("MLREPO_TEST_WORKER_SECRET", "TOP-SECRET-ENV-VALUE")
    body = """
seen = dict(os.environ)
for path in ("/proc/1/environ", "/proc/self/environ", "/proc/1/cmdline"):
    try:
        seen[path] = open(path, "rb").read().decode("utf-8", "replace")
    except OSError:
        pass
text = repr(seen)
if "TOP-SECRET" in text:
    raise SystemExit("LEAKED " + text)
raise PermissionError("worker environment not visible")
"""
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "worker environment not visible" in reason
    assert "TOP-SECRET" not in reason


async def test_writing_its_own_artifact_fails_and_the_original_is_unchanged(
    sandbox: Runtime, make_package
) -> None:
    body = """
with open(os.path.abspath(__file__), "a") as f:
    f.write("# tampered")
"""
    status, reason, attacker = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert "Read-only file system" in reason or "Permission denied" in reason
    if isinstance(sandbox, DockerRuntime):  # the image itself still holds the original bytes
        assert attacker.image is not None
        printed = sandbox.client.containers.run(
            attacker.image, ["cat", "/app/model.py"], remove=True, network_mode="none"
        )
        assert attacker.code_dir is not None
        assert printed == (attacker.code_dir / "model.py").read_bytes()


async def test_running_forever_times_out(sandbox: Runtime, make_package) -> None:
    body = """
while True:
    pass
"""
    limits = Limits(timeout_s=1.0, memory_mb=256, pids=32, tmpfs_mb=16)
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body, limits)
    assert status == JobStatus.TIMED_OUT
    assert "timed out after the listing's limit of 1 s per call (plus 2 s allowed" in reason


async def test_printing_gigabytes_hits_the_output_cap(sandbox: Runtime, make_package) -> None:
    body = """
block = "x" * (1 << 20)
for _ in range(4096):
    sys.stdout.write(block)
"""
    status, reason, _ = await attack_alongside_good_job(sandbox, make_package, body)
    assert status == JobStatus.FAILED
    assert f"output exceeded the limit of {8 << 20} bytes" in reason
