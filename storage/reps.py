"""Rep events projected into the store: a rep's digest paused or resumed, a rep deactivated or activated.

The decisions themselves (who may take them, logging them first) are mailsync/approval/reps.py's; this
is the projection a live decision and a rebuild from the event log both apply.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from config.errors import DecisionError
from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

    from config.settings import MailboxSettings
    from storage.eventlog import Event

PAUSED, RESUMED = "rep_paused", "rep_resumed"
DEACTIVATED, ACTIVATED = "rep_deactivated", "rep_activated"
KINDS = (PAUSED, RESUMED, DEACTIVATED, ACTIVATED)


def apply_rep_event(session: Session, event: Event) -> None:
    """Project one rep_paused / rep_resumed / rep_deactivated / rep_activated event into the database;
    a second time does nothing."""
    if session.get(m.AppliedEvent, event.id) is not None:
        return
    row = find_rep(session, event.payload["rep"])
    if event.kind in {DEACTIVATED, ACTIVATED}:
        row.active = event.kind == ACTIVATED
    else:
        at = datetime.fromisoformat(event.payload["at"])
        row.paused_at = m.db_time(at) if event.kind == PAUSED else None
    session.add(m.AppliedEvent(id=event.id, kind=event.kind, digest=event.digest))


def find_rep(session: Session, email: str) -> m.Rep:
    """The rep `email` names (or the part before the @, when only one rep has it); DecisionError
    "unknown" for a rep not in the CRM."""
    # Imported here: every sync pass asks owner_inactive, and the decisions store is not needed for that.
    from storage.decisions import rep_email  # noqa: PLC0415

    email = rep_email(session, email) or email
    row = session.scalar(select(m.Rep).where(func.lower(m.Rep.email) == email.strip().lower()))
    if row is None:
        raise DecisionError(
            f"no rep {email} in the CRM",
            reason="unknown",
            fix="check the address, or add the rep to reps.csv and run `mailsync crm import`",
        )
    return row


def owner_inactive(session: Session, owner: str) -> bool:
    """Whether `owner` is a rep the CRM marks inactive (departed); False for an unknown owner."""
    query = select(m.Rep.active).where(func.lower(m.Rep.email) == owner.strip().lower())
    return session.scalar(query) is False


def inactive_mailboxes(session: Session, configured: Iterable[MailboxSettings] = ()) -> dict[str, str]:
    """Mailboxes (name -> owner), known to the database or `configured`, whose owner is an inactive rep:
    what `mailsync status` lists as not polled."""
    departed = {e.lower() for e in session.scalars(select(m.Rep.email).where(m.Rep.active.is_(False)))}
    boxes = dict(session.execute(select(m.Mailbox.name, m.Mailbox.owner)).all())
    boxes |= {box.name: box.owner for box in configured}
    return {name: owner for name, owner in sorted(boxes.items()) if owner.strip().lower() in departed}
