"""The Makefile's install recipe, read with ``make -n`` (printed, not run: no venv is built)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_takes_torch_from_the_cpu_index(tmp_path: Path) -> None:
    """PyPI's Linux torch wheel is the CUDA build, whatever the version pin: it pulls multi-GB nvidia-*
    packages onto a machine that never uses them. The CPU build is on PyTorch's CPU index."""
    for target in ("install", "lock"):
        dry_run = subprocess.run(
            ["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        (torch_install,) = [line for line in dry_run.stdout.splitlines() if "install torch==" in line]
        assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_install, target
