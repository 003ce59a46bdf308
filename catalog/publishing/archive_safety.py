"""Safe extraction of producers' zip and tar(.gz) uploads into a private staging directory.

Why this exists: an uploaded archive is attacker-controlled. Python's ``zipfile``/``tarfile`` will happily
write through ``../``, absolute paths and links, create device nodes, or inflate a few kilobytes into
gigabytes. Every member is therefore checked *before* anything is written, and sizes are counted while
writing (declared sizes can lie), so an unsafe archive is rejected with a named reason and its partial
output is removed.

Policy (each violation raises ``UnsafeArchive`` with a ``reason`` code):
- ``path-traversal``: a member path with a ``..`` component;
- ``absolute-path``: a member path starting with ``/``, ``\\`` or a drive letter;
- ``bad-name``: empty names, NUL/control characters, backslashes, over-long paths or too-deep nesting;
- ``link``: any symlink or hardlink. Links are rejected outright — even ones pointing inside the tree —
  because a code package never needs them and "inside" depends on extraction order;
- ``special-file``: device files, FIFOs and sockets;
- ``duplicate``: the same path twice (a later member would silently replace a checked one), or a file
  where a directory is needed;
- ``encrypted``: password-protected zip members (they cannot be inspected);
- ``too-many-files``: more than ``limits.max_files`` members;
- ``too-large``: more than ``limits.max_unpacked_bytes`` unpacked;
- ``compression-ratio``: unpacked/packed above ``limits.max_compression_ratio`` (a zip bomb), judged per
  member and for the whole archive once past a small grace size (tiny, highly repetitive text is fine);
- ``checksum``: the upload's SHA-256 differs from the one the producer declared, a zip CRC-32 or gzip
  CRC mismatch, or a file differs from the checksum the manifest lists for it;
- ``corrupt``: not a readable zip/tar/tar.gz.

Extracted files get mode 0644 (0755 when the member was executable); set-uid/set-gid bits and ownership
from the archive are never applied.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from infra.errors import BadInput

_CHUNK = 1 << 16
GZIPPED_FILE = "gz"  # one gzipped file, not an archive of several
GZIPPED_MEMBER = "data"  # the name it is extracted under (a gzip header's own name is not trusted)
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeArchive(BadInput):
    """An archive that cannot be extracted safely; ``reason`` names the rule it broke."""

    def __init__(self, reason: str, message: str, member: str | None = None) -> None:
        super().__init__(f"unsafe archive ({reason}): {message}", reason=reason, member=member)
        self.reason = reason
        self.member = member


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int = 10_000
    max_unpacked_bytes: int = 1 << 30
    max_compression_ratio: float = 100.0
    ratio_grace_bytes: int = 1 << 20  # below this many unpacked bytes the ratio is not judged
    max_path_length: int = 1024
    max_path_depth: int = 32

    @classmethod
    def from_settings(cls, settings) -> ArchiveLimits:  # type: ignore[no-untyped-def]
        return cls(
            max_files=settings.publish_max_files,
            max_unpacked_bytes=settings.publish_max_unpacked_bytes,
            max_compression_ratio=settings.publish_max_compression_ratio,
        )


@dataclass
class ExtractionReport:
    format: str  # zip | tar | tar.gz | gz (one gzipped file)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> "sha256:<hex>"
    total_bytes: int = 0
    archive_bytes: int = 0
    archive_digest: str = ""


# ------------------------------------------------------------------------------------ pure checks


def check_member_name(name: str, limits: ArchiveLimits) -> PurePosixPath:
    """Validate one member path and return it normalized (no ``.`` parts, no trailing slash)."""
    if not name or name in (".", "./"):
        raise UnsafeArchive("bad-name", "empty member name", name)
    if _CONTROL.search(name):
        raise UnsafeArchive("bad-name", "member name contains control characters", repr(name))
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise UnsafeArchive("absolute-path", f"member {name!r} has an absolute path", name)
    if "\\" in name:
        raise UnsafeArchive("bad-name", f"member {name!r} contains a backslash", name)
    if len(name) > limits.max_path_length:
        raise UnsafeArchive("bad-name", f"member path longer than {limits.max_path_length}", name[:80])
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive("path-traversal", f"member {name!r} escapes the package with '..'", name)
    if not parts:
        raise UnsafeArchive("bad-name", f"member {name!r} names no file", name)
    if len(parts) > limits.max_path_depth:
        raise UnsafeArchive(
            "bad-name", f"member {name!r} is nested deeper than {limits.max_path_depth}", name
        )
    return PurePosixPath(*parts)


def check_ratio(unpacked: int, packed: int, limits: ArchiveLimits, what: str) -> None:
    """Reject zip-bomb ratios; small outputs are exempt so tiny repetitive files stay publishable."""
    if unpacked <= limits.ratio_grace_bytes:
        return
    ratio = unpacked / max(packed, 1)
    if ratio > limits.max_compression_ratio:
        raise UnsafeArchive(
            "compression-ratio",
            f"{what} expands {ratio:.0f}x (limit {limits.max_compression_ratio:.0f}x): a zip bomb",
        )


def detect_format(head: bytes) -> str:
    """Recognize the archive by its magic bytes, never by the producer's file name. A gzip stream is a
    tar.gz when what it starts with is a tar header, else one gzipped file (``GZIPPED_FILE``, e.g. a
    dataset's ``.jsonl.gz``)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz" if _is_tar(_gunzip_head(head)) else GZIPPED_FILE
    if _is_tar(head):
        return "tar"
    raise UnsafeArchive("corrupt", "not a zip, tar or tar.gz archive")


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _gunzip_head(head: bytes) -> bytes:
    """What the first bytes of a gzip stream decompress to (a tar header needs 262), as far as they go."""
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 512)
    except zlib.error:
        return b""  # unreadable: left to the extraction, which names the reason


# ------------------------------------------------------------------------------------ extraction


class _Writer:
    """Writes members under ``root`` and keeps the running totals the limits are checked against."""

    def __init__(self, root: Path, limits: ArchiveLimits, archive_bytes: int, fmt: str) -> None:
        self.root = root
        self.limits = limits
        self.report = ExtractionReport(format=fmt, archive_bytes=archive_bytes)
        self.dirs: set[PurePosixPath] = set()
        self.count = 0

    def count_member(self, name: str) -> None:
        self.count += 1
        if self.count > self.limits.max_files:
            raise UnsafeArchive("too-many-files", f"more than {self.limits.max_files} entries", name)

    def _claim_parents(self, rel: PurePosixPath) -> None:
        for parent in reversed(rel.parents):
            if parent == PurePosixPath("."):
                continue
            if str(parent) in self.report.files:
                raise UnsafeArchive("duplicate", f"{parent} is both a file and a directory", str(rel))
            self.dirs.add(parent)

    def add_dir(self, rel: PurePosixPath) -> None:
        if str(rel) in self.report.files:
            raise UnsafeArchive("duplicate", f"{rel} is both a file and a directory", str(rel))
        self._claim_parents(rel)
        self.dirs.add(rel)
        target = self.root / rel
        target.mkdir(mode=0o755, parents=True, exist_ok=True)

    def add_file(
        self, rel: PurePosixPath, source: BinaryIO, executable: bool, packed_size: int | None
    ) -> None:
        key = str(rel)
        if key in self.report.files or rel in self.dirs:
            raise UnsafeArchive("duplicate", f"{key} appears more than once", key)
        self._claim_parents(rel)
        target = self.root / rel
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        # O_EXCL|O_NOFOLLOW: even if a check above were wrong, nothing existing is overwritten or followed.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        digest = hashlib.sha256()
        written = 0
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.report.total_bytes += len(chunk)
                if self.report.total_bytes > self.limits.max_unpacked_bytes:
                    raise UnsafeArchive(
                        "too-large", f"unpacks to more than {self.limits.max_unpacked_bytes} bytes", key
                    )
                if packed_size is not None:
                    check_ratio(written, packed_size, self.limits, f"member {key}")
                check_ratio(self.report.total_bytes, self.report.archive_bytes, self.limits, "the archive")
                digest.update(chunk)
                out.write(chunk)
        os.chmod(target, 0o755 if executable else 0o644)
        self.report.files[key] = "sha256:" + digest.hexdigest()


def _zip_members(path: Path, writer: _Writer) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchive("corrupt", f"unreadable zip: {exc}") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > writer.limits.max_files:
            raise UnsafeArchive("too-many-files", f"{len(infos)} entries (limit {writer.limits.max_files})")
        declared = 0
        for info in infos:  # inspect everything before writing anything
            rel = check_member_name(info.filename, writer.limits)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchive("link", f"{info.filename} is a symbolic link", info.filename)
            # Zip writers often store permission bits only (no file type): that counts as a regular file.
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafeArchive("special-file", f"{info.filename} is not a regular file", info.filename)
            if info.flag_bits & 0x1:
                raise UnsafeArchive("encrypted", f"{info.filename} is password-protected", info.filename)
            if not info.is_dir():
                check_ratio(info.file_size, info.compress_size, writer.limits, f"member {rel}")
            declared += info.file_size
        if declared > writer.limits.max_unpacked_bytes:
            raise UnsafeArchive(
                "too-large", f"declares {declared} unpacked bytes (limit {writer.limits.max_unpacked_bytes})"
            )
        check_ratio(declared, writer.report.archive_bytes, writer.limits, "the archive")
        for info in infos:
            writer.count_member(info.filename)
            rel = check_member_name(info.filename, writer.limits)
            if info.is_dir():
                writer.add_dir(rel)
                continue
            executable = bool((info.external_attr >> 16) & 0o111)
            try:
                with archive.open(info) as source:
                    writer.add_file(rel, source, executable, info.compress_size)
            except zipfile.BadZipFile as exc:  # CRC-32 mismatch is raised here
                raise UnsafeArchive("checksum", f"{info.filename}: {exc}", info.filename) from exc
            except (zlib.error, EOFError) as exc:
                raise UnsafeArchive("corrupt", f"{info.filename}: {exc}", info.filename) from exc


def _tar_members(path: Path, writer: _Writer, compressed: bool) -> None:
    # Stream mode (r|): one pass, members checked one by one before their data is written; sizes are
    # counted while writing, so a lying header cannot get past the limits. gzip.GzipFile (not tarfile's
    # own gzip reader) is used because it verifies the CRC-32 and length trailer; the stream is drained
    # to its end so that check always runs.
    with open(path, "rb") as raw:
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw  # type: ignore[assignment]
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    _check_tar_member(member, writer)
                    rel = check_member_name(member.name, writer.limits)
                    if member.isdir():
                        writer.add_dir(rel)
                        continue
                    source = archive.extractfile(member)
                    assert source is not None
                    writer.add_file(rel, source, bool(member.mode & 0o111), None)
            while stream.read(_CHUNK):
                pass
        except UnsafeArchive:
            raise
        except gzip.BadGzipFile as exc:
            raise UnsafeArchive("checksum", f"gzip stream failed its check: {exc}") from exc
        except (tarfile.TarError, EOFError, zlib.error, OSError, TypeError, ValueError) as exc:
            raise UnsafeArchive("corrupt", f"unreadable tar: {exc}") from exc


def _gzipped_file(path: Path, writer: _Writer) -> None:
    """One gzipped file, decompressed under the same limits as an archive's members (total size, and
    the expansion ratio a gzip bomb gives away); GzipFile checks the CRC-32 and length trailer."""
    writer.count_member(GZIPPED_MEMBER)
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        try:
            writer.add_file(PurePosixPath(GZIPPED_MEMBER), stream, False, path.stat().st_size)  # type: ignore[arg-type]
        except gzip.BadGzipFile as exc:
            raise UnsafeArchive("checksum", f"gzip stream failed its check: {exc}") from exc
        except (EOFError, zlib.error, OSError) as exc:
            raise UnsafeArchive("corrupt", f"unreadable gzip file: {exc}") from exc


def _check_tar_member(member: tarfile.TarInfo, writer: _Writer) -> None:
    writer.count_member(member.name)
    check_member_name(member.name, writer.limits)
    if member.issym() or member.islnk():
        raise UnsafeArchive("link", f"{member.name} is a link to {member.linkname!r}", member.name)
    if member.isdev() or not (member.isfile() or member.isdir()):
        raise UnsafeArchive("special-file", f"{member.name} is a device, FIFO or special file", member.name)
    if member.size > writer.limits.max_unpacked_bytes:
        raise UnsafeArchive("too-large", f"{member.name} declares {member.size} bytes", member.name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def extract_archive(
    archive: Path,
    dest: Path,
    limits: ArchiveLimits | None = None,
    expected_digest: str | None = None,
) -> ExtractionReport:
    """Extract ``archive`` into the new, empty directory ``dest``; on any failure ``dest`` is removed.

    ``expected_digest`` ("sha256:<hex>") is the checksum the producer declared for the upload.
    """
    limits = limits or ArchiveLimits()
    archive = Path(archive)
    dest = Path(dest)
    digest = _sha256(archive)
    if expected_digest is not None and expected_digest.lower() != digest:
        raise UnsafeArchive("checksum", f"upload digest {digest} differs from the declared {expected_digest}")
    with open(archive, "rb") as f:
        fmt = detect_format(f.read(512))
    dest.mkdir(mode=0o700, parents=True, exist_ok=False)
    writer = _Writer(dest, limits, archive.stat().st_size, fmt)
    writer.report.archive_digest = digest
    try:
        if fmt == "zip":
            _zip_members(archive, writer)
        elif fmt == GZIPPED_FILE:
            _gzipped_file(archive, writer)
        else:
            _tar_members(archive, writer, compressed=fmt == "tar.gz")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return writer.report


def verify_file_checksums(report: ExtractionReport, expected: dict[str, str]) -> None:
    """Compare files against the checksums a manifest lists (``{"path": "sha256:<hex>"}``)."""
    for name, want in sorted(expected.items()):
        got = report.files.get(str(PurePosixPath(name)))
        if got is None:
            raise UnsafeArchive("checksum", f"{name} is listed in the manifest checksums but missing", name)
        if got != want.lower():
            raise UnsafeArchive("checksum", f"{name} has digest {got}, the manifest says {want}", name)


@contextmanager
def staged_extraction(
    archive: Path, staging_root: Path, limits: ArchiveLimits | None = None, expected_digest: str | None = None
) -> Iterator[tuple[Path, ExtractionReport]]:
    """Extract into a fresh directory under ``staging_root`` and always remove it afterwards."""
    staging_root.mkdir(parents=True, exist_ok=True)
    dest = staging_root / f"x-{os.urandom(8).hex()}"
    report = extract_archive(archive, dest, limits, expected_digest)
    try:
        yield dest, report
    finally:
        shutil.rmtree(dest, ignore_errors=True)
