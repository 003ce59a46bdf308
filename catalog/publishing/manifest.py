"""The package manifest: what a producer declares about a publication, validated with clear errors.

A code package carries ``mlrepo.json`` (or ``mlrepo.toml``) at its root (or inside its single top-level
directory). Container images and datasets carry no file of their own, so the same document is passed
alongside the upload. Example::

    {
      "name": "tiny-sentiment", "kind": "model", "category": "nlp", "version": "1.0.0",
      "description": "Positive/negative sentiment of English sentences.",
      "entrypoint": ["python3", "predict.py"],
      "dependencies": [],
      "input": {"format": "text@1"},
      "output": {"format": "class-label@1", "schema": {...}},
      "resources": {"cpu": 1, "memory_mb": 256, "gpu": 0},
      "timeout_s": 5,
      "tests": [{"name": "happy", "input": "I love it", "expected_output": {"label": "positive"}}],
      "verify": true,
      "encrypt": false
    }

Why the entrypoint is a list: it is executed without a shell (``execve``), so no quoting rules and no
shell injection; a string is accepted and split like a shell would split it.

Dependencies are declarative: sandboxes have no network, so a package must vendor what its base image
(Python 3 + numpy) lacks; the list is recorded on the listing for requesters and future builders.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from catalog.enums import ListingKind, Visibility
from catalog.formats import payload_errors, validate_listing_io
from catalog.listing_input import MAX_EXAMPLES, MIN_MEMORY_MB, check_version, parse_listing
from infra.errors import BadInput

MANIFEST_NAMES = ("mlrepo.json", "mlrepo.toml")
INTERPRETERS = frozenset({"python3", "python", "sh"})
RUNNABLE_KINDS = frozenset(
    {ListingKind.ALGORITHM, ListingKind.MODEL, ListingKind.NOTEBOOK, ListingKind.PIPELINE}
)
MAX_MANIFEST_BYTES = 1 << 20
# Who sees a new listing. Not "shared": its accounts (``shared_with``) could only be checked when the
# listing is written, after the build; a listing is shared afterwards with ``updateListing``.
PUBLISHED_VISIBILITIES = (Visibility.PUBLIC.value, Visibility.PRIVATE.value)


class ManifestError(BadInput):
    """A manifest that cannot be accepted; ``errors`` lists every problem as ``field: message``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid manifest: " + "; ".join(errors), errors=errors)
        self.errors = errors


class IOSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: float = Field(1.0, gt=0, le=64)
    memory_mb: int = Field(512, ge=MIN_MEMORY_MB, le=1 << 20)
    gpu: int = Field(0, ge=0, le=16)


class UnitTest(BaseModel):
    """One recorded behaviour: the entrypoint fed ``input`` must produce ``expected_output``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    input: Any
    expected_output: Any


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=200)
    kind: ListingKind
    category: str = Field(min_length=1, max_length=100)
    version: str | None = None
    listing_id: str | None = Field(None, description="Publish a new version of this existing listing.")
    visibility: str | None = Field(
        None,
        description="A new listing's audience: public (the default) or private; a version keeps its "
        "listing's.",
    )
    subcategories: list[str] = Field(default_factory=list)
    description: str = Field("", max_length=20_000)
    documentation: str = Field("", max_length=200_000)
    framework: str | None = None
    license: str | None = None
    tags: list[str] = Field(default_factory=list)
    entrypoint: list[str] | None = None
    train_entrypoint: list[str] | None = None
    trained_models: Literal["private", "shareable"] | None = Field(
        None, description="Algorithms: may models other accounts train from it be public or shared?"
    )
    dependencies: list[str] = Field(default_factory=list)
    input: IOSpec | None = None
    output: IOSpec | None = None
    resources: Resources = Field(default_factory=Resources)
    training_resources: Resources | None = None
    timeout_s: float = Field(30.0, gt=0, le=3600)
    tests: list[UnitTest] = Field(default_factory=list)
    verify: bool = False
    encrypt: bool = False
    checksums: dict[str, str] = Field(default_factory=dict)
    accuracy: float | None = Field(None, ge=0, le=1)
    accuracy_metric: str | None = None
    accuracy_dataset: str | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    # Notebook uploads only: the variable whose value is a record's output (``catalog.publishing.notebook``).
    output_variable: str | None = None

    @field_validator("entrypoint", "train_entrypoint", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            return shlex.split(value)
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str | None) -> str | None:
        return check_version(value)

    @field_validator("visibility", mode="before")
    @classmethod
    def _check_visibility(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str) or value.strip().lower() not in PUBLISHED_VISIBILITIES:
            raise ValueError(
                f"must be 'public' or 'private', not {value!r}; to share a listing with accounts, publish "
                "it private, then give it visibility 'shared' and shared_with with updateListing"
            )
        return value.strip().lower()

    @property
    def runnable(self) -> bool:
        return self.kind in RUNNABLE_KINDS

    def listing_fields(self) -> dict[str, Any]:
        """The columns of ``listings`` this manifest sets (I/O already normalized by ``parse_manifest``)."""
        return {
            "kind": str(self.kind),
            "name": self.name,
            "category": self.category,
            "subcategories": list(self.subcategories),
            "description": self.description,
            "documentation": self.documentation,
            "framework": self.framework,
            "license": self.license,
            "tags": list(self.tags),
            "input_format": self.input.format if self.input else None,
            "input_schema": self.input.schema_ if self.input else None,
            "output_format": self.output.format if self.output else None,
            "output_schema": self.output.schema_ if self.output else None,
            "resources": self.resources.model_dump(),
            "training_resources": self.training_resources.model_dump() if self.training_resources else None,
            "timeout_s": self.timeout_s,
            "accuracy": self.accuracy,
            "accuracy_metric": self.accuracy_metric,
            "accuracy_dataset": self.accuracy_dataset,
            "examples": list(self.examples),
        } | ({"visibility": self.visibility} if self.visibility is not None else {})


def pydantic_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        out.append(f"{where}: {msg}")
    return out


def _command_errors(field: str, command: list[str] | None) -> list[str]:
    if command is None:
        return []
    if not command or not all(isinstance(a, str) and a for a in command):
        return [f"{field}: must be a non-empty command (list of strings)"]
    errors = []
    for arg in command:
        if arg.startswith("/") or ".." in PurePosixPath(arg).parts:
            errors.append(f"{field}: {arg!r} must be a path relative to the package root")
    return errors


def _semantic_errors(m: Manifest, source_kind: str) -> list[str]:
    errors: list[str] = []
    needs_command = source_kind in ("package", "notebook") and m.runnable
    if needs_command and not m.entrypoint:
        errors.append(
            f"entrypoint: required for kind {m.kind.value!r} (the command that reads JSON lines on stdin "
            'and writes {"id", "output"} lines on stdout)'
        )
    if needs_command and m.kind == ListingKind.ALGORITHM and not m.train_entrypoint:
        errors.append("train_entrypoint: required for algorithms (reads /data, writes the model to /output)")
    if m.trained_models is not None and m.kind != ListingKind.ALGORITHM:
        errors.append(f"trained_models: only algorithms are trained; a {m.kind.value} has no trained models")
    if m.kind == ListingKind.DATASET and (m.entrypoint or m.train_entrypoint):
        errors.append("entrypoint: a dataset is not runnable; remove entrypoint/train_entrypoint")
    errors += _command_errors("entrypoint", m.entrypoint)
    errors += _command_errors("train_entrypoint", m.train_entrypoint)
    if m.verify and not m.tests:
        errors.append("tests: verification was requested but no unit tests are declared")
    if m.verify and not m.runnable:
        errors.append(f"verify: a {m.kind.value} cannot run, so it cannot be verified")
    names = [t.name for t in m.tests]
    if len(set(names)) != len(names):
        errors.append("tests: test names must be unique")
    for path, digest in m.checksums.items():
        if not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", digest):
            errors.append(f"checksums.{path}: must be 'sha256:' followed by 64 hex digits")
    return errors


def _io_errors(m: Manifest) -> list[str]:
    """Normalize formats/schemas through the catalog's vocabulary, then check tests against them."""
    try:
        in_fmt, in_schema, out_fmt, out_schema = validate_listing_io(
            m.input.format if m.input else None,
            m.input.schema_ if m.input else None,
            m.output.format if m.output else None,
            m.output.schema_ if m.output else None,
        )
    except BadInput as exc:
        return [f"input/output: {exc.message}"]
    if m.input and in_fmt:
        m.input = IOSpec(format=in_fmt, schema=in_schema)
    if m.output and out_fmt:
        m.output = IOSpec(format=out_fmt, schema=out_schema)
    errors = []
    for t in m.tests:
        if in_schema is not None:
            errors += [f"tests.{t.name}.input {e}" for e in payload_errors(in_schema, t.input, 3)]
        if out_schema is not None:
            errors += [
                f"tests.{t.name}.expected_output {e}"
                for e in payload_errors(out_schema, t.expected_output, 3)
            ]
    return errors


_IO_FIELDS = ("input_format", "input_schema", "output_format", "output_schema")


def _listing_errors(m: Manifest) -> list[str]:
    """The rules of the listing the last step writes (a name that is not blank, one line, no control
    characters...), checked with the package: a manifest breaking them used to pass this step, run its
    probe and tests in the sandbox, and only fail in step ``list``. Formats and schemas are left to
    ``_io_errors``, which reports them in its own words."""
    fields = {k: v for k, v in m.listing_fields().items() if k not in _IO_FIELDS}
    try:
        parse_listing(fields)
    except BadInput as exc:
        return [exc.message]
    return []


def parse_manifest(data: Any, source_kind: str = "package") -> Manifest:
    """Validate a manifest document (already decoded) for an upload of ``source_kind``.

    ``source_kind`` is ``package``, ``image``, ``dataset`` or ``notebook``: a code package must name its
    entrypoint; an image runs its own ENTRYPOINT; a dataset runs nothing; a notebook's entrypoint is its
    runner (``catalog.publishing.notebook`` writes it), so kind ``notebook`` comes only with a notebook
    upload: a notebook listing is one that runs its notebook's cells.
    """
    if not isinstance(data, dict):
        raise ManifestError(["manifest: must be a JSON/TOML object"])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(pydantic_errors(exc)) from None
    errors = _semantic_errors(manifest, source_kind) + _io_errors(manifest) + _listing_errors(manifest)
    if source_kind == "dataset" and manifest.kind != ListingKind.DATASET:
        errors.append(f"kind: a dataset upload must have kind 'dataset', not {manifest.kind.value!r}")
    if source_kind in ("package", "image") and manifest.kind == ListingKind.DATASET:
        errors.append("kind: publish datasets with publishDataset, not as a code package or image")
    if source_kind in ("package", "image") and manifest.kind == ListingKind.NOTEBOOK:
        # One rule for both paths: a notebook listing runs the cells of its notebook (publishNotebook
        # refuses an entrypoint); a package or image of kind notebook ran a command of its own instead.
        errors.append(
            "kind: publish notebooks with publishNotebook (the .ipynb itself), not as a code package or image"
        )
    if source_kind == "notebook" and manifest.kind != ListingKind.NOTEBOOK:
        errors.append(f"kind: a notebook upload must have kind 'notebook', not {manifest.kind.value!r}")
    if source_kind != "notebook" and manifest.output_variable is not None:
        errors.append("output_variable: only notebook uploads read their output from a variable")
    if errors:
        raise ManifestError(errors)
    return manifest


def decode_manifest(raw: bytes, filename: str) -> dict[str, Any]:
    """Decode ``mlrepo.json``/``mlrepo.toml`` bytes; a syntax error names the file and position."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError([f"{filename}: larger than {MAX_MANIFEST_BYTES} bytes"])
    try:
        text = raw.decode("utf-8-sig")  # a byte order mark (Windows editors) is not content
        return json.loads(text) if filename.endswith(".json") else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError([f"{filename}: not valid {filename.rsplit('.', 1)[1].upper()}: {exc}"]) from None


def find_package_root(extracted: Path) -> Path:
    """The directory holding the manifest: the extraction root or its single top-level directory."""
    candidates = [extracted]
    entries = [p for p in extracted.iterdir()]
    if len(entries) == 1 and entries[0].is_dir():
        candidates.append(entries[0])
    for root in candidates:
        if any((root / name).is_file() for name in MANIFEST_NAMES):
            return root
    raise ManifestError([f"manifest: the package has no {' or '.join(MANIFEST_NAMES)} at its root"])


def load_package_manifest(package_root: Path) -> Manifest:
    """Read, validate and cross-check the manifest of an extracted code package."""
    present = [n for n in MANIFEST_NAMES if (package_root / n).is_file()]
    if len(present) > 1:
        raise ManifestError(["manifest: both mlrepo.json and mlrepo.toml exist; keep one"])
    if not present:
        raise ManifestError([f"manifest: the package has no {' or '.join(MANIFEST_NAMES)} at its root"])
    name = present[0]
    manifest = parse_manifest(decode_manifest((package_root / name).read_bytes(), name), "package")
    errors = []
    for field, command in (
        ("entrypoint", manifest.entrypoint),
        ("train_entrypoint", manifest.train_entrypoint),
    ):
        if command:
            errors += command_file_errors(field, command, package_root)
    if errors:
        raise ManifestError(errors)
    return manifest


def command_file_errors(field: str, command: list[str], package_root: Path) -> list[str]:
    """The program (or the script an interpreter runs) must exist inside the package."""
    program = command[0]
    if program in INTERPRETERS:
        if len(command) < 2:
            return [f"{field}: {program} needs the script to run"]
        script = command[1]
        if script.startswith("-"):  # e.g. python3 -m module: the module must be importable from the package
            return []
    else:
        script = program
    target = (package_root / script).resolve()
    if not target.is_relative_to(package_root.resolve()) or not target.is_file():
        return [f"{field}: {script!r} does not exist in the package"]
    if script == program and not target.stat().st_mode & 0o111:
        # Found only by the probe before: "bwrap: execvp ./run.sh: Permission denied", after a preamble
        # about the input it was sent, which it never read.
        return [
            f"{field}: {script!r} is not executable in the package (an archive made on Windows keeps "
            f"no modes): set its executable bit, or name its interpreter, e.g. "
            f"{json.dumps(['python3' if script.endswith('.py') else 'sh', script.removeprefix('./')])}"
        ]
    return []
