"""`mailsync search` and `mailsync show`: find archived mail, and read one conversation with its CRM side.

Everything printed from mail (subjects, addresses, excerpts, summaries) goes through safe_line: the
consoles have markup off, and safe_line removes the control and format characters (terminal escapes,
bidi overrides) and line breaks that could disguise a cell.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from datetime import datetime

    from storage.search import Hit
    from storage.threadview import ThreadView

_JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
_ADDRESS_HELP = "an address, or @domain for everyone at a domain"


def search(  # noqa: PLR0917 - typer passes a command's options by name
    ctx: typer.Context,
    query: Annotated[
        str,
        typer.Argument(
            help='Words that must all occur (subject, sender or body): "a phrase", pric* (prefix), '
            "a OR b, -word (leave out). Case is ignored, accents are not.",
            show_default=False,
        ),
    ] = "",
    sender: Annotated[str | None, typer.Option("--from", help=f"Sent by: {_ADDRESS_HELP}.")] = None,
    recipient: Annotated[str | None, typer.Option("--to", help=f"To or Cc: {_ADDRESS_HELP}.")] = None,
    participant: Annotated[
        str | None, typer.Option("--participant", help=f"From, To or Cc: {_ADDRESS_HELP}.")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="These words, in order, in the subject.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Sent on or after this date (2024-03-04).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="Sent on or before this date.")] = None,
    mailbox: Annotated[str | None, typer.Option("--mailbox", help="Captured from this mailbox.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many.")] = 20,
    as_json: _JSON = False,
) -> None:
    """Search archived mail, newest first; `mailsync show ID` prints a result's conversation."""
    from storage.search import Search, parse_day
    from storage.search import search as run_search
    from storage.search_query import parse_query

    request = Search(
        query=parse_query(query),
        sender=sender,
        recipient=recipient,
        participant=participant,
        subject=subject,
        since=parse_day(since, "--since") if since else None,
        until=parse_day(until, "--until", end=True) if until else None,
        mailbox=mailbox,
        limit=limit,
    )
    with state_of(ctx).repo().session() as session:
        hits = run_search(session, request)
    if as_json:
        _print_json([_hit(hit) for hit in hits])
        return
    table = Table(title="search results, newest first")
    for column in ("id", "date", "from", "subject", "excerpt"):
        table.add_column(column, justify="right" if column == "id" else "left", overflow="fold")
    for hit in hits:
        table.add_row(
            str(hit.id), _when(hit.sent_at), safe_line(hit.sender or ""), safe_line(hit.subject),
            safe_line(hit.excerpt),
        )  # fmt: skip
    out.print(table)
    more = " (the limit: --limit N shows more)" if len(hits) == limit else ""
    out.print(f"{len(hits)} found{more}; `mailsync show ID` prints one's conversation.", highlight=False)


def show(
    ctx: typer.Context,
    message_id: Annotated[int, typer.Argument(help="A message id from `mailsync search`.")],
    as_json: _JSON = False,
) -> None:
    """Print a message's conversation: its messages, the contacts, accounts and deal it was matched to,
    and the proposals made from it with every decision (who, when, how)."""
    from storage.threadview import thread_view

    with state_of(ctx).repo().session() as session:
        view = thread_view(session, message_id)
    if as_json:
        _print_json(_view(view))
        return
    _print_view(view)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _hit(hit: Hit) -> dict[str, Any]:
    return {
        "id": hit.id, "sent_at": _iso(hit.sent_at), "from": hit.sender, "subject": hit.subject,
        "status": hit.status, "thread_id": hit.thread_id, "mailboxes": list(hit.mailboxes),
        "excerpt": hit.excerpt,
    }  # fmt: skip


def _view(view: ThreadView) -> dict[str, Any]:
    opp = view.opportunity
    return {
        "message_id": view.message_id,
        "thread_id": view.thread_id,
        "subject": view.subject,
        "messages": [
            {
                "id": x.id,
                "sent_at": _iso(x.sent_at),
                "from": x.sender,
                "subject": x.subject,
                "status": x.status,
                "excerpt": x.excerpt,
            }
            for x in view.messages
        ],
        "contacts": [
            {"id": c.id, "external_id": c.external_id, "name": c.name, "emails": list(c.emails)}
            for c in view.contacts
        ],
        "accounts": [
            {"id": a.id, "external_id": a.external_id, "name": a.name, "emails": list(a.emails)}
            for a in view.accounts
        ],
        "opportunity": None
        if opp is None
        else {
            "id": opp.id,
            "external_id": opp.external_id,
            "name": opp.name,
            "stage": opp.stage,
            "amount": None if opp.amount is None else str(opp.amount),
            "currency": opp.currency,
            "owner_rep": opp.owner_rep,
        },
        "proposals": [
            {
                "key": p.key,
                "kind": p.kind,
                "status": p.status,
                "summary": p.summary,
                "confidence": round(p.confidence, 2),
                "rep": p.rep,
                "decisions": [
                    {"verdict": d.verdict, "who": d.who, "how": d.how, "at": _iso(d.at), "edits": d.edits}
                    for d in p.decisions
                ],
            }
            for p in view.proposals
        ],
    }


def _print_json(value: object) -> None:
    out.print(json.dumps(value, ensure_ascii=True, indent=2), highlight=False)


def _print_view(view: ThreadView) -> None:
    title = (
        f"conversation {view.thread_id}" if view.thread_id is not None else "message (not in a conversation)"
    )
    out.print(Text.assemble((title + ": ", "bold"), safe_line(view.subject)), highlight=False)
    messages = Table(title="messages, oldest first")
    for column in ("id", "date", "from", "subject", "excerpt"):
        messages.add_column(column, justify="right" if column == "id" else "left", overflow="fold")
    for x in view.messages:
        mark = ">" if x.id == view.message_id else ""
        status = "" if x.status == "parsed" else f" ({x.status})"
        messages.add_row(
            f"{mark}{x.id}", _when(x.sent_at), safe_line(x.sender or ""), safe_line(x.subject) + status,
            safe_line(x.excerpt),
        )  # fmt: skip
    out.print(messages)
    matches = Table(title="matched in the CRM")
    for column in ("what", "name", "id", "by"):
        matches.add_column(column, overflow="fold")
    for what, items in (("contact", view.contacts), ("account", view.accounts)):
        for item in items:
            matches.add_row(what, safe_line(item.name), safe_line(item.external_id or str(item.id)),
                            safe_line(", ".join(item.emails)))  # fmt: skip
    if view.opportunity is not None:
        opp = view.opportunity
        amount = f"{opp.amount} {opp.currency or ''}".strip() if opp.amount is not None else ""
        matches.add_row("opportunity", safe_line(opp.name), safe_line(opp.external_id or str(opp.id)),
                        safe_line(f"{opp.stage} {amount}, {opp.owner_rep or 'no owner'}"))  # fmt: skip
    out.print(matches if matches.row_count else "matched in the CRM: nothing", highlight=False)
    proposals = Table(title="proposals and decisions")
    for column in ("kind", "status", "proposal", "rep", "decisions"):
        proposals.add_column(column, overflow="fold")
    for p in view.proposals:
        decided = "; ".join(f"{d.verdict} by {d.who} via {d.how} at {_when(d.at)}" for d in p.decisions)
        proposals.add_row(p.kind, p.status, safe_line(p.summary), safe_line(p.rep or ""), safe_line(decided))
    out.print(proposals if proposals.row_count else "proposals: none", highlight=False)
