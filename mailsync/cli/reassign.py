"""`mailsync reassign --from REP --to REP`: hand a rep's open deals, contacts and proposals to another."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_line

_LABELS = {"opportunities": "open opportunities", "contacts": "contacts", "proposals": "open proposals"}


def reassign(  # noqa: PLR0917 - typer passes a command's options by name
    ctx: typer.Context,
    from_rep: Annotated[
        str, typer.Option("--from", help="The rep whose work moves (e.g. one who left).", show_default=False)
    ],
    to_rep: Annotated[str, typer.Option("--to", help="The rep who takes it over.", show_default=False)],
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account",
            help="Only what concerns this account: its id as accounts.csv has it, or a domain. Repeatable.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would move; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Move ownership of open opportunities, contacts and open proposals from one rep to another.

    History stays with its author: messages, decisions, approved or rejected proposals and won or lost
    deals are not moved. Logged as an event before it is applied; a second run moves nothing."""
    from mailsync.admin.reassign import reassign as run_reassign
    from storage.eventlog import EventLog

    state = state_of(ctx)
    events = EventLog(state.settings().events_dir)
    who = f"cli:{getpass.getuser()}"
    result = run_reassign(state.repo(), events, from_rep, to_rep, account or [], who=who, dry_run=dry_run)
    plan = result.plan
    counts = plan.counts()
    if as_json:
        summary = {
            "from": plan.from_rep,
            "to": plan.to_rep,
            "accounts": list(plan.accounts),
            "would_move" if dry_run else "moved": counts,
            "closed_kept": plan.closed_kept,
            "changed": result.event_id is not None,
            "dry_run": dry_run,
            "event_id": result.event_id,
        }
        out.print(json.dumps(summary, ensure_ascii=True, indent=2), highlight=False)
        return
    scope = f" (accounts: {', '.join(safe_line(a) for a in plan.accounts)})" if plan.accounts else ""
    title = f"reassign {safe_line(plan.from_rep)} -> {safe_line(plan.to_rep)}{scope}"
    table = Table(title=title)
    table.add_column("what")
    table.add_column("would move" if dry_run else "moved", justify="right")
    for kind, label in _LABELS.items():
        table.add_row(label, str(counts[kind]))
    out.print(table)
    if plan.closed_kept:
        out.print(
            f"{plan.closed_kept} won/lost deal(s) stay with {safe_line(plan.from_rep)}: they are history"
        )
    if plan.empty:
        out.print(f"nothing to move: {safe_line(plan.from_rep)} owns no open work here (moved already?)")
    elif dry_run:
        out.print("dry run: nothing written")
