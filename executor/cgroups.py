"""A control group per bubblewrap run: the CPU share and the resident memory its allocation grants.

Why: rlimits bound a sandbox's CPU *time*, address space and processes, but not its share of the cores
(a run allocated 1 CPU could keep every core busy for its whole timeout) nor its resident memory (a GPU
run's memory is capped by its data segment only, since CUDA needs the address space; shared mappings
escape that). Docker runs get both from the engine's cgroups; this gives bwrap runs the same, on either
cgroup hierarchy:

- v2 (unified): ``/sys/fs/cgroup/mlrepo/<run>`` with ``cpu.max``, ``memory.max`` and ``memory.swap.max``;
- v1: ``/sys/fs/cgroup/cpu/mlrepo/<run>`` (``cpu.cfs_quota_us``) and ``/sys/fs/cgroup/memory/mlrepo/<run>``
  (``memory.limit_in_bytes``, and ``memory.memsw.limit_in_bytes`` where swap is accounted).

The launcher joins the groups itself before it execs the sandbox (``wrap``), so nothing the sandbox
starts is ever outside them. Creating groups needs root and a writable hierarchy; where there is none
(an unprivileged container), ``detect`` says so and runs keep their rlimits only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from infra.errors import Unavailable

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "mlrepo"
CPU_PERIOD_US = 100_000
PROCS_ENV = "MLREPO_CGROUP_PROCS"
# Run by the launcher as root, before prlimit/setpriv/bwrap: join every group, then become the launcher.
JOIN_SCRIPT = (
    'IFS=:; for procs in $MLREPO_CGROUP_PROCS; do echo $$ > "$procs" || '
    '{ echo "mlrepo: cannot join the cgroup $procs" >&2; exit 125; }; done; exec "$@"'
)


@dataclass(frozen=True)
class RunGroups:
    """The groups of one run (one directory on v2, one per controller on v1)."""

    dirs: tuple[Path, ...]
    memory_dir: Path
    oom_file: str  # v2 memory.events / v1 memory.oom_control: both count "oom_kill N"

    def wrap(self, argv: list[str]) -> tuple[list[str], dict[str, str]]:
        """The launcher command that joins these groups first, and the variable it reads them from
        (the sandbox itself starts from ``env -i`` and never sees it)."""
        procs = ":".join(str(d / "cgroup.procs") for d in self.dirs)
        return ["/bin/sh", "-c", JOIN_SCRIPT, "sh", *argv], {PROCS_ENV: procs}

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this run for crossing its memory limit."""
        with contextlib.suppress(OSError):
            for line in (self.memory_dir / self.oom_file).read_text().splitlines():
                name, _, count = line.partition(" ")
                if name == "oom_kill":
                    return int(count) > 0
        return False

    def remove(self) -> None:
        """Kill whatever is left in the groups and remove them (a group with processes cannot go)."""
        deadline = time.monotonic() + 2.0
        for directory in self.dirs:
            while directory.exists():
                with contextlib.suppress(OSError):
                    for pid in (directory / "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError, ValueError):
                            os.kill(int(pid), signal.SIGKILL)
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


class CgroupTree:
    """Where this host's groups are made; ``create`` makes a run's groups with its limits."""

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        self.unified = (root / "cgroup.controllers").exists()

    @property
    def version(self) -> int:
        return 2 if self.unified else 1

    @property
    def parents(self) -> list[Path]:
        """The directories that hold the runs' groups (one per controller on v1)."""
        if self.unified:
            return [self.root / PARENT]
        return [self.root / controller / PARENT for controller in ("cpu", "memory")]

    def create(self, cpus: float, memory_mb: int) -> RunGroups:
        name = f"run-{os.getpid()}-{secrets.token_hex(6)}"
        quota = max(1000, int(cpus * CPU_PERIOD_US))  # the kernel's floor is 1 ms per period
        memory = str(memory_mb << 20)
        try:
            if self.unified:
                return self._create_v2(name, quota, memory)
            return self._create_v1(name, quota, memory)
        except OSError as exc:
            raise Unavailable(f"cannot create the sandbox's cgroup under {self.root}: {exc}") from exc

    def _create_v2(self, name: str, quota: int, memory: str) -> RunGroups:
        parent = self.root / PARENT
        parent.mkdir(exist_ok=True)
        for level in (self.root, parent):  # controllers must be delegated down to the run's group
            _write(level / "cgroup.subtree_control", "+cpu +memory")
        run = parent / name
        run.mkdir()
        groups = RunGroups((run,), run, "memory.events")
        try:
            _write(run / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            _write(run / "memory.max", memory)
            if (run / "memory.swap.max").exists():
                _write(run / "memory.swap.max", "0")
        except OSError:
            groups.remove()
            raise
        return groups

    def _create_v1(self, name: str, quota: int, memory: str) -> RunGroups:
        cpu = self.root / "cpu" / PARENT / name
        mem = self.root / "memory" / PARENT / name
        cpu.mkdir(parents=True)
        try:
            mem.mkdir(parents=True)
        except OSError:
            cpu.rmdir()
            raise
        groups = RunGroups((cpu, mem), mem, "memory.oom_control")
        try:
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(quota))
            _write(mem / "memory.limit_in_bytes", memory)
            if (mem / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit either
                _write(mem / "memory.memsw.limit_in_bytes", memory)
        except OSError:
            groups.remove()
            raise
        return groups

    def sweep(self) -> int:
        """Remove the groups of runs whose worker process is gone (a worker killed mid-run leaves its
        emptied groups behind: the sandbox dies with it, the directories do not). Returns how many."""
        removed = 0
        for parent in self.parents:
            for group in parent.glob("run-*-*") if parent.is_dir() else ():
                if _pid_alive(group.name.split("-")[1]):
                    continue
                with contextlib.suppress(OSError):
                    RunGroups((group,), group, "").remove()
                    removed += 1
        return removed


def _pid_alive(pid: str) -> bool:
    return pid.isdigit() and Path(f"/proc/{pid}").exists()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


_detected: dict[Path, CgroupTree | None] = {}


def detect(root: Path = CGROUP_ROOT) -> CgroupTree | None:
    """This host's tree if a run's groups can be made here (tried once per process), else None."""
    if root not in _detected:
        tree: CgroupTree | None = CgroupTree(root)
        try:
            tree.create(1.0, 64).remove()
            tree.sweep()
        except (Unavailable, OSError):
            tree = None
        _detected[root] = tree
    return _detected[root]
