"""`mailsync digest`: each rep's digest of open proposals, sent by SMTP or written out for preview."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from config.errors import ConfigError
from mailsync.cli.app import State, err, labelled, out, state_of
from mailsync.mail.display import safe_line
from storage.private import private_file

if TYPE_CHECKING:
    from mailsync.approval.send import Outcome


def digest(
    ctx: typer.Context,
    send: Annotated[
        bool,
        typer.Option(
            "--send",
            help="Send by SMTP: with --rep that rep's digest now; without, every rep whose send time has "
            "passed today. Never twice in one period; nothing when nothing is new.",
        ),
    ] = False,
    preview: Annotated[
        Path | None,
        typer.Option(
            "--preview",
            help="Write the digest here instead of sending it: a .html file, or a directory for every rep.",
        ),
    ] = None,
    rep: Annotated[
        str | None, typer.Option("--rep", help="The rep's email; default: every active rep.")
    ] = None,
) -> None:
    """Send each rep's digest of open proposals (--send), or render it for preview (--preview)."""
    if send == (preview is not None):
        raise ConfigError(
            "`mailsync digest` needs one of --send and --preview",
            fix="mailsync digest --send [--rep R], or mailsync digest --preview DIR",
        )
    state = state_of(ctx)
    if preview is not None:
        _preview(state, preview, rep)
        return
    outcomes = _send(state, rep)
    for outcome in outcomes:
        _report(outcome)
    if not outcomes:
        out.print("no rep is due yet (use --rep R to send one now)")
    if any(o.status == "failed" for o in outcomes):
        raise typer.Exit(1)


def _send(state: State, rep: str | None) -> list[Outcome]:
    from mailsync.approval.links import LinkSigner
    from mailsync.approval.send import DigestSender

    settings = state.settings()
    sender = DigestSender(settings, state.repo(), LinkSigner.from_settings(settings.web))
    return [sender.send_now(rep)] if rep is not None else sender.send_due()


_SKIPPED = {
    "already_sent": "already sent for {period}: never twice in one period",
    "nothing_new": "nothing new since the last digest: not sent",
    "in_progress": "being sent by another mailsync process",
    "paused": "paused (mailsync rep resume REP): not sent",
    "inactive": "inactive (departed): not sent",
}


def _report(outcome: Outcome) -> None:
    who = safe_line(outcome.rep)
    if outcome.status == "sent":
        out.print(f"{who}: sent, {outcome.items} proposal(s), {outcome.message_id}")
    elif outcome.status == "skipped":
        out.print(f"{who}: " + _SKIPPED[outcome.reason].format(period=outcome.period))
    else:
        err.print(labelled(f"{who}:", "red", outcome.reason), highlight=False)
        if outcome.fix:
            err.print(labelled("  fix:", "bold", outcome.fix), highlight=False)


def _preview(state: State, preview: Path, rep: str | None) -> None:
    from mailsync.approval.digest import render_digest
    from storage.mailstore import open_suggestions
    from storage.overview import RepLine, active_reps

    now = datetime.now(UTC)
    with state.repo().session() as session:
        reps = active_reps(session)
        if rep is not None:
            reps = [r for r in reps if r.email == rep.lower()] or [RepLine(rep.lower(), "")]
        single = rep is not None and preview.suffix == ".html"
        for person in reps:
            rendered = render_digest(person.email, person.name, open_suggestions(session, person.email), now)
            target = preview if single else preview / f"digest-{person.email.split('@')[0]}.html"
            # The preview holds mail text, like everything under the data directory: private.
            private_file(target.with_suffix(".txt")).write_text(rendered.text, encoding="utf-8")
            private_file(target).write_text(rendered.html, encoding="utf-8")
            out.print(f"{safe_line(person.email)}: {rendered.items} proposal(s) -> {target} (+ .txt)")
