"""Publishing's sandbox (``ExecutorSandbox``) runs producers' code exactly as jobs will run it later."""

from __future__ import annotations

from pathlib import Path

from catalog.publishing.sandbox import RunTarget, SandboxLimits
from executor.publish_sandbox import ExecutorSandbox
from executor.runtimes import RuntimeSelector
from infra.settings import Settings

HELLO = "print('hello')\n"


async def test_publishing_runs_code_on_the_configured_bwrap_runtime_root(
    sqlite_settings: Settings, bwrap_runtime, tmp_path: Path
) -> None:
    """MLREPO_BWRAP_RUNTIME_ROOT chose the /usr of jobs only: publishing tested and verified packages on
    the host's, so a package could pass verification on an interpreter its jobs would never get."""
    code = tmp_path / "pkg"
    code.mkdir()
    (code / "main.py").write_text(HELLO)
    target = RunTarget(command=("python3", "main.py"), code_dir=code)
    host = sqlite_settings.model_copy(update={"runtime": "bwrap"})
    assert (await ExecutorSandbox(host).run(target, b"", SandboxLimits())).stdout == b"hello\n"

    bare = tmp_path / "bare-root"  # a runtime root without an interpreter
    bare.mkdir()
    configured = host.model_copy(update={"bwrap_runtime_root": bare})
    outcome = await ExecutorSandbox(configured).run(target, b"", SandboxLimits())
    assert not outcome.ok and outcome.runtime == "bwrap"
    assert ExecutorSandbox(configured).bwrap.runtime_root == RuntimeSelector(configured).bwrap.runtime_root
