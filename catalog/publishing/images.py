"""Container images for listings: build from the base image + a package, take in producers' images, push.

Every published image follows one shape, whatever its origin, so the executor can run any of them the
same way: no ENTRYPOINT, the invocation command as CMD, the code under ``/app`` for built packages. A
producer's image is never changed: a new image is derived ``FROM`` it (ENTRYPOINT cleared, CMD set to
its effective command) and that derived image is pushed under mlrepo's namespace and referenced by its
registry digest (``repo@sha256:…``), which cannot be re-pointed the way a tag can.

Builds run with ``network_mode=none`` and only COPY/metadata instructions: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from catalog.publishing.registry import PUBLISHED_NAMESPACE
from infra.docker_engine import docker_client
from infra.errors import BadInput, Unavailable

logger = logging.getLogger("mlrepo.publishing.images")
# The engine unpacks a loaded tarball under its own data root: its errors name that host path.
_ENGINE_IMPORT_DIR = re.compile(r"(?:/[^\s/:\"']+)*/docker-import-\d+/")

LABEL_PREFIX = "org.mlrepo"
_SLUG = re.compile(r"[^a-z0-9]+")
STAGING_NAMESPACE = "mlrepo-staging"
STAGING_TAGS = ("source", "normalized", "built")  # a run's producer image, its derived one, its package's
_STAGING_REF = re.compile(rf"{STAGING_NAMESPACE}/([0-9a-z]+)-([0-9]+):[^/@]+")


@dataclass(frozen=True)
class StagingImage:
    """A tag a publication run gave an image it derived (``staging_repository``)."""

    ref: str
    publication_id: str
    attempt: int


def staging_repository(publication_id: str, attempt: int) -> str:
    """Where run ``attempt`` of a publication tags the images it derives: a repository of that run's
    own, as its staging directory is, so that what a run left behind can be told by whose it was (and
    removed once that run can no longer write: ``infra.fencing.may_still_write``)."""
    return f"{STAGING_NAMESPACE}/{publication_id}-{attempt}"


def staging_refs(publication_id: str, attempt: int) -> list[str]:
    """Every tag run ``attempt`` of a publication may have given an image."""
    return [f"{staging_repository(publication_id, attempt)}:{tag}" for tag in STAGING_TAGS]


def staging_image(ref: str) -> StagingImage | None:
    """The run a tag such as ``mlrepo-staging/<publication>-<attempt>:built`` belongs to, else None."""
    match = _STAGING_REF.fullmatch(ref)
    return StagingImage(ref, match.group(1), int(match.group(2))) if match else None


@dataclass(frozen=True)
class ImageInfo:
    id: str  # sha256:… of the image config (content-addressed by the engine)
    command: tuple[str, ...]  # effective ENTRYPOINT + CMD
    workdir: str
    size: int


def slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:60] or "listing"


def _dockerfile(base: str, command: list[str], labels: dict[str, str], copy_app: bool, workdir: str) -> bytes:
    lines = [f"FROM {base}"]
    if copy_app:
        lines.append("COPY app/ /app/")
    lines += [
        f"WORKDIR {json.dumps(workdir)[1:-1]}",
        "ENTRYPOINT []",
        f"CMD {json.dumps(command)}",
        "USER 65534:65534",
    ]
    lines += [f"LABEL {json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items())]
    return ("\n".join(lines) + "\n").encode()


def _context(dockerfile: bytes, code_dir: Path | None) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        if code_dir is not None:
            tar.add(str(code_dir), arcname="app", filter=_owned_by_root)
    buffer.seek(0)
    return buffer


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


class ImageService:
    """Thin, blocking wrapper over the Docker engine (call it through ``asyncio.to_thread``)."""

    def __init__(self, docker_host: str | None, registry: str | None, base_image: str) -> None:
        self.docker_host = docker_host
        self.registry = registry
        self.base_image = base_image
        self._client: docker.DockerClient | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> ImageService:
        return cls(settings.docker_host, settings.registry_url, settings.base_image)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker_client(self.docker_host, timeout=120)
            except DockerException as exc:
                raise Unavailable(f"the container engine is not reachable: {exc}") from exc
        return self._client

    def available(self) -> bool:
        try:
            return bool(self.client.ping())
        except (Unavailable, DockerException, OSError):
            return False

    def info(self, ref: str) -> ImageInfo:
        try:
            image = self.client.images.get(ref)
        except ImageNotFound as exc:
            raise BadInput(f"image {ref} is not known to the engine") from exc
        config = image.attrs.get("Config") or {}
        command = tuple((config.get("Entrypoint") or []) + (config.get("Cmd") or []))
        return ImageInfo(image.id, command, config.get("WorkingDir") or "/", int(image.attrs.get("Size", 0)))

    # ---- getting images in ---------------------------------------------------------------------------
    def load_tarball(self, path: Path) -> str:
        """``docker load`` a producer's ``docker save`` tarball; it must hold exactly one image.

        The tags inside the tarball are stripped first: ``docker load`` would otherwise re-point any tag
        the tarball names — the base image's, or another listing's — at the producer's image.
        """
        untagged = path.with_name(path.name + ".untagged")
        try:
            strip_repo_tags(path, untagged)
            with open(untagged, "rb") as f:
                images = self.client.images.load(f)
        except (APIError, DockerException, tarfile.TarError, ValueError) as exc:
            raise BadInput(f"not a loadable docker save tarball: {engine_words(exc)}") from exc
        finally:
            untagged.unlink(missing_ok=True)
        ids = {image.id for image in images}
        if len(ids) != 1:
            raise BadInput(f"the tarball must hold exactly one image, it holds {len(ids)}")
        return ids.pop()

    def pull_from_registry(self, ref: str) -> str:
        """Pull an image the producer pushed to mlrepo's registry; other registries are refused."""
        check_registry_ref(self.registry, ref)
        repository, tag = _split_ref(ref)
        try:
            image = self.client.images.pull(repository, tag=tag)
        except (APIError, DockerException) as exc:
            raise BadInput(
                f"image {ref} could not be pulled from {self.registry}: {engine_words(exc)}"
            ) from exc
        return image.id

    # ---- building --------------------------------------------------------------------------------------
    def build(
        self,
        tag: str,
        command: list[str],
        labels: dict[str, str],
        code_dir: Path | None = None,
        base: str | None = None,
        workdir: str = "/app",
    ) -> str:
        """Build ``tag`` FROM ``base`` (default the base image), optionally with ``code_dir`` at /app."""
        base = base or self.base_image
        try:
            self.client.images.get(base)
        except ImageNotFound as exc:
            raise Unavailable(f"base image {base} is missing; run scripts/build-base-image.sh") from exc
        context = _context(_dockerfile(base, command, labels, code_dir is not None, workdir), code_dir)
        try:
            image, _logs = self.client.images.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                network_mode="none",
                rm=True,
                forcerm=True,
                pull=False,
            )
        except BuildError as exc:
            raise BadInput(f"image build failed: {exc.msg}") from exc
        except (APIError, DockerException) as exc:
            raise Unavailable(f"image build failed in the engine: {engine_words(exc)}") from exc
        return image.id

    # ---- publishing ------------------------------------------------------------------------------------
    def push(self, image_id: str, repository: str, tag: str) -> str:
        """Tag and push to the registry; returns the immutable ``repository@sha256:…`` reference."""
        if not self.registry:
            raise Unavailable("no container registry is configured (MLREPO_REGISTRY_URL)")
        remote = f"{self.registry}/{repository}"
        self.tag(image_id, remote, tag)
        digest = None
        try:
            for event in self.client.images.push(remote, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise Unavailable(f"push to {remote}:{tag} failed: {event['error']}")
                aux = event.get("aux") or {}
                digest = aux.get("Digest", digest)
        except (APIError, DockerException) as exc:
            raise Unavailable(f"push to {remote}:{tag} failed: {engine_words(exc)}") from exc
        if not digest:
            raise Unavailable(f"the registry did not report a digest for {remote}:{tag}")
        return f"{remote}@{digest}"

    def tag(self, image_id: str, repository: str, tag: str) -> None:
        if not self.client.images.get(image_id).tag(repository, tag=tag):
            raise Unavailable(f"the engine refused to tag {image_id} as {repository}:{tag}")

    def staging_images(self, publication_id: str | None = None) -> list[StagingImage]:
        """The staging tags (``staging_repository``) in the engine, of one publication or of all; none
        when the engine cannot be reached (nothing could be removed from it either)."""
        pattern = f"{STAGING_NAMESPACE}/{publication_id}-*" if publication_id else f"{STAGING_NAMESPACE}/*"
        try:
            images = self.client.images.list(name=pattern)
        except (Unavailable, DockerException, OSError):
            return []
        found = (staging_image(tag) for image in images for tag in image.tags)
        return [s for s in found if s is not None and publication_id in (None, s.publication_id)]

    def remove(self, ref: str) -> None:
        """Drop a tag (never the image data another tag still uses)."""
        with contextlib.suppress(ImageNotFound, APIError, DockerException, OSError, Unavailable):
            self.client.images.remove(ref, noprune=True)


def strip_repo_tags(source: Path, dest: Path) -> None:
    """Copy a ``docker save`` tarball without its tags (``RepoTags`` in manifest.json, ``repositories``)."""
    with tarfile.open(source, "r:*") as src, tarfile.open(dest, "w") as out:
        for member in src:
            if member.name in ("repositories", "./repositories"):
                continue
            name = member.name.removeprefix("./")
            if name in ("manifest.json", "index.json") and member.isfile():
                reader = src.extractfile(member)
                assert reader is not None
                data = json.dumps(_untagged(name, json.loads(reader.read(1 << 20)))).encode()
                member.size = len(data)
                out.addfile(member, io.BytesIO(data))
                continue
            out.addfile(member, src.extractfile(member) if member.isfile() else None)


def _untagged(name: str, document: Any) -> Any:
    """manifest.json (docker) names tags in ``RepoTags``; index.json (OCI) in ref-name annotations."""
    if name == "manifest.json":
        if not isinstance(document, list):
            raise ValueError("manifest.json is not a list of images")
        for entry in document:
            entry["RepoTags"] = None
        return document
    for entry in document.get("manifests", []) if isinstance(document, dict) else []:
        annotations = entry.get("annotations") or {}
        for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
            annotations.pop(key, None)
    return document


def engine_words(exc: BaseException) -> str:
    """What the engine said about the producer's image, for the producer: its explanation without the
    engine's API address ('404 Client Error for http+docker://localhost/v1.41/images/create?...') or
    the host paths it unpacks uploads under. The whole text goes to the log."""
    logger.warning("container engine: %s", exc)
    if isinstance(exc, APIError):
        words = str(exc.explanation or "the engine refused it (the worker's log says why)")
    else:  # e.g. docker.errors.ImageLoadError: the engine's message about the tarball
        words = str(exc)
    return _ENGINE_IMPORT_DIR.sub("", words)


def check_registry_ref(registry: str | None, ref: str) -> None:
    """Images are taken in only from mlrepo's own registry (nothing else is reachable, nor trusted)."""
    if not registry:
        raise Unavailable("no container registry is configured (MLREPO_REGISTRY_URL)")
    if not ref.startswith(registry + "/"):
        raise BadInput(f"image {ref!r} must be pushed to mlrepo's registry {registry}/… first")


_REPOSITORY_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def check_own_registry_ref(registry: str | None, ref: str, account_name: str | None) -> None:
    """An image a producer publishes by reference must be under their own repository prefix,
    ``<registry>/<account name>/…``; never under ``mlrepo/`` (what publications pushed).

    The registry has no authentication: it cannot tell who pushed an image, and every image in it was
    taken in by reference, including another producer's (a private listing's among them). This keeps
    the service from publishing another account's repository under a new owner's name; it cannot stop
    an account copying an image it can read (README, security notes)."""
    check_registry_ref(registry, ref)
    assert registry is not None
    owner = ref[len(registry) + 1 :].split("/", 1)[0]
    if owner == PUBLISHED_NAMESPACE:
        raise BadInput(
            f"image {ref!r}: {registry}/{PUBLISHED_NAMESPACE}/ holds the images mlrepo pushed for listings; "
            f"publish your own image, pushed under {registry}/<your account name>/",
            field="image_ref",
        )
    if not account_name or not _REPOSITORY_COMPONENT.fullmatch(account_name):
        raise BadInput(
            f"image {ref!r}: your account name {account_name!r} is not a registry repository name "
            "(lower-case letters, digits, '.', '_', '-'), so no image can be pushed under it; publish "
            "a docker save tarball instead",
            field="image_ref",
        )
    if owner != account_name:
        raise BadInput(
            f"image {ref!r} must be pushed under your own repository prefix {registry}/{account_name}/ "
            "(an image under another account's prefix is theirs to publish)",
            field="image_ref",
        )


def _split_ref(ref: str) -> tuple[str, str]:
    if "@" in ref:
        repository, digest = ref.split("@", 1)
        return repository, digest
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = ref.rsplit(":", 1)
        return repository, tag
    return ref, "latest"
