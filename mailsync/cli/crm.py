"""`mailsync crm import`: CRM records from CSV, bad rows reported with file, line and column."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from config.errors import ConfigError
from mailsync.cli.app import err, labelled, out, state_of


def crm_import(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="CSV files or directories holding accounts.csv, contacts.csv, opportunities.csv, reps.csv."
        ),
    ],
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="Rename a column of another CRM's export: --map 'Account Name=name'. Repeatable."
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(
            "--delimiter",
            help="The field separator, one character or 'tab'. Default: detected per file from its header "
            "(, ; tab or |).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import CRM records from CSV (upsert by the CRM's id); bad rows are reported, good rows kept."""
    state = state_of(ctx)
    mapping = {}
    for item in column_map or []:
        source, sep, target = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--map {item!r} is not COLUMN=FIELD", fix="write it as --map 'Their Column=field'"
            )
        mapping[source.strip()] = target.strip()
    from mailsync.admin.crm_import import import_crm

    report = import_crm(state.settings(), state.repo(), paths, mapping, delimiter)
    for warning in report.files.warnings:
        err.print(labelled("warning:", "yellow", warning))
    for problem in report.files.errors:
        err.print(labelled("rejected", "red", problem))
    table = Table(title="CRM import")
    for column in ("file", "rows read", "rejected", "new", "updated", "unchanged"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for kind, read in report.files.read.items():
        rejected = sum(1 for e in report.files.errors if Path(e.file).stem.lower() == kind)
        counts = report.counts.get(kind)
        unchanged = counts["unchanged"] if counts else (read - rejected if report.unchanged else 0)
        table.add_row(f"{kind}.csv", str(read), str(rejected), str(counts["new"] if counts else 0),
                      str(counts["updated"] if counts else 0), str(unchanged))  # fmt: skip
    out.print(table)
    summary = report.summary()
    if summary:
        (err if report.files.errors else out).print(summary, highlight=False)
    if report.files.errors:
        raise typer.Exit(1)
