"""Generate the reference parts of the docs from the code, so they cannot drift from it.

    python scripts/gen_docs.py           # rewrite README.md's generated sections and docs/schema.graphql
    python scripts/gen_docs.py --check   # exit 1 when any of them is out of date (nothing written)

Generated: the configuration table (every ``infra.settings.Settings`` field, its ``MLREPO_`` variable,
default and description), the CLI reference (every ``mlrepo`` command with its arguments and options, as
typer defines them), and ``docs/schema.graphql`` (the merged GraphQL schema). Each README section lives
between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers. ``make docs`` runs this.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import typer  # noqa: E402

from infra.settings import Settings  # noqa: E402

README = ROOT / "README.md"
SCHEMA = ROOT / "docs" / "schema.graphql"


def _type_name(annotation: object) -> str:
    if get_origin(annotation) is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None").replace("|", "or")


def settings_table() -> str:
    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    rows = ["| setting | environment variable | type | default | meaning |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else f"`{field.default}`"
        meaning = (field.description or "—").replace("|", "\\|")
        env = f"{prefix}{name.upper()}"
        rows.append(f"| `{name}` | `{env}` | {_type_name(field.annotation)} | {default} | {meaning} |")
    return "\n".join(rows)


def _param_line(param: Any) -> str:
    if param.param_type_name == "argument":
        required = "" if param.required else " (optional)"
        helptext = " ".join((getattr(param, "help", None) or "").split())
        return f"  {param.name.upper()}{required}  {helptext}".rstrip()
    option = param
    names = ", ".join(option.opts)
    if option.secondary_opts:  # an on/off pair such as --wait/--no-wait: both spellings, and which is on
        names += " / " + ", ".join(option.secondary_opts)
    helptext = " ".join((getattr(option, "help", None) or "").split())
    default = option.default
    if option.is_flag and option.secondary_opts and default is not None:
        shown = f" [default: {(option.opts if default else option.secondary_opts)[0]}]"
    elif default in (None, False, (), []) or option.is_flag:
        shown = ""
    else:
        shown = f" [default: {default}]"
    if option.envvar:  # e.g. --token: MLREPO_TOKEN keeps the secret out of the process list
        shown += f" [env: {option.envvar}]"
    return f"  {names}  {helptext}{shown}".rstrip()


def _commands(group: Any, prefix: str) -> list[str]:
    """Usage, summary and parameters of every command (typer vendors its own click: duck-typed)."""
    lines: list[str] = []
    ctx = group.context_class(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        if hasattr(command, "list_commands"):
            lines += _commands(command, f"{prefix} {name}")
            continue
        usage = " ".join(command.collect_usage_pieces(ctx))
        summary = " ".join((command.help or "").split())
        lines.append(f"{prefix} {name} {usage}".rstrip())
        lines.append(f"  {summary}")
        lines += [_param_line(p) for p in command.params if p.name != "help"]
        lines.append("")
    return lines


def cli_reference() -> str:
    from api.cli import app

    root = typer.main.get_command(app)
    options = [_param_line(p) for p in root.params if p.name != "help"]
    lines = ["mlrepo [GLOBAL OPTIONS] COMMAND ...", *options, "", *_commands(root, "mlrepo")]
    return "```text\n" + "\n".join(lines).rstrip() + "\n```"


def schema_sdl() -> str:
    from api.schema import schema

    return str(schema).rstrip() + "\n"


def replace_section(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, found, rest = text.partition(start)
    if not found:
        raise SystemExit(f"README.md has no {start} marker")
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main() -> None:
    # Importing the app may log (settings, libraries); the script's output is the docs. Only here, not at
    # import: tests import this module to read the CLI reference, and a module-level disable silenced
    # logging for the rest of their session (tests waiting for a warning then waited for ever).
    logging.disable(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the generated docs are current")
    args = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    wanted = replace_section(readme, "settings-table", settings_table())
    wanted = replace_section(wanted, "cli-reference", cli_reference())
    schema = schema_sdl()
    current_schema = SCHEMA.read_text(encoding="utf-8") if SCHEMA.exists() else ""
    if args.check:
        stale = [
            p.name for p, ok in ((README, wanted == readme), (SCHEMA, schema == current_schema)) if not ok
        ]
        if stale:
            raise SystemExit(f"out of date: {', '.join(stale)}; run `make docs`")
        return
    README.write_text(wanted, encoding="utf-8")
    SCHEMA.parent.mkdir(exist_ok=True)
    SCHEMA.write_text(schema, encoding="utf-8")


if __name__ == "__main__":
    main()
