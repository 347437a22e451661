"""`mailsync rep pause|resume|deactivate|activate`: a rep's digests and their leaving (logged as events,
like every decision; the rules are in mailsync/approval/reps.py)."""

from __future__ import annotations

import getpass
import json
from typing import TYPE_CHECKING, Annotated

import typer

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from mailsync.cli.app import State


_REP = Annotated[str, typer.Argument(help="The rep's email.", show_default=False)]
_JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a sentence.")]
_DRY_RUN = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]


def pause(ctx: typer.Context, rep: _REP) -> None:
    """Stop sending the rep's digest (what the digest's one-click unsubscribe does), until resumed."""
    from mailsync.approval.reps import pause_rep
    from storage.eventlog import EventLog

    state = state_of(ctx)
    events = EventLog(state.settings().events_dir)
    changed = pause_rep(state.repo(), events, rep, "cli", who=f"cli:{getpass.getuser()}")
    out.print(f"{safe_line(rep)}: {'paused' if changed else 'already paused'}")


def resume(ctx: typer.Context, rep: _REP) -> None:
    """Send the rep's digest again after a pause (or a one-click unsubscribe)."""
    from mailsync.approval.reps import resume_rep
    from storage.eventlog import EventLog

    state = state_of(ctx)
    events = EventLog(state.settings().events_dir)
    changed = resume_rep(state.repo(), events, rep, "cli", who=f"cli:{getpass.getuser()}")
    out.print(f"{safe_line(rep)}: {'resumed' if changed else 'not paused'}")


def deactivate(ctx: typer.Context, rep: _REP, as_json: _JSON = False, dry_run: _DRY_RUN = False) -> None:
    """Mark a rep who left as inactive: their mailboxes are no longer polled, their digest stops, what
    they captured stays. `mailsync reassign --from REP --to SUCCESSOR` hands over their open work."""
    from mailsync.approval.reps import DEACTIVATED

    _set_active(state_of(ctx), rep, DEACTIVATED, as_json=as_json, dry_run=dry_run)


def activate(ctx: typer.Context, rep: _REP, as_json: _JSON = False, dry_run: _DRY_RUN = False) -> None:
    """Mark a rep as active again: their mailboxes are polled and their digest sent again."""
    from mailsync.approval.reps import ACTIVATED

    _set_active(state_of(ctx), rep, ACTIVATED, as_json=as_json, dry_run=dry_run)


def _set_active(state: State, rep: str, kind: str, *, as_json: bool, dry_run: bool) -> None:
    from mailsync.approval.reps import DEACTIVATED, activate_rep, deactivate_rep, would_change
    from storage.eventlog import EventLog
    from storage.mailstore import open_suggestions

    settings = state.settings()
    repo = state.repo()
    email, changed = would_change(repo, kind, rep)
    if changed and not dry_run:
        change = deactivate_rep if kind == DEACTIVATED else activate_rep
        changed = change(repo, EventLog(settings.events_dir), email, "cli", who=f"cli:{getpass.getuser()}")
    with repo.session() as session:
        still_open = len(open_suggestions(session, email))
    active = kind != DEACTIVATED
    mailboxes = sorted(mb.name for mb in settings.mailboxes if mb.host and mb.owner.strip().lower() == email)
    if as_json:
        result = {"rep": email, "active": active, "changed": changed, "dry_run": dry_run,
                  "mailboxes": mailboxes, "open_proposals": still_open}  # fmt: skip
        out.print(json.dumps(result, ensure_ascii=True, indent=2), highlight=False)
        return
    word = "active" if active else "inactive"
    done = (f"would be marked {word}" if dry_run else f"marked {word}") if changed else f"already {word}"
    out.print(f"{safe_line(email)}: {done}", highlight=False)
    if mailboxes:
        polled = "polled again" if active else "no longer polled (what they captured stays)"
        out.print(f"mailboxes {', '.join(mailboxes)}: {polled}", highlight=False)
    if not active and still_open:
        out.print(
            f"{still_open} open proposal(s) still theirs: "
            f"mailsync reassign --from {safe_line(email)} --to SUCCESSOR",
            highlight=False,
        )
    if dry_run:
        out.print("dry run: nothing written", highlight=False)
