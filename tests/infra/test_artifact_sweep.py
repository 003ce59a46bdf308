"""The artifact store's sweep (``infra.artifact_gc``) on real files: what goes, what stays, and the
writer that reuses an old blob while a collection runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from infra.artifact_gc import remove_if_still_old, sweep
from infra.artifacts import ArtifactStore, refresh

GRACE_S = 3600


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts", key_dir=tmp_path / "keys")


def age(path: Path, seconds: float = 2 * GRACE_S) -> None:
    """Make ``path`` look written ``seconds`` ago (what a blob of a crash last week looks like)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def cutoff() -> float:
    return time.time() - GRACE_S


def test_dry_run_reports_garbage_and_deletes_nothing(store: ArtifactStore) -> None:
    old = store.put_bytes(b"abandoned package")
    age(old.path)
    report = sweep(store, set(), cutoff(), delete=False)
    assert (report.garbage.files, report.garbage.bytes) == (1, len(b"abandoned package"))
    assert report.garbage_digests == [old.digest]
    assert report.deleted is False
    assert store.exists(old.digest)


def test_unreferenced_old_blobs_go_referenced_and_young_ones_stay(store: ArtifactStore) -> None:
    kept, gone, young = (store.put_bytes(b) for b in (b"listed", b"crashed outputs", b"being published"))
    age(kept.path)
    age(gone.path)
    report = sweep(store, {kept.digest}, cutoff(), delete=True)
    assert report.garbage_digests == [gone.digest]
    assert (report.referenced.files, report.young.files, report.garbage.files) == (1, 1, 1)
    assert store.exists(kept.digest) and store.exists(young.digest)
    assert not store.exists(gone.digest)
    assert not list((store.root / "tmp").iterdir())  # the renamed-aside copy is gone too


def test_an_encrypted_blob_goes_with_its_key_and_a_referenced_one_keeps_it(store: ArtifactStore) -> None:
    gone = store.put_bytes(b"secret, deleted listing", encrypt=True)
    kept = store.put_bytes(b"secret, listed", encrypt=True)
    for art in (gone, kept):
        age(art.path)
        age(store._key_path(art.digest))
    report = sweep(store, {kept.digest}, cutoff(), delete=True)
    assert report.garbage_digests == [gone.digest]
    assert report.keys.files == 1
    assert not store._key_path(gone.digest).exists()
    assert store.read_bytes(kept.digest) == b"secret, listed"


def test_a_young_key_without_its_blob_stays(store: ArtifactStore) -> None:
    """A writer creates the key before it links the encrypted blob into place."""
    art = store.put_bytes(b"being encrypted", encrypt=True)
    art.path.unlink()
    assert sweep(store, set(), cutoff(), delete=True).keys.files == 0
    assert store._key_path(art.digest).exists()


def test_storing_content_that_is_already_there_makes_the_old_blob_young(store: ArtifactStore) -> None:
    """Deduplication: a writer about to reference an old unreferenced blob must not lose it."""
    old = store.put_bytes(b"same bytes, published again")
    age(old.path)
    again = store.put_bytes(b"same bytes, published again")
    assert again.digest == old.digest
    report = sweep(store, set(), cutoff(), delete=True)
    assert report.garbage.files == 0
    assert store.read_bytes(old.digest) == b"same bytes, published again"


def test_reusing_an_old_key_makes_it_young(store: ArtifactStore) -> None:
    """A writer re-encrypting content whose old key exists reuses the key before its blob is in place:
    a sweep between the two would otherwise see an old key with no blob and take it."""
    art = store.put_bytes(b"re-encrypted", encrypt=True)
    art.path.unlink()  # the blob went (say, collected), its key is old
    key = store._key_path(art.digest)
    age(key)
    store.put_bytes(b"re-encrypted", encrypt=True)  # reuses the key file
    assert key.stat().st_mtime >= cutoff()
    art.path.unlink()  # as if the sweep ran before the blob was linked: the young key still stays
    sweep(store, set(), cutoff(), delete=True)
    assert key.exists()


def test_a_file_refreshed_before_the_removal_is_put_back(store: ArtifactStore) -> None:
    """The sweep saw it old; a writer refreshed it before the rename: the second look keeps it."""
    art = store.put_bytes(b"reused just now")
    assert refresh(art.path)
    assert remove_if_still_old(art.path, cutoff(), store.root / "tmp") is False
    assert store.read_bytes(art.digest) == b"reused just now"


def test_a_writer_that_refreshes_a_removed_blob_stores_it_again(store: ArtifactStore) -> None:
    art = store.put_bytes(b"collected")
    age(art.path)
    assert remove_if_still_old(art.path, cutoff(), store.root / "tmp") is True
    assert refresh(art.path) is False
    assert store.put_bytes(b"collected").path.exists()


def test_stale_partial_writes_go_live_ones_stay(store: ArtifactStore) -> None:
    stale = store.root / "tmp" / "in-crashed"
    stale.write_bytes(b"x" * 100)
    age(stale)
    live = store.root / "tmp" / "in-uploading"
    live.write_bytes(b"y")
    stale_key = store.key_dir / ".k-crashed"
    stale_key.write_bytes(b"k")
    age(stale_key)
    report = sweep(store, set(), cutoff(), delete=True)
    assert (report.partial.files, report.partial.bytes) == (2, 101)
    assert not stale.exists() and not stale_key.exists() and live.exists()


def test_files_that_are_not_blobs_are_left_alone(store: ArtifactStore) -> None:
    stray = store.root / "blobs" / "sha256" / "ab" / "README"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("not a digest")
    age(stray)
    assert sweep(store, set(), cutoff(), delete=True).garbage.files == 0
    assert stray.exists()
