"""Messages, their copies, participants, quarantine, threads and suggestions in the database."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from storage import models as m
from storage.models import db_time, utcnow

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.orm import Session

    from storage.records import Match, ParsedEmail, Proposal, Provenance

SUBJECT_WINDOW = timedelta(days=45)


def ensure_mailbox(session: Session, name: str, owner: str) -> None:
    found = session.scalar(select(m.Mailbox).where(m.Mailbox.name == name))
    if found is None:
        session.add(m.Mailbox(name=name, owner=owner))
    elif found.owner != owner:
        found.owner = owner


def find_message(session: Session, fingerprint: str) -> m.Message | None:
    return session.scalar(select(m.Message).where(m.Message.fingerprint == fingerprint))


def record_copy(session: Session, message: m.Message, sha256: str, size: int, provenance: Provenance) -> bool:
    """Record that `provenance` carried `message` as blob `sha256`; False when already known."""
    if session.get(m.Blob, sha256) is None:
        session.add(m.Blob(sha256=sha256, size=size))
        session.flush()
    exists = session.scalar(
        select(m.Provenance.id).where(
            m.Provenance.blob_sha256 == sha256, m.Provenance.locator == provenance.locator
        )
    )
    if exists is not None:
        return False
    session.add(
        m.Provenance(
            message_pk=message.id,
            blob_sha256=sha256,
            locator=provenance.locator,
            mailbox=provenance.mailbox,
            folder=provenance.folder,
            uidvalidity=provenance.uidvalidity,
            uid=provenance.uid,
            path=provenance.path,
        )
    )
    return True


def new_message(session: Session, fingerprint: str, sha256: str, size: int, message_id: str) -> m.Message:
    if session.get(m.Blob, sha256) is None:
        session.add(m.Blob(sha256=sha256, size=size))
    row = m.Message(fingerprint=fingerprint, blob_sha256=sha256, message_id=message_id, status="parsed")
    session.add(row)
    session.flush()
    return row


def quarantine(session: Session, message: m.Message, reason: str) -> None:
    message.status = "quarantined"
    session.add(m.Quarantine(message_pk=message.id, reason=reason[:2000]))


def fill_parsed(session: Session, message: m.Message, parsed: ParsedEmail, match: Match) -> None:
    """Store what later stages need of a parsed message: headers, text, participants, references."""
    message.subject = parsed.subject
    message.sender = parsed.sender.email if parsed.sender else None
    message.sent_at = db_time(parsed.sent_at)
    message.body_text = parsed.body_text
    message.automated = match.automated
    for person in match.participants:
        session.add(
            m.Participant(
                message_pk=message.id,
                role=person.role,
                email=person.address.email,
                name=person.address.name,
                contact_id=person.contact.id if person.contact else None,
                account_id=person.account.id if person.account else None,
            )
        )


def assign_thread(
    session: Session,
    message: m.Message,
    *,
    refs: Sequence[str],
    key: str,
    subject_key: str,
    participants: Iterable[str],
    join_by_subject: bool,
) -> m.Thread:
    """Put `message` in its thread (see mailsync/thread.py for the rules), merging threads it joins."""
    session.add_all(m.MessageRef(message_pk=message.id, ref=ref) for ref in refs)
    session.flush()
    ids = set(
        session.scalars(
            select(m.Message.thread_id).where(
                m.Message.message_id.in_(refs), m.Message.thread_id.is_not(None)
            )
        )
    )
    ids |= set(
        session.scalars(
            select(m.Message.thread_id)
            .join(m.MessageRef, m.MessageRef.message_pk == m.Message.id)
            .where(m.MessageRef.ref.in_([*refs, message.message_id]), m.Message.thread_id.is_not(None))
        )
    )  # children that arrived first, and siblings that point at the same (perhaps missing) ancestors
    ids |= set(session.scalars(select(m.Thread.id).where(m.Thread.key.in_([*refs, key, message.message_id]))))
    ids.discard(None)
    if not ids and join_by_subject and not refs:
        found = _thread_by_subject(session, subject_key, message, participants)
        if found is not None:
            ids.add(found)
    if ids:
        thread = _merge(session, sorted(i for i in ids if i is not None))
    else:
        thread = m.Thread(key=key, subject=message.subject, subject_key=subject_key)
        session.add(thread)
        session.flush()
    message.thread_id = thread.id
    when = message.sent_at
    if when is not None:
        if thread.first_at is None or when < thread.first_at:
            thread.first_at = when
            thread.subject = message.subject or thread.subject
        if thread.last_at is None or when > thread.last_at:
            thread.last_at = when
    return thread


def _thread_by_subject(
    session: Session, key: str, message: m.Message, participants: Iterable[str]
) -> int | None:
    query = select(m.Thread.id).where(m.Thread.subject_key == key)
    if message.sent_at is not None:
        query = query.where(
            m.Thread.last_at >= message.sent_at - SUBJECT_WINDOW,
            m.Thread.first_at <= message.sent_at + SUBJECT_WINDOW,
        )
    people = list(participants)
    for thread_id in session.scalars(query.order_by(m.Thread.last_at.desc()).limit(5)):
        shared = session.scalar(
            select(func.count())
            .select_from(m.Participant)
            .join(m.Message, m.Message.id == m.Participant.message_pk)
            .where(m.Message.thread_id == thread_id, m.Participant.email.in_(people))
        )
        if shared:
            return thread_id
    return None


def _merge(session: Session, ids: list[int]) -> m.Thread:
    """Fold every thread in `ids` into the oldest one; returns it."""
    keep = session.get_one(m.Thread, ids[0])
    for other_id in ids[1:]:
        other = session.get_one(m.Thread, other_id)
        session.execute(update(m.Message).where(m.Message.thread_id == other_id).values(thread_id=keep.id))
        session.execute(
            update(m.Suggestion).where(m.Suggestion.thread_id == other_id).values(thread_id=keep.id)
        )
        if keep.opportunity_id is None:
            keep.opportunity_id = other.opportunity_id
        for attr, pick in (("first_at", min), ("last_at", max)):
            values = [v for v in (getattr(keep, attr), getattr(other, attr)) if v is not None]
            setattr(keep, attr, pick(values) if values else None)
        session.delete(other)
    session.flush()
    return keep


def thread_messages(session: Session, thread_id: int) -> list[tuple[m.Message, list[m.Participant]]]:
    """The parsed messages of a thread, oldest first, each with its participants."""
    messages = list(
        session.scalars(
            select(m.Message)
            .where(m.Message.thread_id == thread_id, m.Message.status == "parsed")
            .order_by(m.Message.sent_at, m.Message.id)
        )
    )
    people: dict[int, list[m.Participant]] = {msg.id: [] for msg in messages}
    for person in session.scalars(
        select(m.Participant).where(m.Participant.message_pk.in_(people)).order_by(m.Participant.id)
    ):
        people[person.message_pk].append(person)
    return [(msg, people[msg.id]) for msg in messages]


def save_proposals(session: Session, thread_id: int | None, proposals: Iterable[Proposal]) -> int:
    """Insert new proposals, refresh open ones; decided ones are never touched. Returns changes."""
    changed = 0
    for proposal in proposals:
        values: dict[str, Any] = {
            "kind": str(proposal.kind),
            "summary": proposal.summary,
            "payload": dict(proposal.payload),
            "confidence": round(proposal.confidence, 3),
            "evidence": [
                {
                    "fingerprint": e.fingerprint,
                    "sent_at": e.sent_at.isoformat() if e.sent_at else None,
                    "quote": e.quote,
                }
                for e in proposal.evidence
            ],
            "owner_rep": proposal.owner_rep,
            "thread_id": thread_id,
        }
        row = session.scalar(select(m.Suggestion).where(m.Suggestion.key == proposal.key))
        if row is None:
            session.add(m.Suggestion(key=proposal.key, status="open", **values))
            changed += 1
        elif row.status == "open" and any(getattr(row, k) != v for k, v in values.items()):
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            changed += 1
    return changed


def open_suggestions(session: Session, rep: str) -> list[m.Suggestion]:
    """The rep's open suggestions, most confident first."""
    return list(
        session.scalars(
            select(m.Suggestion)
            .where(m.Suggestion.status == "open", func.lower(m.Suggestion.owner_rep) == rep.lower())
            .order_by(m.Suggestion.kind, m.Suggestion.confidence.desc(), m.Suggestion.id)
        )
    )
