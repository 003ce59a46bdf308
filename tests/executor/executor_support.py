"""Constants shared by the executor tests and their conftest (importable as a plain module)."""

from __future__ import annotations

import os

# This session's sandboxes get uids and labels of their own, so checks for leftovers never see the
# sandboxes of other test suites running at the same time.
TEST_UID_BASE = 260_000 + (os.getpid() % 100) * 1000
TEST_UID_COUNT = 1000
RUN_ID = f"{os.getpid()}-{os.urandom(4).hex()}"
