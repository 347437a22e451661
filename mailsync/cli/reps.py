"""`mailsync rep pause|resume`: stop and restart a rep's digests (logged as events, like every decision)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_line

rep_app = typer.Typer(help="Reps: pause and resume their digest.", no_args_is_help=True)

_REP = Annotated[str, typer.Argument(help="The rep's email.", show_default=False)]


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
