"""Privacy commands: `mailsync forget EMAIL` and `mailsync retention apply` (rules in mailsync/admin/)."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mailsync.cli.app import out, progress, state_of
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from collections.abc import Callable


_JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
_DRY_RUN = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]


def forget(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The outside person's address.", show_default=False)],
    as_json: _JSON = False,
    dry_run: _DRY_RUN = False,
) -> None:
    """Remove a person everywhere (mail, archive, CRM, suggestions, event log) and leave a tombstone
    (a keyed hash, never the address) so that no import, sync or replay brings them back. Mail they
    alone wrote or received from outside is deleted; mail others were on is kept, redacted."""
    from mailsync.admin.forget import forget as forget_person
    from storage.archive import open_store

    state = state_of(ctx)
    settings = state.settings()
    with progress() as bar:
        task = bar.add_task("searching the archive", total=None)

        def advance(total: int | None) -> None:
            if total is None:
                bar.advance(task)
            else:
                bar.update(task, total=total)

        report = forget_person(
            state.repo(),
            open_store(settings),
            settings,
            email,
            dry_run=dry_run,
            actor=f"cli:{getpass.getuser()}",
            progress=advance,
        )
    if as_json:
        out.print(json.dumps(report.as_dict(), sort_keys=True), highlight=False)
        return
    verb = "would be" if dry_run else "were"
    table = Table(title=f"forget {safe_line(email)}{' (dry run)' if dry_run else ''}")
    table.add_column(f"what {verb} changed")
    table.add_column("count", justify="right")
    rows = {"messages deleted": report.messages_deleted, "messages redacted": report.messages_redacted,
            "blobs deleted": report.blobs_deleted, "blobs redacted": len(report.blobs_redacted),
            "contacts deleted": report.contacts_deleted,
            "contact addresses removed": report.contact_addresses_removed,
            "suggestions deleted": report.suggestions_deleted,
            "suggestions redacted": report.suggestions_redacted, "other rows redacted": report.rows_redacted,
            "event-log files rewritten": len(report.event_files_rewritten),
            "journal files rewritten": len(report.journal_files_rewritten)}  # fmt: skip
    for label, value in rows.items():
        table.add_row(label, str(value))
    out.print(table)
    if report.already and not any(rows.values()):
        out.print("already forgotten: nothing of them is left", highlight=False)
    elif not dry_run:
        out.print(f"tombstone {report.tombstone[:16]}... recorded", highlight=False)


def retention_apply(ctx: typer.Context, as_json: _JSON = False, dry_run: _DRY_RUN = False) -> None:
    """Delete mail older than the keep_years setting of the retention section (archive blobs included; CRM
    records stay)."""
    from mailsync.admin.retention import apply_retention
    from storage.archive import open_store

    state = state_of(ctx)
    settings = state.settings()
    with progress() as bar:
        task = bar.add_task("deleting old mail", total=None)
        advance: Callable[[int], None] = lambda n: bar.advance(task, n)  # noqa: E731
        report = apply_retention(
            state.repo(),
            open_store(settings),
            settings,
            dry_run=dry_run,
            actor=f"cli:{getpass.getuser()}",
            progress=advance,
        )
    if as_json:
        out.print(json.dumps(report.as_dict(), sort_keys=True), highlight=False)
        return
    verb = "would be deleted" if dry_run else "deleted"
    out.print(
        f"mail dated before {report.cutoff} (keep_years = {report.keep_years}): "
        f"{report.messages_deleted} message(s) {verb}, {report.blobs_deleted} blob(s) removed",
        highlight=False,
    )
