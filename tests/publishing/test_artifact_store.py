"""The artifact store is write-once, content-addressed, and encrypts at rest with per-artifact keys."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from infra.artifacts import ArtifactStore, parse_digest, sha256_file
from infra.errors import BadInput, Conflict, NotFound

MASTER = bytes(range(32))


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", key_dir=tmp_path / "keys")


def test_digest_is_sha256_of_content_and_blob_is_read_only(store: ArtifactStore) -> None:
    art = store.put_bytes(b"hello model")
    assert art.digest == "sha256:" + hashlib.sha256(b"hello model").hexdigest()
    assert art.size == len(b"hello model") and not art.encrypted
    assert stat.S_IMODE(art.path.stat().st_mode) == 0o444
    assert store.read_bytes(art.digest) == b"hello model"
    assert store.verify(art.digest)
    assert store.is_inside(art.path)


def test_same_content_twice_keeps_the_first_blob_untouched(store: ArtifactStore) -> None:
    first = store.put_bytes(b"v1")
    before = first.path.stat()
    second = store.put_bytes(b"v1")
    assert second.digest == first.digest and second.path == first.path
    after = first.path.stat()
    # Same file, same bytes: only its modification time moves (so garbage collection sees it in use).
    assert (before.st_ino, before.st_size) == (after.st_ino, after.st_size)
    assert after.st_mtime_ns >= before.st_mtime_ns
    other = store.put_bytes(b"v2")
    assert other.digest != first.digest
    assert store.read_bytes(first.digest) == b"v1"


def test_no_partial_files_are_left_behind(store: ArtifactStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * (1 << 20) + 17))
    art = store.put_file(big, encrypt=True)
    assert list((store.root / "tmp").iterdir()) == []
    assert art.size == big.stat().st_size
    assert sha256_file(big) == art.digest


def test_failed_stream_leaves_nothing(store: ArtifactStore) -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"x" * 10

    with pytest.raises(OSError):
        store.put_stream(Broken())  # type: ignore[arg-type]
    assert list((store.root / "tmp").iterdir()) == []
    assert [p for p in (store.root / "blobs").rglob("*") if p.is_file()] == []


def test_encrypted_blob_holds_no_plaintext_and_key_is_private(store: ArtifactStore) -> None:
    secret = b"proprietary weights " * 1000
    art = store.put_bytes(secret, encrypt=True)
    assert art.encrypted and art.path.name.endswith(".enc")
    raw = art.path.read_bytes()
    assert b"proprietary weights" not in raw
    key_file = store.key_dir / (parse_digest(art.digest) + ".key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not store.is_inside(key_file), "keys must not lie next to the blobs"
    assert store.read_bytes(art.digest) == secret
    assert store.locate(art.digest).size == len(secret)
    assert store.verify(art.digest)


def test_each_artifact_gets_its_own_key(store: ArtifactStore) -> None:
    a = store.put_bytes(b"a" * 100, encrypt=True)
    b = store.put_bytes(b"b" * 100, encrypt=True)
    ka = (store.key_dir / (parse_digest(a.digest) + ".key")).read_bytes()
    kb = (store.key_dir / (parse_digest(b.digest) + ".key")).read_bytes()
    assert ka != kb


def test_tampered_or_truncated_ciphertext_is_detected(store: ArtifactStore) -> None:
    art = store.put_bytes(os.urandom(2 * (1 << 20) + 5), encrypt=True)
    os.chmod(art.path, 0o644)
    data = bytearray(art.path.read_bytes())
    data[40] ^= 0xFF
    art.path.write_bytes(bytes(data))
    assert not store.verify(art.digest)
    with pytest.raises(Conflict, match="authentication"):
        store.read_bytes(art.digest)
    # Dropping the last chunk must not look like a shorter valid artifact.
    art2 = store.put_bytes(os.urandom(2 * (1 << 20) + 5), encrypt=True)
    os.chmod(art2.path, 0o644)
    raw = art2.path.read_bytes()
    art2.path.write_bytes(raw[: 13 + 2 * (4 + (1 << 20) + 16)])
    assert not store.verify(art2.digest)


def test_tampered_plain_blob_fails_verification(store: ArtifactStore, tmp_path: Path) -> None:
    art = store.put_bytes(b"original")
    os.chmod(art.path, 0o644)
    art.path.write_bytes(b"modified")
    assert not store.verify(art.digest)
    with pytest.raises(Conflict, match="corrupted"):
        store.export(art.digest, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


def test_master_key_wraps_per_artifact_keys(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "a", key_dir=tmp_path / "k", master_key=MASTER)
    art = store.put_bytes(b"secret", encrypt=True)
    key_body = (store.key_dir / (parse_digest(art.digest) + ".key")).read_bytes()
    assert key_body.startswith(b"MLRK-WRAP1")
    assert ArtifactStore(tmp_path / "a", key_dir=tmp_path / "k", master_key=MASTER).read_bytes(
        art.digest
    ) == (b"secret")
    with pytest.raises(Conflict, match="does not unwrap"):
        ArtifactStore(tmp_path / "a", key_dir=tmp_path / "k", master_key=bytes(32)).read_bytes(art.digest)
    with pytest.raises(Conflict, match="no master key"):
        ArtifactStore(tmp_path / "a", key_dir=tmp_path / "k").read_bytes(art.digest)


def test_missing_key_and_missing_artifact_are_clear(store: ArtifactStore) -> None:
    art = store.put_bytes(b"x", encrypt=True)
    (store.key_dir / (parse_digest(art.digest) + ".key")).unlink()
    with pytest.raises(NotFound, match="key"):
        store.read_bytes(art.digest)
    with pytest.raises(NotFound, match="not in the store"):
        store.read_bytes("sha256:" + "0" * 64)


@pytest.mark.parametrize("bad", ["md5:abc", "sha256:../../etc/passwd", "sha256:" + "A" * 64, "sha256:12"])
def test_malformed_digests_never_reach_the_filesystem(store: ArtifactStore, bad: str) -> None:
    with pytest.raises(BadInput):
        store.locate(bad)


def test_concurrent_writers_of_the_same_content_agree(store: ArtifactStore) -> None:
    payload = os.urandom(1 << 20)
    results = []

    def put() -> None:
        results.append(store.put_bytes(payload).digest)

    threads = [threading.Thread(target=put) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert store.verify(results[0])
    assert list((store.root / "tmp").iterdir()) == []
