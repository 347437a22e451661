"""Pausing and resuming a rep's digest: decisions about the rep, logged as events before they apply.

A pause comes from the rep (the one-click List-Unsubscribe POST, how="link") or an admin (`mailsync
rep pause`, how="cli"); `mailsync rep resume` undoes it. Each is appended to the event log first
(kind "rep_paused" / "rep_resumed", payload {"rep", "how", "at"}), then applied by `apply_rep_event`,
which a rebuild from the event log calls too. Pausing a paused rep (or resuming an active one) changes
nothing and logs nothing, so a second click is harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import func, select

from config.errors import DecisionError
from storage import models as m

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.eventlog import Event, EventLog
    from storage.repo import Repo

log = structlog.get_logger()
PAUSED, RESUMED = "rep_paused", "rep_resumed"


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


def _change(
    repo: Repo, events: EventLog, kind: str, rep: str, how: str, *, who: str | None, now: datetime | None
) -> bool:
    with repo.session() as session:
        row = _rep(session, rep)
        if (row.paused_at is not None) == (kind == PAUSED):
            return False
        email = row.email
    at = (now or datetime.now(UTC)).astimezone(UTC)
    event = events.append(kind, {"rep": email, "how": how, "at": at.isoformat()}, actor=who or email)
    with repo.session() as session:
        apply_rep_event(session, event)
    log.info(kind, rep=email, how=how, event_id=event.id)
    return True


def apply_rep_event(session: Session, event: Event) -> None:
    """Project one rep_paused / rep_resumed event into the database; a second time does nothing."""
    if session.get(m.AppliedEvent, event.id) is not None:
        return
    row = _rep(session, event.payload["rep"])
    at = datetime.fromisoformat(event.payload["at"])
    row.paused_at = m.db_time(at) if event.kind == PAUSED else None
    session.add(m.AppliedEvent(id=event.id, kind=event.kind, digest=event.digest))


def _rep(session: Session, email: str) -> m.Rep:
    row = session.scalar(select(m.Rep).where(func.lower(m.Rep.email) == email.strip().lower()))
    if row is None:
        raise DecisionError(
            f"no rep {email} in the CRM",
            reason="unknown",
            fix="check the address, or add the rep to reps.csv and run `mailsync crm import`",
        )
    return row
