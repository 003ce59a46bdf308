"""Rows stored before a rule, found (and where a machine may decide, fixed) by the operator.

``mlrepo fix-versions`` renumbers stored versions from before the one version rule: a dry run by
default, like ``mlrepo gc`` (it lists what it would renumber); ``--apply`` renumbers them
(``catalog.legacy_versions``: idempotent, one transaction per listing, the old text kept in each
renumbered version's notes).

``mlrepo duplicate-accounts`` lists account names that are one name regardless of case
(``catalog.account_duplicates``); it only reports: which account keeps the name is a person's decision.
"""

from __future__ import annotations

import typer

from api.commands import open_catalog, print_json, run_async, settings_of
from catalog.account_duplicates import DuplicateName, find_duplicate_names
from catalog.legacy_versions import Renumbering, fix_versions


def register(app: typer.Typer) -> None:
    @app.command("fix-versions")
    def fix_versions_command(
        ctx: typer.Context,
        apply: bool = typer.Option(False, "--apply", help="Renumber them (default: only report them)."),
        as_json: bool = typer.Option(False, "--json", help="Print the renumberings as JSON."),
    ) -> None:
        """Report (or with --apply renumber) stored listing versions that do not look like 1.2.3: written
        before that rule, they stop publishing from counting patch numbers up. The old text is kept in
        each renumbered version's notes; running it again changes nothing."""
        settings = settings_of(ctx)

        async def run() -> list[Renumbering]:
            async with open_catalog(settings, with_index=False) as catalog:
                return await fix_versions(catalog.db, apply=apply)

        changes = run_async(run())
        if as_json:
            print_json([change.as_dict() for change in changes])
        else:
            for change in changes:
                what = "current version" if change.what == "listing" else "version"
                typer.echo(
                    f"{change.listing_name} ({change.listing_id}): {what} {change.old!r} -> {change.new!r}"
                )
            verb = "renumbered" if apply else "would renumber (dry run; --apply to act)"
            typer.echo(f"{verb}: {len(changes)}")

    @app.command("duplicate-accounts")
    def duplicate_accounts_command(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print the groups as JSON."),
    ) -> None:
        """Report accounts whose names differ only by case ("alice" and "ALICE"), stored before names
        became unique regardless of case: each group with its accounts' ids and listing counts. It
        changes nothing; which account keeps the name is the operator's decision."""
        settings = settings_of(ctx)

        async def run() -> list[DuplicateName]:
            async with open_catalog(settings, with_index=False) as catalog:
                return await find_duplicate_names(catalog.db)

        groups = run_async(run())
        if as_json:
            print_json([group.as_dict() for group in groups])
            return
        for group in groups:
            names = ", ".join(f"{a.name} ({a.id}, {a.listings} listings)" for a in group.accounts)
            typer.echo(f"{group.key}: {names}")
        typer.echo(f"names held by more than one account: {len(groups)}")
