"""Jupyter notebooks as uploads: validate one, describe its listing from its markdown, package it to run.

A producer publishes the ``.ipynb`` as it is. Publishing checks its nbformat 4 structure here (a small
structural check with errors that name the cell, rather than the nbformat package and its dependencies:
the sandbox's runner cannot use them anyway), compiles every code cell (a cell that is not plain Python,
such as an IPython magic, could never run without a kernel, so it is refused now rather than failing
every requester's job), and derives the listing's documentation from the markdown cells and, where the
producer gave none, a description from the first paragraph (else the first heading).

The manifest of a notebook may come with the upload, from the notebook's own ``metadata.mlrepo``, or
both (the upload's wins). The notebook then becomes an ordinary code package: the notebook file exactly
as uploaded, plus ``notebook_runner.py``, whose entrypoint this module writes into the manifest. So it is
tested, verified, stored, containerized and run exactly as every other package, in the same sandbox.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import BadInput

NOTEBOOK_FILE = "notebook.ipynb"
RUNNER_FILE = "mlrepo_notebook.py"
RUNNER_SOURCE = Path(__file__).with_name("notebook_runner.py")
DEFAULT_OUTPUT_VARIABLE = "output"
METADATA_KEY = "mlrepo"  # the notebook's own manifest, in its metadata
CELL_TYPES = frozenset({"code", "markdown", "raw"})
MAX_DESCRIPTION = 1000
MAX_DOCUMENTATION = 200_000
MAX_ERRORS = 10
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


class NotebookError(BadInput):
    """An upload that is not a notebook the runner can execute; ``errors`` lists every problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid notebook: " + "; ".join(errors[:MAX_ERRORS]), errors=errors)
        self.errors = errors


@dataclass(frozen=True)
class Notebook:
    document: dict[str, Any]

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.document["cells"]

    def markdown(self) -> list[str]:
        return [source_of(c) for c in self.cells if c["cell_type"] == "markdown" and source_of(c).strip()]

    def embedded_manifest(self) -> dict[str, Any]:
        found = self.document.get("metadata", {}).get(METADATA_KEY)
        if found is None:
            return {}
        if not isinstance(found, dict):
            raise NotebookError([f"metadata.{METADATA_KEY}: must be an object (the listing's manifest)"])
        return found


def source_of(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _cell_errors(index: int, cell: Any) -> list[str]:
    where = f"cells[{index}]"
    if not isinstance(cell, dict):
        return [f"{where}: must be an object"]
    kind = cell.get("cell_type")
    if kind not in CELL_TYPES:
        return [f"{where}.cell_type: must be one of code, markdown, raw (got {kind!r})"]
    errors = []
    if not _is_text(cell.get("source")):
        errors.append(f"{where}.source: must be a string or a list of strings")
    if not isinstance(cell.get("metadata", {}), dict):
        errors.append(f"{where}.metadata: must be an object")
    if kind == "code":
        if not isinstance(cell.get("outputs", []), list):
            errors.append(f"{where}.outputs: must be a list")
        count = cell.get("execution_count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            errors.append(f"{where}.execution_count: must be an integer or null")
        tags = (cell.get("metadata") or {}).get("tags", []) if not errors else []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            errors.append(f"{where}.metadata.tags: must be a list of strings")
        if not errors:
            errors += _compile_errors(index, source_of(cell))
    return errors


def _compile_errors(index: int, source: str) -> list[str]:
    try:
        compile(source, f"<cell {index}>", "exec", ast.PyCF_ONLY_AST)
    except SyntaxError as exc:
        first = source.lstrip().split("\n", 1)[0]
        hint = (
            " (IPython magics and shell escapes need a kernel; the runner executes plain Python)"
            if first.startswith(("%", "!"))
            else ""
        )
        return [f"cells[{index}]: not valid Python at line {exc.lineno}: {exc.msg}{hint}"]
    except ValueError as exc:  # e.g. a NUL byte in the source
        return [f"cells[{index}]: not valid Python: {exc}"]
    return []


def parse_notebook(raw: bytes) -> Notebook:
    """Decode and check a ``.ipynb`` upload: nbformat 4, well-formed cells, code cells that compile."""
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookError([f"not a JSON notebook file: {exc}"]) from None
    if not isinstance(document, dict):
        raise NotebookError(["a notebook file must hold a JSON object"])
    errors = []
    if document.get("nbformat") != 4:
        errors.append(f"nbformat: must be 4 (got {document.get('nbformat')!r}); save it with Jupyter 4+")
    minor = document.get("nbformat_minor")
    if not isinstance(minor, int) or isinstance(minor, bool):
        errors.append("nbformat_minor: must be an integer")
    if not isinstance(document.get("metadata"), dict):
        errors.append("metadata: must be an object")
    cells = document.get("cells")
    if not isinstance(cells, list):
        errors.append("cells: must be a list")
    elif not errors:
        for index, cell in enumerate(cells):
            errors += _cell_errors(index, cell)
        if not any(c["cell_type"] == "code" and source_of(c).strip() for c in cells):
            errors.append("cells: the notebook has no code to run")
        tagged = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and "parameters" in _tags(c)]
        if len(tagged) > 1:
            errors.append(f"cells {tagged}: only one cell may be tagged 'parameters'")
    if errors:
        raise NotebookError(errors)
    return Notebook(document)


def _tags(cell: dict[str, Any]) -> list[str]:
    return (cell.get("metadata") or {}).get("tags") or []


def derive_text(notebook: Notebook) -> tuple[str, str]:
    """(description, documentation): the first paragraph (else the first heading) and all markdown."""
    markdown = notebook.markdown()
    documentation = "\n\n".join(m.strip() for m in markdown)[:MAX_DOCUMENTATION]
    heading, paragraph = None, None
    for block in "\n\n".join(markdown).split("\n\n"):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        if not lines:
            continue
        match = _HEADING.match(lines[0])
        if match and heading is None:
            heading = match.group(1)
        body = lines[1:] if match else lines
        if body and paragraph is None:
            paragraph = " ".join(body)
        if paragraph is not None:
            break
    description = paragraph or heading or ""
    return description[:MAX_DESCRIPTION], documentation


def notebook_manifest(notebook: Notebook, given: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest document of a notebook upload (``parse_manifest`` validates it next)."""
    data = {"kind": "notebook", **notebook.embedded_manifest(), **(given or {})}
    errors = [
        f"{key}: a notebook runs its cells; remove {key}"
        for key in ("entrypoint", "train_entrypoint")
        if data.get(key) is not None
    ]
    variable = data.get("output_variable", DEFAULT_OUTPUT_VARIABLE)
    if not isinstance(variable, str) or not variable.isidentifier():
        errors.append("output_variable: must be a Python variable name")
    if errors:
        raise NotebookError(errors)
    description, documentation = derive_text(notebook)
    if not data.get("description"):
        data["description"] = description
    if not data.get("documentation"):
        data["documentation"] = documentation
    data["entrypoint"] = ["python3", RUNNER_FILE, NOTEBOOK_FILE, variable]
    return data


def write_notebook_package(raw: bytes, root: Path) -> Path:
    """The package a notebook runs from: the notebook exactly as uploaded, and the runner."""
    root.mkdir(parents=True)
    (root / NOTEBOOK_FILE).write_bytes(raw)
    (root / RUNNER_FILE).write_bytes(RUNNER_SOURCE.read_bytes())
    return root
