"""mlrepo's container registry through its HTTP API (distribution v2): the images publications pushed.

A publication pushes its image under ``PUBLISHED_NAMESPACE`` before it writes the listing that names it,
so a run that fails or dies after its push leaves an image no listing references; nothing pulls it again,
and the registry keeps it forever. The collection (``catalog.artifact_gc``) lists them here, by the
labels every image a publication derives carries (``PUBLICATION_LABEL``, ``RUN_LABEL``), and deletes
the manifests it may (the registry's ``DELETE /v2/<name>/manifests/<digest>``, which needs
``storage.delete.enabled``: ``scripts/start-registry.sh`` sets it). The layers then go with the
registry's own garbage collection (``registry garbage-collect``), which runs offline.

Blocking (``httpx``): call it through ``asyncio.to_thread``. Plain HTTP, as dockerd reaches the registry
on 127.0.0.1 (``MLREPO_REGISTRY_URL`` is a ``host:port``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import httpx

from infra.errors import Unavailable

logger = logging.getLogger("mlrepo.publishing.registry")

PUBLISHED_NAMESPACE = "mlrepo"  # repositories publications push to: mlrepo/<owner>/<listing>
PUBLICATION_LABEL = "org.mlrepo.publication"
RUN_LABEL = "org.mlrepo.run"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
_PAGE = 1000
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def push_tag(version: str, publication_id: str, attempt: int) -> str:
    """The tag a publication run pushes its image under: its own. The version alone was shared by every
    publication of that version, and a failed one's version is free for the next: the retry re-pointed
    the tag, and the failed run's manifest, tagged no more, could no longer be listed (the registry's API
    lists tags, not manifests) nor collected. Listings name the image by digest; the tag is for people
    (and for the collection). A tag allows no '+' (semantic versioning's build metadata)."""
    return f"{_TAG_UNSAFE.sub('_', version)[:80]}-{publication_id}-{attempt}"


def run_labels(publication_id: str, attempt: int) -> dict[str, str]:
    """The labels of every image a publication run derives (and may push): whose it is, so that the
    collection can tell an image of a run that can no longer write (``infra.fencing.may_still_write``)."""
    return {PUBLICATION_LABEL: publication_id, RUN_LABEL: str(attempt)}


@dataclass(frozen=True)
class PushedImage:
    """A manifest in a published repository, and the publication run its labels name (if any)."""

    repository: str
    digest: str  # the manifest's, as a listing version's ``image_ref`` names it (``repo@sha256:…``)
    publication_id: str | None
    run: int | None


class Registry:
    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self._http = httpx.Client(base_url=f"http://{address}/v2", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.get(path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the container registry {self.address} did not answer: {exc}") from exc

    def _pages(self, path: str, key: str) -> list[str]:
        """Every item of a paginated list (``_catalog``, ``tags/list``), following its ``Link`` header."""
        found: list[str] = []
        url: str | None = f"{path}?n={_PAGE}"
        while url:
            response = self._get(url)
            if response.status_code == 404:
                return found
            response.raise_for_status()
            found += response.json().get(key) or []
            following = response.links.get("next", {}).get("url")
            url = following.removeprefix("/v2") if following else None
        return found

    def published_images(self) -> list[PushedImage]:
        """Every manifest a tag names in the published repositories, with its publication labels."""
        images: dict[tuple[str, str], PushedImage] = {}
        for repository in self._pages("/_catalog", "repositories"):
            if not repository.startswith(PUBLISHED_NAMESPACE + "/"):
                continue
            for tag in self._pages(f"/{repository}/tags/list", "tags"):
                image = self._image(repository, tag)
                if image is not None:
                    images[(image.repository, image.digest)] = image
        return list(images.values())

    def _image(self, repository: str, reference: str) -> PushedImage | None:
        manifest = self._get(
            f"/{repository}/manifests/{reference}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if manifest.status_code == 404:  # deleted since the tags were listed
            return None
        manifest.raise_for_status()
        digest = manifest.headers.get("Docker-Content-Digest")
        config_digest = (manifest.json().get("config") or {}).get("digest")
        if not digest or not config_digest:
            return None  # a manifest list or a schema-1 manifest: no publication pushes those
        config = self._get(f"/{repository}/blobs/{config_digest}", follow_redirects=True)
        config.raise_for_status()
        labels = (config.json().get("config") or {}).get("Labels") or {}
        run = labels.get(RUN_LABEL)
        return PushedImage(
            repository,
            digest,
            labels.get(PUBLICATION_LABEL),
            int(run) if isinstance(run, str) and run.isdigit() else None,
        )

    def delete(self, image: PushedImage) -> None:
        """Delete the manifest (every tag naming it goes with it); one already gone is fine."""
        try:
            response = self._http.delete(f"/{image.repository}/manifests/{image.digest}")
        except httpx.HTTPError as exc:
            raise Unavailable(f"the container registry {self.address} did not answer: {exc}") from exc
        if response.status_code == 405:
            raise Unavailable(
                f"the container registry {self.address} refuses deletes: enable storage.delete.enabled"
            )
        if response.status_code not in (202, 404):
            response.raise_for_status()
