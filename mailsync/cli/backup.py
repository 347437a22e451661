"""`mailsync backup DEST` and `mailsync restore SRC`: the data directory, copied while the daemon runs."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mailsync.cli.app import err, out, progress, state_of

if TYPE_CHECKING:
    from mailsync.admin.backup import BackupReport

_JSON = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _summary(report: BackupReport, as_json: bool, what: str) -> None:
    if as_json:
        out.print(json.dumps(report.as_json(), ensure_ascii=True, indent=2), highlight=False)
        return
    out.print(
        f"{what} {report.directory}: {report.database} database (schema {report.schema}, "
        f"{report.messages} messages), {report.files_copied} files copied "
        f"({report.bytes_copied:,} bytes), {report.files_unchanged} unchanged",
        highlight=False,
    )


def backup(
    ctx: typer.Context,
    dest: Annotated[Path, typer.Argument(help="Directory to write the backup to (created if missing).")],
    as_json: _JSON = False,
) -> None:
    """Back up the database (SQLite online backup or pg_dump), the archive and the event log into DEST,
    while the daemon runs. A second backup into the same DEST copies only new blobs."""
    from mailsync.admin.backup import backup as run_backup
    from mailsync.admin.backup import files_to_copy

    settings = state_of(ctx).settings()
    with progress() if err.is_terminal else nullcontext() as bar:
        task = bar.add_task("backing up", total=files_to_copy(settings)) if bar is not None else None

        def advance(count: int) -> None:
            if bar is not None and task is not None:
                bar.advance(task, count)

        report = run_backup(settings, dest, advance)
    _summary(report, as_json, "backup in")


def restore(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="A directory `mailsync backup` wrote.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database that already holds messages.")
    ] = False,
    as_json: _JSON = False,
) -> None:
    """Restore a backup into the config's database, archive and event log (stop the daemon first).
    Then `mailsync verify` checks the archive; the next sync takes what arrived after the backup."""
    from mailsync.admin.backup import restore as run_restore

    report = run_restore(state_of(ctx).settings(), source, force=force)
    _summary(report, as_json, "restored from")
