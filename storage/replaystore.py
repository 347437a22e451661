"""Replay's queries: which archived messages to process again, putting them back in the queue, and
the marker that lets a killed replay resume.

A message goes back to the processing queue (status "pending") without what processing derived from
it (participants, references; for a re-parse its quarantine record too; for a re-thread its thread),
because processing adds those again. Threads, suggestions, decisions and the CRM stay: a thread is
found again by its key (the root Message-ID), a decided suggestion is never touched by processing,
and an approved link lives on its thread.

The marker is a row of `applied_event` (kind "replay", id "replay:<selection digest>", digest
"mark:<last id queued>" while queuing, "drain" once all are queued), written in the transaction of
each chunk, so a replay started again with the same selection continues where the killed one
stopped; a replay that drained the queue empty removes every marker.

`insert_copies` is the rebuild's form of capture's record_copies: the same rows (blobs, messages
"pending", copies, with the journal's times), in three set-based INSERTs for a batch instead of an ORM
object per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, select, update

from storage import mailstore
from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime

    from sqlalchemy.orm import Session
    from sqlalchemy.sql.elements import ColumnElement

    from storage.journal import CopySeen

MARKER_KIND = "replay"
DRAINING = "drain"


def _selected(
    mailbox: str | None, since: datetime | None, statuses: Collection[str]
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [m.Message.status.in_(list(statuses))]
    if mailbox is not None:
        copied = select(m.Provenance.message_pk).where(m.Provenance.mailbox == mailbox)
        where.append(m.Message.id.in_(copied))
    if since is not None:
        where.append(func.coalesce(m.Message.sent_at, m.Message.captured_at) >= since)
    return where


def count_selected(
    session: Session,
    *,
    mailbox: str | None,
    since: datetime | None,
    statuses: Collection[str],
    after: int = 0,
) -> int:
    query = select(func.count()).select_from(m.Message).where(m.Message.id > after)
    return session.scalar(query.where(*_selected(mailbox, since, statuses))) or 0


def next_chunk(
    session: Session,
    *,
    mailbox: str | None,
    since: datetime | None,
    statuses: Collection[str],
    after: int,
    limit: int,
) -> list[int]:
    """Ids of up to `limit` selected messages above `after`, in order."""
    query = (
        select(m.Message.id)
        .where(m.Message.id > after, *_selected(mailbox, since, statuses))
        .order_by(m.Message.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def requeue(session: Session, ids: Sequence[int], *, unquarantine: bool, rethread: bool) -> int:
    """Put the messages `ids` back in the processing queue, without what processing derived from them;
    returns how many changed status (those pending already only lose leftovers, if any)."""
    if not ids:
        return 0
    wanted = list(ids)
    session.execute(delete(m.Participant).where(m.Participant.message_pk.in_(wanted)))
    session.execute(delete(m.MessageRef).where(m.MessageRef.message_pk.in_(wanted)))
    statuses = ["parsed", "pending"]
    if unquarantine:
        session.execute(delete(m.Quarantine).where(m.Quarantine.message_pk.in_(wanted)))
        statuses.append("quarantined")
    values: dict[str, object] = {"status": "pending"}
    if rethread:
        values["thread_id"] = None
    changed = session.execute(
        update(m.Message)
        .where(m.Message.id.in_(wanted), m.Message.status.in_(statuses), m.Message.status != "pending")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if rethread:  # those pending already lose their thread too: they are threaded afresh
        session.execute(
            update(m.Message)
            .where(m.Message.id.in_(wanted), m.Message.status == "pending")
            .values(thread_id=None)
            .execution_options(synchronize_session=False)
        )
    return int(getattr(changed, "rowcount", 0) or 0)


def marker(session: Session, key: str) -> str | None:
    """The state of the replay of selection `key`: "mark:<id>", "drain", or None (not started)."""
    row = session.get(m.AppliedEvent, _marker_id(key))
    return row.digest if row is not None else None


def set_marker(session: Session, key: str, state: str) -> None:
    row = session.get(m.AppliedEvent, _marker_id(key))
    if row is None:
        session.add(m.AppliedEvent(id=_marker_id(key), kind=MARKER_KIND, digest=state))
    else:
        row.digest = state


def clear_markers(session: Session) -> int:
    result = session.execute(delete(m.AppliedEvent).where(m.AppliedEvent.kind == MARKER_KIND))
    return int(getattr(result, "rowcount", 0) or 0)


def _marker_id(key: str) -> str:
    return f"{MARKER_KIND}:{key[:40]}"


def state_counts(session: Session) -> dict[str, int]:
    """What a replay summary compares before and after: messages by status, threads, suggestions by
    status, decisions."""
    counts: dict[str, int] = {}
    for status, n in session.execute(select(m.Message.status, func.count()).group_by(m.Message.status)):
        counts[f"messages_{status}"] = int(n)
    for status, n in session.execute(select(m.Suggestion.status, func.count()).group_by(m.Suggestion.status)):
        counts[f"proposals_{status}"] = int(n)
    counts["threads"] = session.scalar(select(func.count()).select_from(m.Thread)) or 0
    counts["threads_linked"] = (
        session.scalar(select(func.count()).select_from(m.Thread).where(m.Thread.opportunity_id.is_not(None)))
        or 0
    )
    counts["decisions"] = session.scalar(select(func.count()).select_from(m.Decision)) or 0
    return counts


def insert_copies(session: Session, copies: Sequence[CopySeen]) -> int:
    """Record journalled copies (each with its fingerprint) as capture's record_copies does, without
    the ORM: blobs and messages not yet known, then copies not yet recorded, each message with the
    time and blob of its first copy, ids in journal order. Returns the new messages."""
    for mailbox, owner in {c.provenance.mailbox: c.owner for c in copies}.items():  # the latest owner wins
        mailstore.ensure_mailbox(session, mailbox, owner)
    fingerprints = {c.fingerprint for c in copies if c.fingerprint}
    known = select(m.Message.fingerprint, m.Message.id).where(m.Message.fingerprint.in_(fingerprints))
    ids: dict[str, int] = dict(session.execute(known).all())
    blobs = mailstore.known_blobs(session, (c.sha256 for c in copies))
    recorded = mailstore.known_copies(session, (c.provenance.locator for c in copies))
    new_blobs: list[dict[str, object]] = []
    new_messages: dict[str, dict[str, object]] = {}
    new_copies: list[CopySeen] = []
    for copy in copies:
        fingerprint = str(copy.fingerprint)
        if copy.sha256 not in blobs:
            blobs.add(copy.sha256)
            new_blobs.append({"sha256": copy.sha256, "size": copy.size, "archived_at": copy.seen_at})
        if fingerprint not in ids and fingerprint not in new_messages:
            new_messages[fingerprint] = {
                "fingerprint": fingerprint,
                "blob_sha256": copy.sha256,
                "message_id": copy.message_id or f"{fingerprint}@mailsync.invalid",
                "status": "pending",
                "captured_at": copy.seen_at,
            }
        if (copy.sha256, copy.provenance.locator) not in recorded:
            recorded.add((copy.sha256, copy.provenance.locator))
            new_copies.append(copy)
    if new_blobs:
        session.execute(insert(m.Blob), new_blobs)
    if new_messages:
        session.execute(insert(m.Message), list(new_messages.values()))
        made = select(m.Message.fingerprint, m.Message.id).where(
            m.Message.fingerprint.in_(list(new_messages))
        )
        ids.update((fingerprint, message_id) for fingerprint, message_id in session.execute(made))
    if new_copies:
        session.execute(
            insert(m.Provenance),
            [
                {
                    "message_pk": ids[str(copy.fingerprint)],
                    "blob_sha256": copy.sha256,
                    "locator": copy.provenance.locator,
                    "mailbox": copy.provenance.mailbox,
                    "folder": copy.provenance.folder,
                    "uidvalidity": copy.provenance.uidvalidity,
                    "uid": copy.provenance.uid,
                    "path": copy.provenance.path,
                    "seen_at": copy.seen_at,
                }
                for copy in new_copies
            ],
        )
    return len(new_messages)
