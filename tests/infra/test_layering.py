"""Dependencies point one way only: api -> executor -> catalog -> ranking -> search -> infra.

Read from the source itself (``ast``), so an import inside a function, under ``TYPE_CHECKING`` or through
``importlib.import_module("...")`` counts as much as one at the top of a module: a lower layer that
imports a higher one only late still cannot be used without it, and the cycle shows up later as an
import-order bug. ``benchmarks/``, ``scripts/`` and ``tests/`` sit outside the chain and may import
anything; no layer may import them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Highest first: each package may import itself and the packages after it.
LAYERS = ("api", "executor", "catalog", "ranking", "search", "infra")
# Ours but outside the chain: they may import any layer, and no layer may import them.
UNLAYERED = ("benchmarks", "scripts", "tests")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, wherever in the module it is."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the module's own package
                base = package[: len(package) - (node.level - 1)]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            else:
                yield node.lineno, node.module or ""
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def layering_violations(root: Path) -> list[str]:
    """``path:line: LAYER imports MODULE`` for every import against the chain under ``root``."""
    violations = []
    for layer_index, layer in enumerate(LAYERS):
        allowed = set(LAYERS[layer_index:])
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in sorted(imported_modules(path, root)):
                top = module.split(".")[0]
                if (top in LAYERS or top in UNLAYERED) and top not in allowed:
                    violations.append(f"{path.relative_to(root)}:{line}: {layer} imports {module}")
    return violations


def test_no_layer_imports_a_layer_above_it() -> None:
    violations = layering_violations(ROOT)
    assert not violations, "imports against api -> executor -> catalog -> ranking -> search -> infra:\n" + (
        "\n".join(violations)
    )


def test_every_layer_is_read() -> None:
    """A renamed package would leave its checks passing on nothing."""
    for layer in LAYERS:
        assert len(list((ROOT / layer).rglob("*.py"))) > 1, layer


def test_the_check_finds_imports_wherever_they_are(tmp_path: Path) -> None:
    """The guard itself: every way a lower layer can reach a higher one is named, with its line."""
    (tmp_path / "search" / "backends").mkdir(parents=True)
    (tmp_path / "search" / "__init__.py").write_text("from . import backends\n")  # own package: fine
    (tmp_path / "search" / "backends" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import infra.settings\n"  # below: fine
        "if TYPE_CHECKING:\n"
        "    from ranking.fusion import fuse\n"
        "def late():\n"
        "    import catalog.app\n"
        "    from .. import backends\n"
        "    importlib.import_module('executor.worker')\n"
        "    from tests import services\n"
    )
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "cli.py").write_text("import executor\nfrom benchmarks import relevance\n")
    for layer in LAYERS:
        (tmp_path / layer).mkdir(exist_ok=True)
    assert layering_violations(tmp_path) == [
        "api/cli.py:2: api imports benchmarks",
        "search/backends/__init__.py:4: search imports ranking.fusion",
        "search/backends/__init__.py:6: search imports catalog.app",
        "search/backends/__init__.py:8: search imports executor.worker",
        "search/backends/__init__.py:9: search imports tests",
    ]
