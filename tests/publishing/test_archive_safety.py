"""Every malicious archive is built here for real and must be rejected with its named reason."""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from publishing_support import targz_bytes

from catalog.publishing.archive_safety import (
    ArchiveLimits,
    UnsafeArchive,
    check_member_name,
    detect_format,
    extract_archive,
    staged_extraction,
    verify_file_checksums,
)

LIMITS = ArchiveLimits()


# ----------------------------------------------------------------------------- archive builders


def make_zip(path: Path, members: list[tuple[str, bytes]], mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True) -> Path:
    path.write_bytes(targz_bytes(members, gz))
    return path


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def assert_rejected(archive: Path, dest: Path, reason: str, limits: ArchiveLimits = LIMITS) -> UnsafeArchive:
    with pytest.raises(UnsafeArchive) as caught:
        extract_archive(archive, dest, limits)
    assert caught.value.reason == reason, caught.value.message
    assert caught.value.code == "BAD_INPUT"
    assert not dest.exists(), "a rejected archive must leave no staging directory behind"
    return caught.value


GOOD = [("pkg/mlrepo.json", b'{"name": "x"}'), ("pkg/predict.py", b"print('hi')\n")]


# ----------------------------------------------------------------------------- good archives


@pytest.mark.parametrize("fmt", ["zip", "tar.gz", "tar"])
def test_a_clean_package_extracts_with_checksums(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "upload"
    if fmt == "zip":
        make_zip(src, GOOD)
    else:
        make_tar(src, list(GOOD), gz=fmt == "tar.gz")
    report = extract_archive(src, tmp_path / "out")
    assert report.format == fmt
    assert (tmp_path / "out/pkg/predict.py").read_text() == "print('hi')\n"
    assert report.files["pkg/predict.py"] == "sha256:" + hashlib.sha256(b"print('hi')\n").hexdigest()
    assert report.total_bytes == sum(len(d) for _, d in GOOD)
    assert report.archive_digest == "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    mode = stat.S_IMODE((tmp_path / "out/pkg/predict.py").stat().st_mode)
    assert mode == 0o644


def test_setuid_bits_are_never_applied_but_exec_bit_is_kept(tmp_path: Path) -> None:
    info = tarfile.TarInfo("run.sh")
    info.size = 3
    info.mode = 0o4755
    src = tmp_path / "a.tar.gz"
    with tarfile.open(src, "w:gz") as tf:
        tf.addfile(info, io.BytesIO(b"ls\n"))
    extract_archive(src, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/run.sh").stat().st_mode) == 0o755


def test_small_repetitive_files_are_not_called_bombs(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", [("zeros.txt", b"0" * 500_000)])
    report = extract_archive(src, tmp_path / "out")
    assert report.total_bytes == 500_000


def test_staged_extraction_always_cleans_up(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", GOOD)
    with staged_extraction(src, tmp_path / "staging") as (root, report):
        assert (root / "pkg/mlrepo.json").exists()
        assert len(report.files) == 2
    assert list((tmp_path / "staging").iterdir()) == []


# ----------------------------------------------------------------------------- path rules


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.py", "path-traversal"),
        ("pkg/../../evil.py", "path-traversal"),
        ("/etc/cron.d/evil", "absolute-path"),
        ("\\windows\\evil", "absolute-path"),
        ("C:/evil", "absolute-path"),
        ("pkg\\..\\evil", "bad-name"),
        ("pkg/ev\x00il", "bad-name"),
        ("", "bad-name"),
        ("/".join(["d"] * 40) + "/f", "bad-name"),
    ],
)
def test_member_name_rules(name: str, reason: str) -> None:
    with pytest.raises(UnsafeArchive) as caught:
        check_member_name(name, LIMITS)
    assert caught.value.reason == reason


def test_member_names_are_normalized() -> None:
    assert str(check_member_name("./pkg//a.py", LIMITS)) == "pkg/a.py"
    assert str(check_member_name("pkg/dir/", LIMITS)) == "pkg/dir"


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_path_traversal_is_rejected(tmp_path: Path, fmt: str) -> None:
    members = [*GOOD, ("../../escaped.py", b"import os")]
    src = make_zip(tmp_path / "a", members) if fmt == "zip" else make_tar(tmp_path / "a", list(members))
    err = assert_rejected(src, tmp_path / "out", "path-traversal")
    assert "escaped.py" in err.message
    assert not (tmp_path / "escaped.py").exists() and not (tmp_path.parent / "escaped.py").exists()


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_absolute_path_is_rejected(tmp_path: Path, fmt: str) -> None:
    target = str(tmp_path / "abs-target.py")
    members = [(target, b"x")]
    src = make_zip(tmp_path / "a", members) if fmt == "zip" else make_tar(tmp_path / "a", list(members))
    assert_rejected(src, tmp_path / "out", "absolute-path")
    assert not Path(target).exists()


# ----------------------------------------------------------------------------- links and special files


def test_tar_symlink_out_of_the_tree_is_rejected(tmp_path: Path) -> None:
    src = make_tar(tmp_path / "a.tgz", [tar_entry("pkg/passwd", tarfile.SYMTYPE, "/etc/passwd"), *GOOD])
    err = assert_rejected(src, tmp_path / "out", "link")
    assert "/etc/passwd" in err.message


def test_tar_symlink_then_write_through_it_is_rejected(tmp_path: Path) -> None:
    # The classic two-step escape: a link to a directory outside, then a file "inside" that link.
    src = make_tar(
        tmp_path / "a.tgz",
        [tar_entry("pkg/out", tarfile.SYMTYPE, str(tmp_path)), ("pkg/out/pwned.txt", b"x")],
    )
    assert_rejected(src, tmp_path / "out", "link")
    assert not (tmp_path / "pwned.txt").exists()


def test_tar_hardlink_is_rejected(tmp_path: Path) -> None:
    src = make_tar(tmp_path / "a.tgz", [*GOOD, tar_entry("pkg/shadow", tarfile.LNKTYPE, "/etc/shadow")])
    assert_rejected(src, tmp_path / "out", "link")


def test_zip_symlink_is_rejected(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", [("pkg/link", b"/etc/passwd")], mode=stat.S_IFLNK | 0o777)
    assert_rejected(src, tmp_path / "out", "link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_device_files_and_fifos_are_rejected(tmp_path: Path, kind: bytes) -> None:
    entry = tar_entry("pkg/dev", kind)
    entry.devmajor, entry.devminor = 1, 3
    src = make_tar(tmp_path / "a.tgz", [*GOOD, entry])
    assert_rejected(src, tmp_path / "out", "special-file")


def test_zip_device_file_is_rejected(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", [("pkg/null", b"")], mode=stat.S_IFCHR | 0o666)
    assert_rejected(src, tmp_path / "out", "special-file")


# ----------------------------------------------------------------------------- duplicates


def test_duplicate_member_is_rejected(tmp_path: Path) -> None:
    src = make_tar(tmp_path / "a.tgz", [("pkg/predict.py", b"good"), ("pkg/predict.py", b"evil")])
    assert_rejected(src, tmp_path / "out", "duplicate")


def test_file_then_directory_of_the_same_name_is_rejected(tmp_path: Path) -> None:
    src = make_tar(tmp_path / "a.tgz", [("pkg/a", b"file"), ("pkg/a/b", b"under a file")])
    assert_rejected(src, tmp_path / "out", "duplicate")


# ----------------------------------------------------------------------------- size limits and bombs


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_too_many_files_is_rejected(tmp_path: Path, fmt: str) -> None:
    members = [(f"f{i}.txt", b"x") for i in range(30)]
    src = make_zip(tmp_path / "a", members) if fmt == "zip" else make_tar(tmp_path / "a", list(members))
    assert_rejected(src, tmp_path / "out", "too-many-files", ArchiveLimits(max_files=25))


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_too_many_unpacked_bytes_is_rejected(tmp_path: Path, fmt: str) -> None:
    import os

    members = [("a.bin", os.urandom(40_000)), ("b.bin", os.urandom(40_000))]
    src = make_zip(tmp_path / "a", members) if fmt == "zip" else make_tar(tmp_path / "a", list(members))
    assert_rejected(src, tmp_path / "out", "too-large", ArchiveLimits(max_unpacked_bytes=50_000))


def test_zip_bomb_is_rejected_before_writing(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "bomb.zip", [("zeros.bin", b"\0" * (20 << 20))])
    assert src.stat().st_size < 100_000
    err = assert_rejected(src, tmp_path / "out", "compression-ratio")
    assert "zip bomb" in err.message


def test_nested_zip_bomb_inner_layer_is_not_expanded(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip", [("zeros.bin", b"\0" * (5 << 20))]).read_bytes()
    src = make_zip(tmp_path / "outer.zip", [(f"layer{i}.zip", inner) for i in range(3)])
    report = extract_archive(src, tmp_path / "out")
    # Inner archives are stored as opaque files, never recursively unpacked.
    assert set(report.files) == {"layer0.zip", "layer1.zip", "layer2.zip"}


def test_gzip_bomb_tar_is_rejected_while_streaming(tmp_path: Path) -> None:
    src = make_tar(tmp_path / "bomb.tgz", [("zeros.bin", b"\0" * (30 << 20))])
    assert src.stat().st_size < 100_000
    assert_rejected(src, tmp_path / "out", "compression-ratio")


def test_unpacked_total_is_counted_across_members_while_writing(tmp_path: Path) -> None:
    # Each member is within the limit on its own; the running total crosses it while writing.
    members = [("a.bin", b"a" * 30_000), ("b.bin", b"b" * 30_000)]
    src = make_tar(tmp_path / "a.tgz", list(members), gz=False)
    assert_rejected(
        src,
        tmp_path / "out",
        "too-large",
        ArchiveLimits(max_unpacked_bytes=40_000, max_compression_ratio=1e9),
    )


# ----------------------------------------------------------------------------- checksums and corruption


def test_declared_upload_digest_must_match(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", GOOD)
    with pytest.raises(UnsafeArchive) as caught:
        extract_archive(src, tmp_path / "out", expected_digest="sha256:" + "0" * 64)
    assert caught.value.reason == "checksum"
    good = "sha256:" + hashlib.sha256(src.read_bytes()).hexdigest()
    assert extract_archive(src, tmp_path / "out", expected_digest=good).archive_digest == good


def test_zip_crc_mismatch_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "a.zip"
    with zipfile.ZipFile(src, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("data.txt", b"A" * 1000)
    raw = bytearray(src.read_bytes())
    at = raw.index(b"A" * 1000)
    raw[at + 10] = ord("B")  # flip stored content; the CRC in the headers no longer matches
    src.write_bytes(bytes(raw))
    assert_rejected(src, tmp_path / "out", "checksum")


def test_gzip_crc_mismatch_is_rejected(tmp_path: Path) -> None:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tf:
        info = tarfile.TarInfo("data.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    gz = bytearray(gzip.compress(tar_bytes.getvalue()))
    gz[-8] ^= 0xFF  # corrupt the CRC-32 in the gzip trailer
    src = tmp_path / "a.tgz"
    src.write_bytes(bytes(gz))
    assert_rejected(src, tmp_path / "out", "checksum")


def test_manifest_file_checksums_are_verified(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", GOOD)
    report = extract_archive(src, tmp_path / "out")
    good = {"pkg/predict.py": "sha256:" + hashlib.sha256(b"print('hi')\n").hexdigest()}
    verify_file_checksums(report, good)
    with pytest.raises(UnsafeArchive, match="manifest says"):
        verify_file_checksums(report, {"pkg/predict.py": "sha256:" + "1" * 64})
    with pytest.raises(UnsafeArchive, match="missing"):
        verify_file_checksums(report, {"pkg/absent.py": "sha256:" + "1" * 64})


@pytest.mark.parametrize(
    "payload", [b"not an archive at all", b"PK\x03\x04truncated", b"\x1f\x8b\x08garbage"]
)
def test_corrupt_uploads_are_rejected(tmp_path: Path, payload: bytes) -> None:
    src = tmp_path / "upload"
    src.write_bytes(payload)
    with pytest.raises(UnsafeArchive) as caught:
        extract_archive(src, tmp_path / "out")
    assert caught.value.reason in {"corrupt", "checksum"}
    assert not (tmp_path / "out").exists()


def test_format_is_detected_by_content_not_name(tmp_path: Path) -> None:
    assert detect_format(b"PK\x03\x04rest") == "zip"
    tgz = make_tar(tmp_path / "a.tgz", list(GOOD)).read_bytes()
    assert detect_format(tgz[:512]) == "tar.gz"
    # One gzipped file (a dataset's .jsonl.gz) is not a tar.gz: it was refused as an unreadable tar.
    assert detect_format(gzip.compress(b'{"input": "a"}\n' * 100)[:512]) == "gz"
    with pytest.raises(UnsafeArchive):
        detect_format(b"#!/bin/sh")


# ----------------------------------------------------------------------------- one gzipped file


def test_a_gzipped_file_extracts_as_one_member(tmp_path: Path) -> None:
    """A dataset's .jsonl.gz was taken for a tar.gz and refused as an unreadable tar."""
    data = b'{"input": "good"}\n' * 1000
    src = tmp_path / "data.jsonl.gz"
    src.write_bytes(gzip.compress(data))
    report = extract_archive(src, tmp_path / "out")
    assert report.format == "gz" and list(report.files) == ["data"]
    assert (tmp_path / "out" / "data").read_bytes() == data


def test_a_gzipped_file_keeps_the_archive_limits(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"\n" * (30 << 20)))
    assert bomb.stat().st_size < 100_000
    assert_rejected(bomb, tmp_path / "out", "compression-ratio")
    big = tmp_path / "big.jsonl.gz"
    big.write_bytes(gzip.compress(b'"x"\n' * 20_000))
    assert_rejected(big, tmp_path / "out", "too-large", ArchiveLimits(max_unpacked_bytes=40_000))
    broken = bytearray(gzip.compress(b'"x"\n' * 100))
    broken[-8] ^= 0xFF  # the CRC-32 in the trailer
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(bytes(broken))
    assert_rejected(corrupt, tmp_path / "out", "checksum")
