"""An exclusive, process-lifetime lock on an index directory.

tantivy has its own writer lock, but it can only be taken after the index is opened, and opening may
wipe an index built with an older schema — which must never happen under another live process. This
advisory ``flock`` is taken first; the kernel drops it when the holder exits, even on a crash.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from infra.errors import Conflict

LOCK_FILE = "writer.lock"


class DirectoryLock:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / LOCK_FILE
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._fd)
            self._fd = None
            raise Conflict(
                f"the search index at {directory} is in use by another process (one writer per index); "
                "stop it, or give this process an index of its own (MLREPO_SEARCH_INDEX_DIR)"
            ) from exc
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
