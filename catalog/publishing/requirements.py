"""The producer's requirements given with an upload: merged over the manifest's, and checked when given.

A publication may carry requirements (resources, timeout, encryption, verification, a new listing's
visibility) apart from its
manifest; they override the manifest's in the package step, and are checked by the manifest's own rules
when the publication is submitted (``PublishingService``), so a bad one is refused then, not FAILED later.
Separate because both the submission and the package step apply the same rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from catalog.publishing.manifest import Manifest, pydantic_errors
from infra.errors import BadInput

REQUIREMENT_KEYS = ("resources", "training_resources", "timeout_s", "encrypt", "verify", "visibility")


def merge_requirements(manifest: dict[str, Any], requirements: dict[str, Any]) -> dict[str, Any]:
    """The producer's requirements given with the upload override those in the manifest; within
    ``resources`` (and ``training_resources``) only the values given change, the others stay the
    manifest's."""
    merged = dict(manifest)
    for key, value in requirements.items():
        if key not in REQUIREMENT_KEYS or value is None:
            continue
        if isinstance(value, dict):
            given = {k: v for k, v in value.items() if v is not None}
            value = {**merged[key], **given} if isinstance(merged.get(key), dict) else given
        merged[key] = value
    return merged


def check_requirements(requirements: dict[str, Any] | None) -> None:
    """Refuse bad requirements when they are submitted, naming them: merged into the manifest in the
    worker, a bad one was queued and then FAILED in step package as "invalid manifest: ...", blaming a
    manifest that did not hold it. Checked by the manifest's own rules, merged into a valid skeleton."""
    if not requirements:
        return
    skeleton = {"name": "requirements", "kind": "model", "category": "requirements"}
    try:
        Manifest.model_validate(merge_requirements(skeleton, requirements))
    except ValidationError as exc:
        raise BadInput("requirements: " + "; ".join(pydantic_errors(exc)), field="requirements") from None
