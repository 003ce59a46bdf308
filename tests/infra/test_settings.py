"""Settings read from the environment the way ``make run`` and ``mlrepo`` read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from infra.settings import Settings, describe_settings_error


def test_relative_directories_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``make run`` serves with the default data dir ``var``, a relative path. The Docker engine reads a
    relative bind source as a volume name, so every job with data (training, a dataset) failed in Docker
    with "includes invalid characters for a local volume name"; and a path resolved later would move with
    the process's directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLREPO_SANDBOX_WORK_DIR", "sandboxes")
    settings = Settings(artifact_key_dir=Path("keys"))
    assert settings.data_dir == tmp_path / "var"
    assert settings.sandbox_work_dir == tmp_path / "sandboxes"
    assert settings.artifact_key_dir == tmp_path / "keys"
    assert Settings(data_dir=Path("~/mlrepo")).data_dir == Path(os.path.expanduser("~/mlrepo"))
    monkeypatch.chdir("/")
    assert settings.data_dir == tmp_path / "var"  # fixed when read, not when used
    assert Settings(sandbox_work_dir=None).sandbox_work_dir is None


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("MLREPO_PORT", "0", "greater than or equal to 1"),
        ("MLREPO_PORT", "70000", "less than or equal to 65535"),
        ("MLREPO_MAX_PAGE_SIZE", "0", "greater than or equal to 1"),
        ("MLREPO_MAX_QUERY_CHARS", "0", "greater than or equal to 1"),
        ("MLREPO_JOB_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("MLREPO_JOB_MAX_BATCH_RECORDS", "0", "greater than or equal to 1"),
        ("MLREPO_JOB_OUTPUTS_PAGE_SIZE", "0", "greater than or equal to 1"),
        ("MLREPO_SANDBOX_PIDS", "0", "greater than or equal to 1"),
        ("MLREPO_SANDBOX_DEFAULT_TIMEOUT_S", "0", "greater than 0"),
        ("MLREPO_PUBLISH_MAX_UPLOAD_BYTES", "0", "greater than or equal to 1"),
        ("MLREPO_DEMAND_WINDOW_S", "-5", "greater than or equal to 1"),
        ("MLREPO_VERIFY_INTERVAL_S", "60", "greater than or equal to 3600"),
        ("MLREPO_WORKER_RESOURCE_CLASS", "tpu", "'cpu' or 'gpu'"),
        ("MLREPO_GPU_DEVICES", "first", "GPU indices such as 0,1"),
        ("MLREPO_DATA_DIR", "", "not empty"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    variable: str, value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """These were all accepted: a zero port or page size, a worker class no queue exists for (the worker
    waited on an empty queue for ever), a job retried zero times, an empty data dir that put the database
    wherever the process started. Each now stops the process at startup, saying which variable."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = describe_settings_error(refused.value)
    assert message.startswith(f"{variable}={value!r} is refused:") and reason in message, message


def test_secrets_are_refused_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key one character short, or a Redis URL with a password but no scheme, must not end up in
    the logs of a failed start."""
    key = "ab" * 31 + "c"
    monkeypatch.setenv("MLREPO_ARTIFACT_MASTER_KEY", key)
    monkeypatch.setenv("MLREPO_REDIS_URL", "s3cret-password@cache:6379")
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = describe_settings_error(refused.value)
    assert "MLREPO_ARTIFACT_MASTER_KEY=(value not shown) is refused: must be 64 hexadecimal" in message
    assert "MLREPO_REDIS_URL=(value not shown) is refused: must be a Redis URL" in message
    assert key not in message and "s3cret" not in message
    monkeypatch.setenv("MLREPO_ARTIFACT_MASTER_KEY", "AB" * 32)
    monkeypatch.setenv("MLREPO_REDIS_URL", "redis://:pw@cache:6379/0")
    assert Settings().artifact_master_key == "AB" * 32


def test_heartbeats_must_come_more_often_than_a_job_is_declared_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLREPO_JOB_HEARTBEAT_S", "90")
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert describe_settings_error(refused.value) == (
        "MLREPO_JOB_STALE_AFTER_S (60) must be more than MLREPO_JOB_HEARTBEAT_S (90)"
    )
    monkeypatch.setenv("MLREPO_JOB_STALE_AFTER_S", "120")
    assert Settings().job_heartbeat_s == 90


def test_accepted_spellings_still_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """What parse_devices and arq read keep working: the checks refuse only what they would fail on."""
    for devices in ("auto", "AUTO", "", "0", "0, 1", "0,,2"):
        monkeypatch.setenv("MLREPO_GPU_DEVICES", devices)
        assert Settings().gpu_devices == devices
    monkeypatch.setenv("MLREPO_SANDBOX_WORK_DIR", "")
    monkeypatch.setenv("MLREPO_REDIS_URL", "")
    assert Settings().sandbox_work_dir is None and Settings().redis_url is None
