"""Immutable, content-addressed artifact store.

Why content-addressed: a published version points at a digest, so what a requester runs is exactly what
was tested and verified, and any later change to the bytes is detectable (``verify``). Why immutable: an
existing blob is never opened for writing again — new content gets a new digest, so earlier versions of a
listing can never be altered by a later publish.

Layout under ``root`` (``Settings.artifact_dir``)::

    blobs/sha256/ab/<hex>        plain blob, mode 0444
    blobs/sha256/ab/<hex>.enc    encrypted blob, mode 0444
    tmp/                         partial writes (renamed into place only when complete)

The digest is always the SHA-256 of the *plaintext*, so encrypted and plain artifacts are addressed the
same way and ``verify`` proves the decrypted content is the original.

Encryption at rest (optional, per artifact): each encrypted artifact gets its own random 256-bit
AES-GCM key. Keys never live next to the blobs: they are written to ``key_dir`` (default
``<data_dir>/keys``, a separate directory that can be placed on another volume), one file per digest with
mode 0600. When a master key is configured (``MLREPO_ARTIFACT_MASTER_KEY``, 32 bytes hex), each key file
holds the per-artifact key *wrapped* (AES-GCM encrypted) with the master key, so a copy of the keys
directory alone does not decrypt anything. Ciphertext is written in 1 MiB chunks (nonce prefix + chunk
counter, the chunk index and a final-chunk flag authenticated as associated data) so memory stays bounded
and truncation or reordering of chunks is detected.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.errors import BadInput, Conflict, NotFound

DIGEST_PREFIX = "sha256:"
CHUNK_SIZE = 1 << 20
_MAGIC = b"MLRA1"
_KEY_MAGIC_PLAIN = b"MLRK-PLAIN1"
_KEY_MAGIC_WRAPPED = b"MLRK-WRAP1"
_BLOB_MODE = 0o444
_KEY_MODE = 0o600


@dataclass(frozen=True)
class StoredArtifact:
    digest: str  # "sha256:<hex>" of the plaintext
    size: int  # plaintext size in bytes
    encrypted: bool
    path: Path  # where the (possibly encrypted) blob lies


def parse_digest(digest: str) -> str:
    """Return the hex part of ``sha256:<hex>``; anything else is rejected before it touches a path."""
    if not digest.startswith(DIGEST_PREFIX):
        raise BadInput(f"artifact digest must start with {DIGEST_PREFIX!r}: {digest!r}")
    hexpart = digest[len(DIGEST_PREFIX) :]
    if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise BadInput(f"artifact digest is not a lower-case sha256 hex digest: {digest!r}")
    return hexpart


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return DIGEST_PREFIX + h.hexdigest()


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + struct.pack(">I", index)


def _aad(digest_hex: str, index: int, final: bool) -> bytes:
    return digest_hex.encode() + struct.pack(">I?", index, final)


def key_dir_of(settings) -> Path:  # type: ignore[no-untyped-def]
    """Where a deployment keeps its keys: ``artifact_key_dir``, else ``keys`` beside the artifacts."""
    key_dir = getattr(settings, "artifact_key_dir", None)
    return Path(key_dir) if key_dir is not None else Path(settings.artifact_dir).parent / "keys"


class ArtifactStore:
    """Write-once blob storage; see the module docstring for layout and encryption."""

    def __init__(self, root: Path, key_dir: Path | None = None, master_key: bytes | None = None) -> None:
        if master_key is not None and len(master_key) != 32:
            raise BadInput("artifact master key must be 32 bytes (64 hex characters)")
        self.root = Path(root)
        self.key_dir = Path(key_dir) if key_dir is not None else self.root.parent / "keys"
        self._master = AESGCM(master_key) if master_key is not None else None
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.key_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.key_dir, 0o700)

    @classmethod
    def from_settings(cls, settings) -> ArtifactStore:  # type: ignore[no-untyped-def]
        master_hex = getattr(settings, "artifact_master_key", None)
        return cls(
            settings.artifact_dir,
            key_dir=key_dir_of(settings),
            master_key=bytes.fromhex(master_hex) if master_hex else None,
        )

    # ---- paths -------------------------------------------------------------------------------------
    def _blob_path(self, digest: str, encrypted: bool) -> Path:
        hexpart = parse_digest(digest)
        name = hexpart + (".enc" if encrypted else "")
        return self.root / "blobs" / "sha256" / hexpart[:2] / name

    def _key_path(self, digest: str) -> Path:
        return self.key_dir / (parse_digest(digest) + ".key")

    def locate(self, digest: str) -> StoredArtifact:
        """The stored blob for ``digest`` (plain preferred); NotFound when neither form exists."""
        for encrypted in (False, True):
            path = self._blob_path(digest, encrypted)
            if path.exists():
                size = self._plain_size(path, encrypted)
                return StoredArtifact(digest, size, encrypted, path)
        raise NotFound(f"artifact {digest} is not in the store")

    def exists(self, digest: str) -> bool:
        try:
            self.locate(digest)
        except NotFound:
            return False
        return True

    def is_inside(self, path: Path) -> bool:
        """Whether ``path`` lies within the store (used by callers to prove nothing leaked outside)."""
        return Path(path).resolve().is_relative_to(self.root.resolve())

    # ---- writing -----------------------------------------------------------------------------------
    def put_file(self, source: Path, *, encrypt: bool = False) -> StoredArtifact:
        with open(source, "rb") as f:
            return self.put_stream(f, encrypt=encrypt)

    def put_bytes(self, data: bytes, *, encrypt: bool = False) -> StoredArtifact:
        import io

        return self.put_stream(io.BytesIO(data), encrypt=encrypt)

    def put_stream(self, stream: BinaryIO, *, encrypt: bool = False) -> StoredArtifact:
        """Store a stream; returns the existing artifact unchanged when the same content is already there.

        The plaintext is first spooled to a private temp file (its digest is needed before encryption,
        because the digest is authenticated with every ciphertext chunk), then the final blob is written
        to another temp file and hard-linked into place: ``link`` fails instead of overwriting, so a
        concurrent writer of the same content can never clobber a finished blob.
        """
        tmp_dir = self.root / "tmp"
        h = hashlib.sha256()
        size = 0
        fd, spool_name = tempfile.mkstemp(dir=tmp_dir, prefix="in-")
        spool = Path(spool_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
                    h.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = DIGEST_PREFIX + h.hexdigest()
            final = self._blob_path(digest, encrypt)
            if refresh(final):  # already stored: now it is young again, so no collection takes it
                return StoredArtifact(digest, size, encrypt, final)
            if encrypt:
                blob = self._encrypt_to_temp(spool, digest)
            else:
                blob, spool = spool, None  # the spool itself becomes the blob
            try:
                os.chmod(blob, _BLOB_MODE)
                final.parent.mkdir(parents=True, exist_ok=True)
                # FileExistsError: identical content won the race; the existing blob stays untouched.
                with contextlib.suppress(FileExistsError):
                    os.link(blob, final)
                _fsync_dir(final.parent)
            finally:
                blob.unlink(missing_ok=True)
            return StoredArtifact(digest, size, encrypt, final)
        finally:
            if spool is not None:
                spool.unlink(missing_ok=True)

    def _encrypt_to_temp(self, plain: Path, digest: str) -> Path:
        hexpart = parse_digest(digest)
        key_path = self._key_path(digest)
        key = self._load_key(digest) if refresh(key_path) else self._create_key(digest)
        aead = AESGCM(key)
        prefix = secrets.token_bytes(8)
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="enc-")
        with os.fdopen(fd, "wb") as out, open(plain, "rb") as src:
            out.write(_MAGIC + prefix)
            index = 0
            chunk = src.read(CHUNK_SIZE)
            while True:
                nxt = src.read(CHUNK_SIZE)
                final = not nxt
                sealed = aead.encrypt(_nonce(prefix, index), chunk, _aad(hexpart, index, final))
                out.write(struct.pack(">I", len(sealed)) + sealed)
                if final:
                    break
                chunk, index = nxt, index + 1
            out.flush()
            os.fsync(out.fileno())
        return Path(name)

    # ---- keys --------------------------------------------------------------------------------------
    def _create_key(self, digest: str) -> bytes:
        key = AESGCM.generate_key(bit_length=256)
        if self._master is not None:
            nonce = secrets.token_bytes(12)
            body = _KEY_MAGIC_WRAPPED + nonce + self._master.encrypt(nonce, key, digest.encode())
        else:
            body = _KEY_MAGIC_PLAIN + key
        path = self._key_path(digest)
        fd, name = tempfile.mkstemp(dir=self.key_dir, prefix=".k-")
        try:
            os.fchmod(fd, _KEY_MODE)
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(name, path)
            except FileExistsError:
                return self._load_key(digest)
        finally:
            Path(name).unlink(missing_ok=True)
        return key

    def _load_key(self, digest: str) -> bytes:
        path = self._key_path(digest)
        try:
            body = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"the encryption key of artifact {digest} is missing") from exc
        if body.startswith(_KEY_MAGIC_WRAPPED):
            if self._master is None:
                raise Conflict(f"the key of artifact {digest} is wrapped but no master key is configured")
            rest = body[len(_KEY_MAGIC_WRAPPED) :]
            try:
                return self._master.decrypt(rest[:12], rest[12:], digest.encode())
            except InvalidTag as exc:
                raise Conflict(f"the master key does not unwrap the key of artifact {digest}") from exc
        if body.startswith(_KEY_MAGIC_PLAIN):
            return body[len(_KEY_MAGIC_PLAIN) :]
        raise Conflict(f"the key file of artifact {digest} is unreadable")

    # ---- reading -----------------------------------------------------------------------------------
    def iter_plaintext(self, digest: str, start: int = 0) -> Iterator[bytes]:
        """Yield the artifact's plaintext in chunks, decrypting and authenticating when encrypted.

        ``start`` skips that many plaintext bytes first: a seek for a plain blob (so a reader paging
        through a large file pays for its page, not for everything before it), a skip when encrypted."""
        art = self.locate(digest)
        if not art.encrypted:
            with open(art.path, "rb") as f:
                f.seek(start)
                yield from iter(lambda: f.read(CHUNK_SIZE), b"")
            return
        skip = start
        for chunk in self._iter_decrypted(digest, art):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:]
            skip = 0

    def _iter_decrypted(self, digest: str, art: StoredArtifact) -> Iterator[bytes]:
        hexpart = parse_digest(digest)
        aead = AESGCM(self._load_key(digest))
        with open(art.path, "rb") as f:
            header = f.read(len(_MAGIC) + 8)
            if not header.startswith(_MAGIC):
                raise Conflict(f"artifact {digest} is not a readable encrypted blob")
            prefix = header[len(_MAGIC) :]
            index = 0
            while True:
                length_bytes = f.read(4)
                if len(length_bytes) != 4:
                    raise Conflict(f"artifact {digest} is truncated")
                (length,) = struct.unpack(">I", length_bytes)
                sealed = f.read(length)
                final = f.peek(1)[:1] == b""
                try:
                    yield aead.decrypt(_nonce(prefix, index), sealed, _aad(hexpart, index, final))
                except InvalidTag as exc:
                    raise Conflict(
                        f"artifact {digest} failed authentication (tampered or truncated)"
                    ) from exc
                if final:
                    return
                index += 1

    def read_bytes(self, digest: str) -> bytes:
        return b"".join(self.iter_plaintext(digest))

    def export(self, digest: str, dest: Path) -> Path:
        """Write a private plaintext copy to ``dest`` (for sandboxes and image builds), digest-checked."""
        h = hashlib.sha256()
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            for chunk in self.iter_plaintext(digest):
                h.update(chunk)
                out.write(chunk)
        if DIGEST_PREFIX + h.hexdigest() != digest:
            dest.unlink(missing_ok=True)
            raise Conflict(f"artifact {digest} does not match its digest: the store is corrupted")
        return dest

    def verify(self, digest: str) -> bool:
        """Recompute the digest of the stored content (after decryption); False if it was altered."""
        h = hashlib.sha256()
        try:
            for chunk in self.iter_plaintext(digest):
                h.update(chunk)
        except Conflict:
            return False
        return DIGEST_PREFIX + h.hexdigest() == digest

    def _plain_size(self, path: Path, encrypted: bool) -> int:
        if not encrypted:
            return path.stat().st_size
        # Each chunk adds a 4-byte length and a 16-byte tag; the header is magic + 8-byte nonce prefix.
        total = 0
        with open(path, "rb") as f:
            f.seek(len(_MAGIC) + 8)
            while length_bytes := f.read(4):
                (length,) = struct.unpack(">I", length_bytes)
                total += length - 16
                f.seek(length, os.SEEK_CUR)
        return total

    def clear_tmp(self) -> None:
        """Remove partial writes left by a crashed process (they are never referenced by a digest)."""
        shutil.rmtree(self.root / "tmp", ignore_errors=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)


def refresh(path: Path) -> bool:
    """Set ``path``'s modification time to now; False when it does not exist (any more).

    Why: garbage collection (``infra.artifact_gc``) only takes unreferenced blobs and keys older than
    its grace period. A writer that finds its content already stored is about to reference that old
    blob, so it makes it young first; when a collection removed it in the meantime, the writer sees
    False and stores the content again instead of pointing a new row at nothing."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
