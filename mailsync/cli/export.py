"""`mailsync export`: the CRM, activities, proposals and decisions as CSV and JSONL files."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from mailsync.cli.app import err, out, progress, state_of

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


class _Bar:
    """export's Progress as a rich bar: one task per table."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None

    def start(self, table: str, total: int) -> None:
        self.task = self.bar.add_task(table, total=total)

    def advance(self, count: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, count)


def export(
    ctx: typer.Context,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Directory to write the files to (created if missing).", show_default=False
        ),
    ],
    file_format: Annotated[str, typer.Option("--format", help="csv, jsonl or both.")] = "csv",
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="Comma-separated tables: accounts,contacts,reps,opportunities,activities,proposals,"
            "decisions. Default: all.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Export accounts, contacts, reps and opportunities in the CRM import format, and activities,
    proposals and decisions; `mailsync crm import DIR` of an export changes nothing."""
    from mailsync.admin.export import export as write_export
    from mailsync.admin.export import parse_format, parse_only

    state = state_of(ctx)
    formats, groups = parse_format(file_format), parse_only(only)
    settings = state.settings()
    repo = state.repo()
    with progress() if err.is_terminal else nullcontext() as bar:
        report = write_export(
            repo,
            out_dir,
            formats=formats,
            only=groups,
            stage_for=settings.stage_for,
            progress=_Bar(bar) if bar is not None else None,
        )
    if as_json:
        out.print(json.dumps(report.as_json(), ensure_ascii=True, indent=2), highlight=False)
        return
    table = Table(title=f"export to {out_dir}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for written in report.files:
        table.add_row(written.path.name, str(written.rows))
    out.print(table)
    out.print(
        "`mailsync crm import` of this directory reads reps, accounts, contacts and opportunities back; "
        "new_*.csv hold what mail added that the CRM has no id for yet.",
        highlight=False,
    )
