"""What every test area needs to reach real services: ``require_service``, ``IN_CI`` and ``free_port``.

A plain module rather than conftest code because every conftest is a module named ``conftest``: area
conftests and test modules cannot import from the root one. Import it as ``tests.services`` (pyproject
puts the project root on ``sys.path``; ``tests`` is a namespace package).
"""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, ok: bool, why: str = "") -> None:
    """Skip locally, fail in CI: a missing service must never turn CI green."""
    if ok:
        return
    message = f"{name} is not available: {why}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required services must run)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nothing listens on right now (for throwaway servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
