"""Cursors are signed with a per-deployment key every process of the deployment shares, so a position a
client changed, or a cursor of another list, job or deployment, is refused with BadInput."""

from __future__ import annotations

import base64
import json
import stat
import threading
from pathlib import Path

import pytest

from infra.cursor_signing import KEY_FILE, CursorSigner, deployment_key, key_file
from infra.errors import BadInput
from infra.settings import Settings


def test_a_sealed_position_opens_only_for_its_list_and_scope_unchanged() -> None:
    signer = CursorSigner(b"k" * 32)
    cursor = signer.seal("job-outputs", [3, 120], "job-1")
    assert signer.open("job-outputs", cursor, "job-1") == [3, 120]
    body, mac = cursor.removeprefix("c1.").rsplit(".", 1)
    moved = "c1." + base64.urlsafe_b64encode(b"[40,120]").decode().rstrip("=") + "." + mac
    refused = [
        moved,  # the index changed, the signature kept
        cursor[:-1] + ("0" if cursor[-1] != "0" else "1"),  # the signature changed
        cursor.removesuffix(mac) + "é" * 32,  # compare_digest raised TypeError on non-ASCII text
        "c1." + body,  # no signature
        "c1.%%%." + mac,
        CursorSigner(b"x" * 32).seal("job-outputs", [3, 120], "job-1"),  # another deployment's
    ]
    for forged in refused:
        with pytest.raises(BadInput, match="not a cursor this service issued") as refusal:
            signer.open("job-outputs", forged, "job-1")
        assert refusal.value.details == {"field": "after"}
    with pytest.raises(BadInput, match="not a cursor this service issued"):
        signer.open("job-outputs", cursor, "job-2")  # another job's
    with pytest.raises(BadInput, match="not a cursor this service issued"):
        signer.open("my-jobs", cursor, "job-1")  # another list's


def test_an_unsigned_cursor_of_an_earlier_version_is_refused_saying_so() -> None:
    earlier = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00+00:00", "x"]).encode()).decode()
    with pytest.raises(BadInput, match=r"earlier version.*start again without it"):
        CursorSigner(b"k" * 32).open("listings", earlier.rstrip("="))


def test_every_process_of_a_deployment_shares_one_key_kept_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    keys: list[bytes] = []
    start = threading.Barrier(6)

    def first_use() -> None:
        start.wait()
        keys.append(deployment_key(settings))

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    path = settings.data_dir / "keys" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [KEY_FILE]  # no temp file left behind
    cursor = CursorSigner.from_settings(settings).seal("listings", ["t", "id"])
    assert CursorSigner(key_file(path.parent)).open("listings", cursor) == ["t", "id"]
    other = Settings(data_dir=tmp_path / "other")
    with pytest.raises(BadInput):
        CursorSigner.from_settings(other).open("listings", cursor)


def test_a_configured_master_key_derives_the_key_without_a_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", artifact_master_key="ab" * 32)
    key = deployment_key(settings)
    assert key == deployment_key(Settings(data_dir=tmp_path / "elsewhere", artifact_master_key="ab" * 32))
    assert key != deployment_key(Settings(data_dir=tmp_path / "data", artifact_master_key="cd" * 32))
    assert key != bytes.fromhex("ab" * 32)  # derived, not the master key itself
    assert not (settings.data_dir / "keys" / KEY_FILE).exists()
