"""Read-only views of the database for people: what `status`, `quarantine`, `verify` and `digest` show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from storage import models as m

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class MailboxLine:
    name: str
    owner: str
    messages: int
    last_captured: datetime | None


@dataclass(frozen=True, slots=True)
class FolderLine:
    mailbox: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    last_success: datetime | None


@dataclass(frozen=True, slots=True)
class QuarantineLine:
    reason: str
    first_seen_at: str  # the first provenance's locator
    archive_key: str


@dataclass(frozen=True, slots=True)
class RepLine:
    email: str
    name: str


def mailboxes(session: Session) -> list[MailboxLine]:
    """Each mailbox with the number of messages captured from it and when the last one came."""
    rows = session.execute(
        select(
            m.Mailbox.name,
            m.Mailbox.owner,
            func.count(func.distinct(m.Provenance.message_pk)),
            func.max(m.Provenance.seen_at),
        )
        .join(m.Provenance, m.Provenance.mailbox == m.Mailbox.name, isouter=True)
        .group_by(m.Mailbox.name, m.Mailbox.owner)
        .order_by(m.Mailbox.name)
    )
    return [MailboxLine(*row) for row in rows]


def folders(session: Session) -> list[FolderLine]:
    """Each IMAP folder's cursor."""
    rows = session.execute(
        select(
            m.Mailbox.name,
            m.FolderState.name,
            m.FolderState.uidvalidity,
            m.FolderState.last_uid,
            m.FolderState.last_success_at,
        )
        .join(m.Mailbox, m.Mailbox.id == m.FolderState.mailbox_id)
        .order_by(m.Mailbox.name, m.FolderState.name)
    )
    return [FolderLine(*row) for row in rows]


def totals(session: Session) -> dict[str, int]:
    """Messages, threads, quarantined messages and open proposals."""
    queries = {
        "messages": select(func.count()).select_from(m.Message),
        "threads": select(func.count()).select_from(m.Thread),
        "quarantined": select(func.count()).select_from(m.Quarantine),
        "open proposals": select(func.count()).select_from(m.Suggestion).where(m.Suggestion.status == "open"),
    }
    return {label: session.scalar(query) or 0 for label, query in queries.items()}


def quarantined(session: Session) -> list[QuarantineLine]:
    """Every quarantined message, oldest first, with where it was first seen."""
    rows = session.execute(
        select(m.Quarantine.reason, func.min(m.Provenance.locator), m.Message.blob_sha256)
        .join(m.Message, m.Message.id == m.Quarantine.message_pk)
        .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
        .group_by(m.Quarantine.id, m.Quarantine.reason, m.Message.blob_sha256)
        .order_by(m.Quarantine.id)
    )
    return [QuarantineLine(*row) for row in rows]


def known_blobs(session: Session) -> list[str]:
    """The SHA-256 of every blob the database names."""
    return list(session.scalars(select(m.Blob.sha256)))


def active_reps(session: Session) -> list[RepLine]:
    """The reps who get a digest, by email."""
    rows = session.execute(select(m.Rep.email, m.Rep.name).where(m.Rep.active).order_by(m.Rep.email))
    return [RepLine(*row) for row in rows]
