"""bubblewrap runtime: for code packages where no Docker engine runs.

Each run gets a fresh copy of the package in its own temp dir, bound read-only at /app. The recipe follows
architecture.md §5, which records what goes wrong otherwise on these machines:

- bwrap is started as a real unprivileged host uid (``setpriv``), never as root with ``--uid``: started by
  root, file permission checks would still see root;
- it is started with an empty environment (``env -i``) plus ``--clearenv`` and an allow-list, because
  inside the sandbox pid 1 is bwrap and its ``/proc/1/environ`` is readable;
- ``--unshare-all`` (no network), ``--unshare-user --disable-userns``, ``--cap-drop ALL``;
- only the package copy and the Python runtime (``/usr`` + the two files the dynamic loader needs) are
  bound, read-only; ``/tmp`` and ``/output`` are size-capped tmpfs;
- ``prlimit`` sets address space, processes, file size and CPU time; the wall-clock timeout is enforced
  here by killing the session;
- where the host lets us (root, a writable cgroup hierarchy), each run also gets a cgroup of its own
  (``executor.cgroups``) holding it to its CPU share and resident memory;
- a run with GPUs gets exactly its leased device nodes (``executor.gpus``), and its memory is capped by
  the data segment instead of the address space: CUDA reserves far more address space than it uses (on
  an H200, ``cuInit`` fails with CUDA_ERROR_OUT_OF_MEMORY under a 2 GiB RLIMIT_AS and works under a
  512 MiB RLIMIT_DATA).

Each run uses a uid of a dedicated range, leased host-wide for as long as it runs (``executor.uid_leases``):
RLIMIT_NPROC (counted per uid) of one sandbox never counts another's processes, no sandbox can signal or
ptrace another, and no host file is owned by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from executor.cgroups import CgroupTree, RunGroups, detect
from executor.gpus import DEV_DIR, device_nodes
from executor.runtimes.base import (
    APP_DIR,
    DATA_DIR,
    OUTPUT_DIR,
    SANDBOX_ENV,
    DeferredRun,
    Failure,
    FailureKind,
    Limits,
    Package,
    RunRequest,
    RunResult,
    collect_output_command,
)
from executor.runtimes.process import run_process
from executor.uid_leases import DEFAULT_LEASE_DIR, WAIT_S, UidLeases
from infra.errors import Unavailable

# Bound read-only from ``runtime_root``: the interpreter and libraries, and what ld.so needs to find
# alternatives-managed libraries such as libblas.so.3 (numpy).
RUNTIME_BINDS = ("usr", "etc/alternatives", "etc/ld.so.cache")
MERGED_USR_LINKS = (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64"))
LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
logger = logging.getLogger("mlrepo.sandbox")
# Groups being made for runs cancelled meanwhile, held until made (the event loop holds tasks weakly).
_CANCELLED_CREATES: set[asyncio.Future[RunGroups]] = set()


class BwrapRuntime:
    name = "bwrap"

    def __init__(
        self,
        work_dir: Path | None = None,
        runtime_root: Path = Path("/"),
        uid_base: int = 200_000,
        uid_count: int = 50_000,
        dev_dir: Path = DEV_DIR,
        cgroups: bool = True,
        uid_lease_dir: Path = DEFAULT_LEASE_DIR,
        uid_wait_s: float = WAIT_S,
    ) -> None:
        self.work_dir = work_dir
        self.runtime_root = runtime_root
        self.dev_dir = dev_dir  # where GPU device nodes are found
        self.cgroups = cgroups  # a cgroup per run where the host allows (``cgroup_tree``)
        self.uid_base = uid_base
        self.uid_count = uid_count
        self.uids = UidLeases(uid_lease_dir, uid_base, uid_count, uid_wait_s)

    @property
    def cgroup_tree(self) -> CgroupTree | None:
        return detect() if self.cgroups else None

    @staticmethod
    def available() -> bool:
        return all(shutil.which(tool) for tool in ("bwrap", "prlimit", "setpriv"))

    def can_run(self, package: Package) -> bool:
        return package.code_dir is not None and self.available()

    def prepare(self, package: Package, request: RunRequest, limits: Limits) -> DeferredRun:
        """Copies start in ~20 ms: nothing to gain from starting one ahead of its input."""
        return DeferredRun(self, package, request, limits)

    async def run(self, package: Package, request: RunRequest, limits: Limits) -> RunResult:
        if package.code_dir is None:
            return RunResult(b"", b"", None, 0.0, Failure(FailureKind.SANDBOX, "no code package to run"))
        scratch = Path(tempfile.mkdtemp(prefix="mlrepo-bwrap-", dir=self._scratch_root()))
        try:
            copy = await asyncio.to_thread(self._private_copy, package.code_dir, scratch / "app")
            if request.data_dir is not None:  # the sandbox reads its own copy, wherever the data lies
                data = await asyncio.to_thread(self._private_copy, request.data_dir, scratch / "data")
                request = replace(request, data_dir=data)
            async with contextlib.AsyncExitStack() as held:
                try:
                    uid = await held.enter_async_context(self.uids.lease())
                except Unavailable as exc:  # the range stayed used up, or the lease dir is not writable
                    return RunResult(b"", b"", None, 0.0, Failure(FailureKind.SANDBOX, exc.message))
                # The uid stays leased until the sandbox's processes are gone (the run waits for them, and
                # a run cancelled while its launcher starts waits for that launcher's kill: ``_spawn``).
                argv = self.command(copy, request, limits, uid)
                tree = self.cgroup_tree
                if tree is None:
                    return await run_process(argv, request.stdin, limits, LAUNCH_ENV)
                return await self._run_in_cgroup(tree, argv, request.stdin, limits)
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    @staticmethod
    async def _run_in_cgroup(tree: CgroupTree, argv: list[str], stdin: bytes, limits: Limits) -> RunResult:
        # Made on a thread. A cancel that comes meanwhile lets them be made, then removes them: cancelled
        # there, the run left its groups behind (a later test_cgroups found them among this process's).
        creating = asyncio.ensure_future(asyncio.to_thread(tree.create, limits.cpus, limits.memory_mb))
        try:
            groups: RunGroups = await asyncio.shield(creating)
        except Unavailable as exc:
            return RunResult(b"", b"", None, 0.0, Failure(FailureKind.SANDBOX, exc.message))
        except asyncio.CancelledError:
            _CANCELLED_CREATES.add(creating)
            creating.add_done_callback(_remove_unused)
            raise
        try:
            launcher, variables = groups.wrap(argv)
            result = await run_process(launcher, stdin, limits, {**LAUNCH_ENV, **variables})
            if not result.ok and groups.oom_killed():
                reason = f"memory limit of {limits.memory_mb} MB exceeded (resident memory)"
                result = replace(result, failure=Failure(FailureKind.MEMORY, reason))
            return result
        finally:
            await asyncio.to_thread(_remove_groups, groups)

    def _scratch_root(self) -> Path:
        """Where copies go: the configured dir if the sandbox uid can traverse every directory above it
        (bwrap binds the copy as that uid), else a dedicated 0711 dir under the system temp dir."""
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.work_dir, 0o711)
            if all(
                os.stat(p).st_mode & 0o001
                for p in [self.work_dir.resolve(), *self.work_dir.resolve().parents]
            ):
                return self.work_dir
        fallback = Path(tempfile.gettempdir()) / "mlrepo-bwrap"
        fallback.mkdir(mode=0o711, exist_ok=True)
        os.chmod(fallback, 0o711)
        return fallback

    @staticmethod
    def _private_copy(source: Path, copy: Path) -> Path:
        """A private copy for this run only: whatever happens inside can never touch the original."""
        os.chmod(copy.parent, 0o711)  # the sandbox uid may traverse to the copy, not list its siblings
        shutil.copytree(source, copy, symlinks=True)
        for root, dirs, files in os.walk(copy):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
            for name in files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)
        os.chmod(copy, 0o755)
        return copy

    def command(self, copy: Path, request: RunRequest, limits: Limits, uid: int) -> list[str]:
        cpu_seconds = max(1, math.ceil(limits.deadline_s * max(limits.cpus, 1.0)) + 1)
        env = {**SANDBOX_ENV, **limits.thread_env()}
        command = collect_output_command(request.command) if request.collect_output_dir else request.command
        memory_limit = "--data" if limits.gpus else "--as"
        argv = [
            "prlimit",
            f"{memory_limit}={limits.memory_mb << 20}",
            f"--nproc={limits.pids}",
            f"--fsize={limits.max_file_mb << 20}",
            f"--cpu={cpu_seconds}",
            "--core=0",
            "--nofile=256",
            "--",
            "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--no-new-privs",
            "--",
            "env",
            "-i",
            "bwrap",
            "--unshare-all",
            "--unshare-user",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        for rel in RUNTIME_BINDS:
            source = self.runtime_root / rel
            if source.exists():
                argv += ["--ro-bind", str(source), f"/{rel}"]
        for target, link in MERGED_USR_LINKS:
            argv += ["--symlink", target, link]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        for node in device_nodes(limits.gpus, self.dev_dir):
            argv += ["--dev-bind", str(node), f"/dev/{node.name}"]
        argv += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/tmp"]
        # POSIX shared memory and semaphores (multiprocessing) live in /dev/shm, capped like /tmp.
        argv += ["--size", str(limits.tmpfs_mb << 20), "--tmpfs", "/dev/shm"]
        argv += ["--size", str(limits.output_dir_mb << 20), "--tmpfs", OUTPUT_DIR]
        argv += ["--ro-bind", str(copy), APP_DIR]
        if request.data_dir is not None:
            argv += ["--ro-bind", str(request.data_dir), DATA_DIR]
        # The root bwrap builds, and the /dev it makes, are unbounded tmpfs the sandbox uid owns (files
        # written there were held in the host's memory, uncapped without a cgroup): both read-only once
        # everything is mounted (a remount is not recursive: /tmp, /dev/shm and /output stay writable).
        argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", APP_DIR, "--", *command]
        return argv


def _remove_unused(creating: asyncio.Future[RunGroups]) -> None:
    """Remove (on a thread) the groups made for a run cancelled before it could use them."""
    _CANCELLED_CREATES.discard(creating)
    if not creating.cancelled() and creating.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, _remove_groups, creating.result())


def _remove_groups(groups: RunGroups) -> None:
    try:
        groups.remove()
    except OSError as exc:  # the run's result stands; a worker started after this one sweeps them
        logger.warning("could not remove the sandbox cgroup %s: %s", groups.dirs, exc)
