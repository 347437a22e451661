"""Decisions about a rep, logged as events before they apply: pausing their digest, and their leaving.

A pause comes from the rep (the one-click List-Unsubscribe POST, how="link") or an admin (`mailsync
rep pause`, how="cli"); `mailsync rep resume` undoes it. Each is appended to the event log first
(kind "rep_paused" / "rep_resumed", payload {"rep", "how", "at"}), then applied by `apply_rep_event`
(storage/reps.py, re-exported here), which a rebuild from the event log calls too. Pausing a paused rep
(or resuming an active one) changes nothing and logs nothing, so a second click is harmless.

A rep who left is deactivated (`mailsync rep deactivate`, kind "rep_deactivated"; `rep activate`,
"rep_activated"; same payload, same `apply_rep_event`): their mailboxes are no longer polled
(mailsync/pipeline/active.py), their digest stops, their links and replies decide nothing, and what they
captured stays theirs; `mailsync reassign` hands their open work to a successor. reps.csv's `active`
column says the same thing, so the two meet by one rule: the last explicit statement wins, in event-log
order. A CRM import states `active` only for rows with a true/false value in that column; a file
without the column, or an empty (or unreadable) cell, states nothing and leaves the rep as they are. So
re-importing an old reps.csv never brings back a rep the CLI deactivated, while a newer import that
says `active=true` does. Re-importing the very same files is no new statement (it appends no event,
see crm_import.py) and changes nothing either.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from storage.reps import ACTIVATED, DEACTIVATED, KINDS, PAUSED, RESUMED, apply_rep_event
from storage.reps import find_rep as _rep

if TYPE_CHECKING:
    from storage import models as m
    from storage.eventlog import EventLog
    from storage.repo import Repo

log = structlog.get_logger()
__all__ = [
    "ACTIVATED",
    "DEACTIVATED",
    "KINDS",
    "PAUSED",
    "RESUMED",
    "activate_rep",
    "apply_rep_event",
    "deactivate_rep",
    "pause_rep",
    "resume_rep",
    "would_change",
]


def pause_rep(
    repo: Repo, events: EventLog, rep: str, how: str, *, who: str | None = None, now: datetime | None = None
) -> bool:
    """Stop `rep`'s digests until resumed; False when they were paused already. `who` is the actor
    (default: the rep, as for the one-click link); DecisionError "unknown" for a rep not in the CRM."""
    return _change(repo, events, PAUSED, rep, how, who=who, now=now)


def resume_rep(
    repo: Repo, events: EventLog, rep: str, how: str, *, who: str | None = None, now: datetime | None = None
) -> bool:
    """Send `rep`'s digests again; False when they were not paused."""
    return _change(repo, events, RESUMED, rep, how, who=who, now=now)


def deactivate_rep(
    repo: Repo, events: EventLog, rep: str, how: str, *, who: str, now: datetime | None = None
) -> bool:
    """Mark `rep` as departed (reps.csv active=false); False when they were inactive already."""
    return _change(repo, events, DEACTIVATED, rep, how, who=who, now=now)


def activate_rep(
    repo: Repo, events: EventLog, rep: str, how: str, *, who: str, now: datetime | None = None
) -> bool:
    """Mark `rep` as active again; False when they were active."""
    return _change(repo, events, ACTIVATED, rep, how, who=who, now=now)


def would_change(repo: Repo, kind: str, rep: str) -> tuple[str, bool]:
    """The rep's email as the CRM has it, and whether an event of `kind` would change anything (for
    --dry-run); DecisionError "unknown" for a rep not in the CRM."""
    with repo.session() as session:
        row = _rep(session, rep)
        return row.email, not _already(row, kind)


def _already(row: m.Rep, kind: str) -> bool:
    if kind in {PAUSED, RESUMED}:
        return (row.paused_at is not None) == (kind == PAUSED)
    return row.active == (kind == ACTIVATED)


def _change(
    repo: Repo, events: EventLog, kind: str, rep: str, how: str, *, who: str | None, now: datetime | None
) -> bool:
    with repo.session() as session:
        row = _rep(session, rep)
        if _already(row, kind):
            return False
        email = row.email
    at = (now or datetime.now(UTC)).astimezone(UTC)
    event = events.append(kind, {"rep": email, "how": how, "at": at.isoformat()}, actor=who or email)
    with repo.session() as session:
        apply_rep_event(session, event)
    log.info(kind, rep=email, how=how, event_id=event.id)
    return True
