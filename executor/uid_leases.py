"""Host-wide leases of sandbox user IDs: no two live bwrap sandboxes on one host ever run as one uid.

Why: RLIMIT_NPROC counts processes per uid, and processes of one uid may signal and ptrace each other. Two
sandboxes that drew the same uid at random (about 0.1% with 10 at once from 50,000) shared one process
limit and could reach into each other. Sandboxes start from threads of one worker and from several worker
processes on one host, so the lease must be visible across processes.

How: one lock file per uid in a host-wide directory (``MLREPO_SANDBOX_UID_LEASE_DIR``); a sandbox holds an
exclusive ``flock`` on its uid's file for as long as it runs. ``flock`` locks belong to the open file
description, so two leases in one process exclude each other as two processes' do, and the kernel drops
the lock of a process that died: a crashed worker's uids are free again without any cleanup. The files
are never removed (removing a locked file lets the next opener lock a new inode beside the old lock).

A process that cannot make or write the directory (the default, under ``/run``, is root's: a worker run
as another user) fails each run with ``Unavailable`` naming the directory and the setting, rather than
falling back to a directory of its own: two processes leasing from different directories would each
think a uid free that the other holds, which is the sharing the leases exist to prevent. Such a host sets
``MLREPO_SANDBOX_UID_LEASE_DIR`` to one directory every worker and API process can write.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

from infra.errors import Unavailable

DEFAULT_LEASE_DIR = Path("/run/mlrepo/sandbox-uids")
# How long a sandbox waits for a uid when every one in the range is in use, and how often it looks again.
WAIT_S = 30.0
POLL_S = 0.05


class UidLeases:
    """The uids ``base`` .. ``base + count - 1``, leased one per live sandbox across the host."""

    def __init__(self, lease_dir: Path, base: int, count: int, wait_s: float = WAIT_S) -> None:
        if count < 1:
            raise ValueError("a sandbox uid range needs at least one uid")
        self.lease_dir = lease_dir
        self.base = base
        self.count = count
        self.wait_s = wait_s

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[int]:
        """A uid no other live sandbox on this host holds, for the body. Waits up to ``wait_s`` while the
        whole range is in use, then raises ``Unavailable`` saying so."""
        deadline = time.monotonic() + self.wait_s
        while (taken := self.try_take()) is None:
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"all {self.count} sandbox user IDs ({self.base}..{self.base + self.count - 1}, "
                    f"MLREPO_SANDBOX_UID_BASE/MLREPO_SANDBOX_UID_COUNT) stayed in use by other sandboxes "
                    f"on this host for {self.wait_s:g} s"
                )
            await asyncio.sleep(POLL_S)
        uid, fd = taken
        try:
            yield uid
        finally:
            os.close(fd)  # closing the only descriptor of the open file releases its flock

    def try_take(self) -> tuple[int, int] | None:
        """Lock a free uid's file: (uid, descriptor holding the lock), or None when all are held. The
        search starts at a random uid so concurrent leases rarely probe the same files."""
        start = secrets.randbelow(self.count)
        try:
            self._make_dir()
        except OSError as exc:
            raise self._unusable(exc) from None
        for step in range(self.count):
            uid = self.base + (start + step) % self.count
            try:
                fd = os.open(self.lease_dir / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise self._unusable(exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return uid, fd
        return None

    def _unusable(self, exc: OSError) -> Unavailable:
        return Unavailable(
            f"sandbox user IDs cannot be leased: the lease directory {self.lease_dir} cannot be written by "
            f"this process (uid {os.geteuid()}): {exc.strerror or exc}. Set MLREPO_SANDBOX_UID_LEASE_DIR "
            "to a directory that every worker and API process on this host can write (the same one for all)"
        )

    def _make_dir(self) -> None:
        """Root's alone: a sandbox (or any other user) that could open a lock file could hold its uid."""
        self.lease_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.lease_dir.stat().st_mode & 0o077:
            os.chmod(self.lease_dir, 0o700)
