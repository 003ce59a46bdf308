"""The Makefile's install recipe, read with ``make -n`` (printed, not run: no venv is built)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_install_takes_the_cpu_build_of_torch(tmp_path: Path) -> None:
    """PyPI's Linux torch wheel is the CUDA build, whatever the version pin: it pulls multi-GB nvidia-*
    packages onto a machine that never uses them. So the CPU build (``+cpu``) is asked for: first from the
    configured indexes and local wheels (no retries against an unreachable index), then from PyTorch's CPU
    index, and only then (macOS: no ``+cpu`` wheels) the plain pin."""
    for target in ("install", "lock"):
        dry_run = subprocess.run(
            ["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        (torch_install,) = [line for line in dry_run.stdout.splitlines() if 'install "torch==' in line]
        attempts = [attempt.strip() for attempt in torch_install.split("||")]
        assert len(attempts) == 3, torch_install
        local, cpu_index, plain = attempts
        assert local.endswith('install "torch==2.13.0+cpu"'), target
        assert cpu_index.endswith(
            '"torch==2.13.0+cpu" --extra-index-url https://download.pytorch.org/whl/cpu'
        )
        assert plain.endswith('install "torch==2.13.0"'), target
