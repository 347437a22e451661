"""The archive's commands: `mailsync verify [--repair]` and `mailsync quarantine`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mailsync.cli.app import err, out, progress, state_of
from mailsync.mail.display import safe_text

if TYPE_CHECKING:
    from mailsync.admin.repair import RepairResult
    from storage.archive import Archive


def verify(
    ctx: typer.Context,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="After verifying, restore each missing or corrupt blob from a copy the database knows "
            "(its IMAP folder and UID, or the imported file) whose bytes still hash to the blob's name, "
            "keeping a corrupt file as <name>.corrupt; remove .tmp-* files a crash left (older than 10 "
            "minutes). Orphans are listed, never deleted. Exits 1 while anything is left.",
        ),
    ] = False,
) -> None:
    """Re-hash every archived blob; report missing, corrupt and orphan files (--repair fixes what it can)."""
    state = state_of(ctx)
    settings = state.settings()
    repo = state.repo()
    from storage.archive import Archive
    from storage.overview import known_blobs

    with repo.session() as session:
        known = known_blobs(session)
    archive = Archive(settings.archive_dir)
    with progress() as bar:
        task = bar.add_task("verifying archive", total=len(known))
        report = archive.verify(known, lambda: bar.advance(task))
    table = Table(title=f"archive {settings.archive_dir}")
    table.add_column("check")
    table.add_column("blobs", justify="right")
    rows = {"checked": report.checked, "missing": len(report.missing), "corrupt": len(report.corrupt),
            "orphan": len(report.orphans), "partial writes": len(report.partial)}  # fmt: skip
    for label, value in rows.items():
        table.add_row(label, str(value))
    out.print(table)
    for label, keys in (("missing", report.missing), ("corrupt", report.corrupt), ("orphan", report.orphans)):
        for key in keys:
            err.print(f"{label}: {archive.path_for(key)}", highlight=False)
    if repair:
        from mailsync.admin.repair import repair_archive

        result = repair_archive(report, repo, archive, settings)
        _print_repair(result, archive)
        if not result.ok:
            raise typer.Exit(1)
    elif not report.ok:
        raise typer.Exit(1)


def _print_repair(result: RepairResult, archive: Archive) -> None:
    table = Table(title="repair")
    table.add_column("outcome")
    table.add_column("files", justify="right")
    rows = {"repaired": len(result.repaired), "unrepairable": len(result.unrepairable),
            "partial writes removed": len(result.partial_removed),
            "partial writes kept": len(result.partial_kept), "orphans kept": len(result.orphans)}  # fmt: skip
    for label, value in rows.items():
        table.add_row(label, str(value))
    out.print(table)
    for fixed in result.repaired:
        kept = f"; the corrupt file is kept as {fixed.kept}" if fixed.kept else ""
        source = safe_text(fixed.source)
        out.print(f"repaired ({fixed.damage}): {archive.path_for(fixed.sha256)} from {source}{kept}",
                  highlight=False)  # fmt: skip
    for broken in result.unrepairable:
        reason = safe_text(broken.reason)
        err.print(f"unrepairable ({broken.damage}): {archive.path_for(broken.sha256)}: {reason}",
                  highlight=False)  # fmt: skip
    if result.unrepairable:
        err.print(
            f"{len(result.unrepairable)} blob(s) could not be repaired: restore them from a backup of "
            f"{archive.blobs} (same layout), then run `mailsync verify` again.",
            highlight=False,
        )
    for path, why in result.partial_kept:
        err.print(f"partial write kept: {path}: {why}", highlight=False)
    if result.orphans:
        err.print(
            f"{len(result.orphans)} orphan blob(s) kept (listed above): on disk but unknown to the database. "
            "They are still mail and are never deleted; a later sync of the same message adopts one.",
            highlight=False,
        )
    if result.ok:
        out.print("archive ok", style="green")


def quarantine(ctx: typer.Context) -> None:
    """List quarantined messages with their reasons (they stay in the archive)."""
    from storage.overview import quarantined

    with state_of(ctx).repo().session() as session:
        rows = quarantined(session)
    table = Table(title=f"{len(rows)} quarantined message(s)")
    for column in ("reason", "first seen at", "archive key"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(safe_text(row.reason), safe_text(row.first_seen_at), row.archive_key[:16])
    out.print(table)
