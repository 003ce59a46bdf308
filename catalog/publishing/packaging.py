"""Normalize an extracted code package into one deterministic tar.gz, and unpack it again to run it.

Why normalize: producers upload zips or tarballs made on any machine, with timestamps, owners and odd
modes. The stored package is a gzip'd tar with sorted entries, zero timestamps and owners and modes of
0644/0755 only, so the same code always has the same digest (re-uploads dedupe in the content-addressed
store) and nothing from the producer's machine (uids, set-uid bits) survives.
"""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

from catalog.publishing.archive_safety import ArchiveLimits, ExtractionReport, extract_archive
from infra.artifacts import ArtifactStore

# Artifact kinds stored as a normalized code package (a notebook is packaged with its runner).
PACKAGED_KINDS = frozenset({"package", "notebook"})


def _entries(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        found += [base / d for d in dirnames]
        found += [base / f for f in sorted(filenames)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def normalize_package(package_root: Path, dest: Path) -> Path:
    """Write ``package_root``'s tree to ``dest`` as a deterministic tar.gz (no links may be present)."""
    with open(dest, "wb") as raw:
        with (
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            for path in _entries(package_root):
                rel = path.relative_to(package_root).as_posix()
                info = tarfile.TarInfo(rel)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if path.is_symlink():
                    raise ValueError(f"{rel} is a link; packages hold regular files only")
                if path.is_dir():
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    continue
                info.size = path.stat().st_size
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
        raw.flush()
        os.fsync(raw.fileno())
    return dest


def unpack_package(package: Path, dest: Path, limits: ArchiveLimits | None = None) -> ExtractionReport:
    """Unpack a stored package (still through the safety checks: the store is not trusted blindly)."""
    return extract_archive(package, dest, limits)


def checkout_package(
    store: ArtifactStore, digest: str, dest: Path, limits: ArchiveLimits | None = None
) -> Path:
    """A private, runnable copy of a published package (decrypted if stored encrypted) under ``dest``.

    This is how anything runs a published code package (re-verification, the executor's bwrap runtime):
    the stored blob is exported with its digest checked, then unpacked through the safety checks into
    ``dest/app``; ``dest`` belongs to the caller, who removes it.
    """
    archive = store.export(digest, dest / "package.tar.gz")
    try:
        unpack_package(archive, dest / "app", limits)
    finally:
        archive.unlink(missing_ok=True)
    return dest / "app"
