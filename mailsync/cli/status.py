"""`mailsync status`: the schema, what each mailbox and folder captured, and the totals."""

from __future__ import annotations

import typer
from rich.table import Table

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_text


def _when(value: object, fmt: str) -> str:
    return format(value, fmt) if value else "never"


def status(ctx: typer.Context) -> None:
    """Show the schema, what is captured per mailbox and folder, open proposals and the backlog."""
    from storage import mailstore, overview
    from storage.reps import inactive_mailboxes

    state = state_of(ctx)
    repo = state.repo(current=False)
    current, head = repo.schema_revisions()
    out.print(f"schema {current or 'empty'} (this version needs {head})")
    if current != head:
        raise typer.Exit(1)
    with repo.session() as session:
        mailboxes, folders, totals = (
            overview.mailboxes(session),
            overview.folders(session),
            overview.totals(session),
        )
        backlog = mailstore.backlog(session)
        departed = inactive_mailboxes(session, state.settings().mailboxes)
    table = Table(title="mailboxes")
    for column in ("mailbox", "owner", "messages", "last captured"):
        table.add_column(column)
    for box in mailboxes:
        table.add_row(box.name, box.owner, str(box.messages), _when(box.last_captured, "%Y-%m-%d %H:%M"))
    out.print(table)
    for name, owner in departed.items():
        out.print(f"mailbox {name} is not polled: its owner {safe_text(owner)} is inactive (departed)")
    if folders:
        table = Table(title="IMAP folders")
        for column in ("mailbox", "folder", "uidvalidity", "last uid", "last success"):
            table.add_column(column)
        for line in folders:
            table.add_row(line.mailbox, safe_text(line.folder), str(line.uidvalidity), str(line.last_uid),
                          _when(line.last_success, "%Y-%m-%d %H:%M:%S"))  # fmt: skip
        out.print(table)
    table = Table(title="totals")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, count in totals.items():
        table.add_row(label, str(count))
    out.print(table)
    # Captured but not yet parsed, matched and proposed: the next sync pass or the daemon processes them.
    out.print(f"processing backlog: {backlog} message{'s' if backlog != 1 else ''} waiting")
