"""`mailsync proposals`, `approve` and `reject`: the open proposals, and decisions taken at the CLI.

A proposal is named by its stable key, a unique prefix of it, or (what the table shows) a unique
prefix of the key's short form. Decisions here are `how="cli"`, by the user running the command, or
by `--as REP` to record one a rep gave by other means; like every decision, each is appended to the
event log before it is applied.
"""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from config.errors import DecisionError
from mailsync.cli.app import err, labelled, out, state_of
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailsync.approval.decisions import DecisionResult

_JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
_DRY_RUN = Annotated[
    bool, typer.Option("--dry-run", help="Check and say what would be done; change nothing.")
]
_KEYS = Annotated[
    list[str], typer.Argument(help="Proposal keys, or the short forms `mailsync proposals` shows.")
]


def proposals(
    ctx: typer.Context,
    rep: Annotated[str | None, typer.Option("--rep", help="Only this rep's proposals (email).")] = None,
    as_json: _JSON = False,
) -> None:
    """List the open proposals: what each asks, how sure it is, and whose it is."""
    from mailsync.approval.decisions import short_id, short_length
    from storage import decisions as store

    with state_of(ctx).repo().session() as session:
        email = _rep(session, rep, "--rep") if rep else None
        lines = store.open_proposals(session, email)
        length = short_length(store.keys(session))
    rows = [
        {
            "id": short_id(line.key, length),
            "key": line.key,
            "kind": line.kind,
            "asks": _sentence(store.describe(line.kind, line.payload, line.subject)) + "?",
            "confidence": round(line.confidence, 2),
            "rep": line.rep,
        }
        for line in lines
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"open proposals{f' of {email}' if email else ''}")
    for column in ("id", "kind", "asks", "confidence", "rep"):
        table.add_column(column, justify="right" if column == "confidence" else "left")
    for row in rows:
        table.add_row(*(safe_line(str(row[c] or "")) for c in ("id", "kind", "asks", "confidence", "rep")))
    out.print(table)
    out.print(f"{len(rows)} open; `mailsync approve ID` or `mailsync reject ID` decides one.")


def approve(  # noqa: PLR0917 - typer passes a command's options by name
    ctx: typer.Context,
    keys: _KEYS,
    edit: Annotated[
        list[str] | None,
        typer.Option("--edit", help="Change a field as you approve: --edit amount=50000. Repeatable."),
    ] = None,
    as_rep: Annotated[
        str | None,
        typer.Option("--as", help="Record the decision as this rep's (email).", show_default=False),
    ] = None,
    as_json: _JSON = False,
    dry_run: _DRY_RUN = False,
) -> None:
    """Approve proposals: the CRM changes as each proposes (with your edits)."""
    _decide(ctx, keys, "approve", _edits(edit or [], len(keys)), as_rep, as_json=as_json, dry_run=dry_run)


def reject(ctx: typer.Context, keys: _KEYS, as_json: _JSON = False, dry_run: _DRY_RUN = False) -> None:
    """Reject proposals: they are closed, and not proposed again from the same evidence."""
    _decide(ctx, keys, "reject", {}, None, as_json=as_json, dry_run=dry_run)


def _rep(session: Session, given: str, option: str) -> str:
    from storage import decisions as store

    email = store.rep_email(session, given)
    if email is None:
        raise DecisionError(
            f"{option} {given}: no such rep in the CRM",
            reason="unknown",
            fix="give a rep's email as reps.csv has it (or the part before the @)",
        )
    return email


def _edits(items: list[str], keys: int) -> dict[str, str]:
    if items and keys != 1:
        raise DecisionError(
            "--edit changes one proposal, and this names several",
            reason="bad_edit",
            fix="approve the one to edit on its own: mailsync approve ID --edit amount=50000",
        )
    edits = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise DecisionError(
                f"--edit {item!r} is not FIELD=VALUE", reason="bad_edit", fix="write --edit amount=50000"
            )
        edits[name.strip()] = value
    return edits


def _decide(
    ctx: typer.Context,
    given: list[str],
    verdict: Literal["approve", "reject"],
    edits: dict[str, str],
    as_rep: str | None,
    *,
    as_json: bool,
    dry_run: bool,
) -> None:
    from mailsync.approval.decisions import DecisionRequest, decide, resolve_key, short_id
    from storage.eventlog import EventLog

    state = state_of(ctx)
    settings = state.settings()
    repo = state.repo()
    who = f"cli:{getpass.getuser()}"
    if as_rep:
        with repo.session() as session:
            who = _rep(session, as_rep, "--as")
    events = EventLog(settings.events_dir)
    outcomes: list[dict[str, object]] = []
    for name in given:
        try:
            key = resolve_key(repo, name)
            request = DecisionRequest(key, verdict, who, "cli", edits)
            result = decide(repo, events, request, stages=settings.stage_for, dry_run=dry_run)
        except DecisionError as exc:
            outcomes.append(
                {"given": name, "ok": False, "reason": exc.reason, "error": str(exc), "fix": exc.fix}
            )
            continue
        outcomes.append(_done(name, short_id(key), result, dry_run=dry_run))
    if as_json:
        _print_json(outcomes)
    else:
        _print(outcomes, verdict, dry_run=dry_run)
    if not all(o["ok"] for o in outcomes):
        raise typer.Exit(1)


def _done(given: str, short: str, result: DecisionResult, *, dry_run: bool) -> dict[str, object]:
    return {
        "given": given,
        "ok": True,
        "id": short,
        "key": result.key,
        "verdict": result.verdict,
        "summary": result.summary,
        "dry_run": dry_run,
    }


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _print_json(value: object) -> None:
    out.print(json.dumps(value, ensure_ascii=True, indent=2), highlight=False)


def _print(outcomes: list[dict[str, object]], verdict: str, *, dry_run: bool) -> None:
    for outcome in outcomes:
        if not outcome["ok"]:
            err.print(labelled("error:", "red", outcome["error"]), highlight=False)
            err.print(labelled("fix:", "bold", outcome["fix"]), highlight=False)
        elif outcome["dry_run"]:
            out.print(
                labelled(f"would {verdict} {outcome['id']}:", "yellow", outcome["summary"]), highlight=False
            )
        else:
            done = {"approve": "approved", "reject": "rejected"}[verdict]
            out.print(labelled(f"{done} {outcome['id']}:", "green", outcome["summary"]), highlight=False)
    if dry_run:
        out.print("dry run: nothing written", highlight=False)
