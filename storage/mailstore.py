"""Messages, their copies, participants, quarantine, threads and suggestions in the database.

A message is captured with status "pending" (its blob archived, its identity and copies recorded) and
leaves that state when the processing stage parsed, threaded, matched and proposed it ("parsed"), or
quarantined it, or kept it as mailsync's own mail ("digest"): the pending messages are the durable
queue of the processing stage.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

from sqlalchemy import and_, bindparam, func, insert, or_, select
from sqlalchemy.orm import load_only
from sqlalchemy.orm.attributes import flag_modified

from storage import models as m
from storage.deal_context import DEAL_SUGGESTIONS, OUTCOMES, evidence_time
from storage.in_lists import chunks
from storage.models import db_time, utcnow
from storage.suggestion_rows import THREAD_KINDS

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from sqlalchemy import Table
    from sqlalchemy.orm import Session

    from storage.records import Match, ParsedEmail, Proposal, Provenance


def ensure_mailbox(session: Session, name: str, owner: str) -> None:
    found = session.scalar(select(m.Mailbox).where(m.Mailbox.name == name))
    if found is None:
        session.add(m.Mailbox(name=name, owner=owner))
    elif found.owner != owner:
        found.owner = owner


class Pending(NamedTuple):
    """A captured message waiting for the processing stage."""

    id: int
    fingerprint: str
    blob_sha256: str
    size: int
    owner: str  # the owner of a mailbox that holds a copy: the rep its proposals are for


def known_blobs(session: Session, shas: Iterable[str]) -> set[str]:
    """Which of `shas` the database names (so the archive holds them durably)."""
    wanted = set(shas)
    return set(session.scalars(select(m.Blob.sha256).where(m.Blob.sha256.in_(wanted)))) if wanted else set()


def messages_by_fingerprint(session: Session, fingerprints: Iterable[str]) -> dict[str, m.Message]:
    wanted = set(fingerprints)
    if not wanted:
        return {}
    return {
        row.fingerprint: row
        for row in session.scalars(select(m.Message).where(m.Message.fingerprint.in_(wanted)))
    }


def known_copies(session: Session, locators: Iterable[str]) -> set[tuple[str, str]]:
    """(blob, locator) pairs already recorded among copies at `locators`."""
    wanted = set(locators)
    if not wanted:
        return set()
    rows = session.execute(
        select(m.Provenance.blob_sha256, m.Provenance.locator).where(m.Provenance.locator.in_(wanted))
    )
    return {(sha, locator) for sha, locator in rows}


def copy_row(message_id: int, sha256: str, provenance: Provenance, seen_at: datetime) -> dict[str, Any]:
    """The provenance row of a copy known to be new (see known_copies), for a bulk insert."""
    return {
        "message_pk": message_id,
        "blob_sha256": sha256,
        "locator": provenance.locator,
        "mailbox": provenance.mailbox,
        "folder": provenance.folder,
        "uidvalidity": provenance.uidvalidity,
        "uid": provenance.uid,
        "path": provenance.path,
        "seen_at": seen_at,
    }


def pending(session: Session, limit: int, after: int = 0) -> list[Pending]:
    """Up to `limit` pending messages with ids above `after`, oldest capture first, each with the owner
    of its first copy."""
    rows = session.execute(
        select(m.Message.id, m.Message.fingerprint, m.Message.blob_sha256, m.Blob.size, m.Mailbox.owner)
        .join(m.Blob, m.Blob.sha256 == m.Message.blob_sha256)
        .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
        .join(m.Mailbox, m.Mailbox.name == m.Provenance.mailbox)
        .where(m.Message.status == "pending", m.Message.id > after)
        .order_by(m.Message.id, m.Provenance.id)
        .limit(limit)
    )
    found: dict[int, Pending] = {}
    for row in rows:
        found.setdefault(row[0], Pending(*row))
    return list(found.values())


_PARSED_COLUMNS = ("subject", "sender", "sent_at", "body_text", "automated", "attachments")  # fill_parsed's


def claim(session: Session, ids: Iterable[int]) -> dict[int, m.Message]:
    """The messages among `ids` still pending, locked for this transaction; on PostgreSQL a message
    another process is processing is skipped, not waited for (SQLite has one writer at a time).

    The columns fill_parsed writes are read too, so that it can leave a message whose parse gave them
    again (a replay) unwritten: an UPDATE of the text rewrites the message's full-text index entry."""
    query = (
        select(m.Message)
        .options(
            load_only(
                m.Message.fingerprint,
                m.Message.blob_sha256,
                m.Message.message_id,
                m.Message.status,
                m.Message.thread_id,
                *(getattr(m.Message, column) for column in _PARSED_COLUMNS),
            )
        )
        .where(m.Message.id.in_(list(ids)), m.Message.status == "pending")
        .with_for_update(skip_locked=True)
    )
    return {row.id: row for row in session.scalars(query)}


def backlog(session: Session) -> int:
    """How many captured messages wait for the processing stage."""
    return (
        session.scalar(select(func.count()).select_from(m.Message).where(m.Message.status == "pending")) or 0
    )


def quarantine(session: Session, message: m.Message, reason: str) -> None:
    message.status = "quarantined"
    session.add(m.Quarantine(message_pk=message.id, reason=reason[:2000]))


def fill_parsed(
    session: Session,
    message: m.Message,
    parsed: ParsedEmail,
    match: Match,
    *,
    people: list[dict[str, Any]] | None = None,
) -> None:
    """Store what later stages need of a parsed message: headers, text, participants, references.
    `people`: the participant rows are appended there, for add_participants, instead of added one by one
    (the ORM inserts those a row per statement on SQLite, to learn each id)."""
    values = dict(
        zip(
            _PARSED_COLUMNS,
            (
                parsed.subject,
                parsed.sender.email if parsed.sender else None,
                db_time(parsed.sent_at),
                parsed.body_text,
                match.automated,
                list(match.attachments),
            ),
            strict=True,
        )
    )
    if any(getattr(message, column) != value for column, value in values.items()):
        # All six written, changed or not: the batch's messages share one column list, so one
        # executemany UPDATE (only the changed ones would give each message its own statement).
        for column, value in values.items():
            setattr(message, column, value)
            flag_modified(message, column)
    rows = [
        {
            "message_pk": message.id,
            "role": person.role,
            "email": person.address.email,
            "name": person.address.name,
            "contact_id": person.contact.id if person.contact else None,
            "account_id": person.account.id if person.account else None,
        }
        for person in match.participants
    ]
    if people is not None:
        people.extend(rows)
    else:
        session.add_all(m.Participant(**row) for row in rows)


def add_participants(session: Session, people: list[dict[str, Any]]) -> None:
    """fill_parsed's participant rows of a batch in one executemany (in order: ids as one by one)."""
    if people:
        session.execute(insert(cast("Table", m.Participant.__table__)), people)


def add_refs(session: Session, message: m.Message, refs: Iterable[str]) -> None:
    """The Message-IDs `message` points at, so that a parent arriving later finds its children."""
    session.add_all(m.MessageRef(message_pk=message.id, ref=ref) for ref in refs)


# Reading a thread's messages, the status is checked in Python, not in SQL: given `thread_id IN (...) AND
# status = 'parsed'`, SQLite's planner (without statistics) took the status index, nearly every row, and
# scanned the whole table per chunk of threads; each batch got slower as the database grew (issue 14's
# growth curve: 8 of 45 s of a 5,000-message import at 55k messages). A thread's other rows are few.
_PARSED = "parsed"


class StoredPerson(NamedTuple):
    """A participant of a stored message, as re-matching it needs (read on the table: no ORM object)."""

    role: str
    name: str
    email: str


StoredThread = list[tuple[m.Message, list[StoredPerson]]]
_participant = m.Participant.__table__.c
_PEOPLE = (
    select(_participant.message_pk, _participant.role, _participant.name, _participant.email)
    .where(_participant.message_pk.in_(bindparam("ids", expanding=True)))
    .order_by(_participant.id)
)


def thread_messages(session: Session, thread_id: int) -> StoredThread:
    """The parsed messages of a thread, oldest first, each with its participants."""
    return threads_messages(session, [thread_id])[thread_id]


def threads_messages(session: Session, thread_ids: Iterable[int]) -> dict[int, StoredThread]:
    """Thread id -> its parsed messages, oldest first (in the database's order of sent_at), each with its
    participants: two queries per chunk of threads, by the thread and participant indexes."""
    wanted = sorted(set(thread_ids))
    found: dict[int, StoredThread] = {t: [] for t in wanted}
    people: dict[int, list[StoredPerson]] = {}
    for chunk in chunks(wanted):
        parsed = [
            msg
            for msg in session.scalars(
                select(m.Message)
                .where(m.Message.thread_id.in_(chunk))
                .order_by(m.Message.thread_id, m.Message.sent_at, m.Message.id)
            )
            if msg.status == _PARSED
        ]
        for msg in parsed:
            people[msg.id] = []
            found[msg.thread_id or 0].append((msg, people[msg.id]))
        for ids in chunks(msg.id for msg in parsed):  # the ORM's select above flushed the session
            for message_pk, role, name, email in session.execute(_PEOPLE, {"ids": ids}):
                people[message_pk].append(StoredPerson(role, name, email))
    return found


def save_proposals(
    session: Session,
    thread_id: int | None,
    proposals: Iterable[Proposal],
    rows: dict[str, m.Suggestion] | None = None,
) -> int:
    """Insert new proposals, refresh open ones; decided ones are never touched. Returns changes.
    `rows`: the suggestions with the proposals' keys, when the caller read them already (kept up to date)."""
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
        if rows is None:
            row = session.scalar(select(m.Suggestion).where(m.Suggestion.key == proposal.key))
        else:
            row = rows.get(proposal.key)
        if row is None:
            row = m.Suggestion(key=proposal.key, status="open", **values)
            session.add(row)
            if rows is not None:
                rows[proposal.key] = row
            changed += 1
        elif row.status == "open":
            fresh = _refresh(row, values)
            if any(getattr(row, k) != v for k, v in fresh.items()):
                for name, value in fresh.items():
                    setattr(row, name, value)
                row.updated_at = utcnow()
                changed += 1
    return changed


def _refresh(row: m.Suggestion, values: dict[str, Any]) -> dict[str, Any]:
    """What re-proposing changes of an open suggestion: all but its owner while it is about the same deal
    (`mailsync reassign` may have moved it to a successor since; a replay must not hand it back)."""
    if row.opportunity_id == values["payload"].get("opportunity_id"):
        return {k: v for k, v in values.items() if k != "owner_rep"}
    return values


def open_suggestions(session: Session, rep: str) -> list[m.Suggestion]:
    """The rep's open suggestions, most confident first."""
    return list(
        session.scalars(
            select(m.Suggestion)
            .where(m.Suggestion.status == "open", func.lower(m.Suggestion.owner_rep) == rep.lower())
            .order_by(m.Suggestion.kind, m.Suggestion.confidence.desc(), m.Suggestion.id)
        )
    )


# --- proposals over time: superseded suggestions, deal context, quiet threads -------------------------


# The reads made for every touched thread, built once: a statement built anew per call cost more than
# the read itself (construction and cache key); the lists go in as expanding parameters. Those that
# read columns only are on the tables (Core): they skip the ORM's per-statement work, autoflush
# included, so their callers flush the session first, as that autoflush did.
_SUGGESTIONS_TO_SYNC = select(m.Suggestion).where(
    or_(
        m.Suggestion.key.in_(bindparam("keys", expanding=True)),
        and_(
            m.Suggestion.thread_id == bindparam("thread_id"),
            m.Suggestion.status == "open",
            m.Suggestion.kind.in_(THREAD_KINDS),
        ),
    )
)
_suggestion = m.Suggestion.__table__.c


def sync_suggestions(
    session: Session,
    thread_id: int,
    proposals: Iterable[Proposal],
    *,
    withdraw: bool = True,
    batch: BatchSuggestions | None = None,
) -> int:
    """save_proposals, plus: a withdrawn suggestion proposed again is open again, and (with `withdraw`)
    an open link/new-opportunity/stage suggestion of this thread that the thread no longer supports is
    withdrawn (a later message showed it was wrong, or a merge left a duplicate). Returns changes.
    `batch`: the suggestions of the caller's batch of threads, read once for all (followups.ThreadViews)."""
    proposals = list(proposals)
    keys = {p.key for p in proposals}
    # One read for all three steps: the rows of the proposals' keys, and this thread's open ones (those
    # whose key is not proposed are what steps 1 and 2 leave alone, so they are read as they start).
    if batch is None:
        rows = list(session.scalars(_SUGGESTIONS_TO_SYNC, {"keys": list(keys), "thread_id": thread_id}))
    else:
        rows = batch.read(thread_id, keys)
    by_key = {row.key: row for row in rows if row.key in keys}
    owners = {p.key: p.owner_rep for p in proposals}
    changed = 0
    for row in by_key.values():
        if row.status == "withdrawn":
            row.status = "open"
            row.owner_rep = owners[row.key]  # proposed anew: for whom it is now (no reassign moved it)
            changed += 1
    changed += save_proposals(session, thread_id, proposals, by_key)
    if withdraw:
        for row in rows:
            if row.key not in keys and row.thread_id == thread_id and row.status == "open":
                row.status = "withdrawn"
                row.updated_at = utcnow()
                changed += 1
    if batch is not None:
        batch.note(dict.fromkeys([*rows, *by_key.values()]))
    return changed


class BatchSuggestions(Protocol):
    """Suggestions read once for a batch of threads (storage/suggestion_rows.py), kept current."""

    def read(self, thread_id: int, keys: Collection[str]) -> list[m.Suggestion]: ...

    def note(self, rows: Iterable[m.Suggestion]) -> None: ...


def open_outcomes(session: Session, thread_ids: Iterable[int]) -> dict[tuple[int, int], datetime]:
    """(thread, deal) -> the earliest evidence of the thread's open won/lost stage change for the deal,
    as deal_context.ContextReads reads it for the deal's other threads."""
    found: dict[tuple[int, int], datetime] = {}
    # Only the threads in SQL: given the kind and status too, SQLite's planner (no statistics) read every
    # open stage change of the database by (kind, status), a cost that grew with it. A thread has few.
    rows = session.execute(
        select(
            _suggestion.thread_id,
            _suggestion.opportunity_id,
            _suggestion.kind,
            _suggestion.status,
            _suggestion.payload["to_stage"].as_string(),
            _suggestion.evidence,
        ).where(_suggestion.thread_id.in_(sorted(set(thread_ids))))
    )
    for thread_id, deal, kind, status, to_stage, evidence in rows:
        if kind != "stage_change" or status != "open" or to_stage not in OUTCOMES:
            continue
        for when in filter(None, map(evidence_time, evidence or ())):
            key = (thread_id, deal)
            found[key] = min(when, found.get(key, when))
    return found


def earliest_outcomes(session: Session, deals: Iterable[int], *, but: set[int]) -> dict[int, datetime]:
    """Deal -> the earliest evidence of an open won/lost stage change for it on a thread not in `but`: the
    date from which deal_context.ContextReads already tells the deal's other threads it is settled."""
    found: dict[int, datetime] = {}
    for _key, on_thread, deal, kind, status, _mode, to_stage, evidence in session.execute(
        DEAL_SUGGESTIONS, {"ids": sorted(set(deals))}
    ):
        if on_thread in but or kind != "stage_change" or status != "open" or to_stage not in OUTCOMES:
            continue
        for when in filter(None, map(evidence_time, evidence or ())):
            found[deal] = min(when, found.get(deal, when))
    return found


def threads_begun_since(
    session: Session, accounts: Iterable[int], since: datetime, until: datetime | None = None
) -> set[int]:
    """Threads with a participant at one of `accounts` that began after `since` (and not after `until`,
    if given; naive UTC)."""
    query = (
        select(m.Message.thread_id)
        .join(m.Participant, m.Participant.message_pk == m.Message.id)
        .join(m.Thread, m.Thread.id == m.Message.thread_id)
        .where(m.Participant.account_id.in_(sorted(set(accounts))), m.Thread.first_at > since)
    )
    if until is not None:
        query = query.where(m.Thread.first_at <= until)
    return {thread_id for thread_id in session.scalars(query.distinct()) if thread_id is not None}


def thread_owners(session: Session, thread_ids: Iterable[int]) -> dict[int, str]:
    """Each thread's owner as processing sees it: the owner of a mailbox holding its latest message."""
    ids = sorted(set(thread_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(m.Message.thread_id, m.Mailbox.owner, m.Message.status)
        .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
        .join(m.Mailbox, m.Mailbox.name == m.Provenance.mailbox)
        .where(m.Message.thread_id.in_(ids))  # the status in Python: see _PARSED
        .order_by(m.Message.sent_at, m.Message.id, m.Provenance.id)
    )
    return {
        thread_id: owner for thread_id, owner, status in rows if thread_id is not None and status == _PARSED
    }


def quiet_threads(session: Session, before: datetime, since: datetime) -> list[tuple[m.Thread, str, str]]:
    """Threads whose last person-written message (not machine mail) is dated in [since, before], each
    with that message's sender and the owner of a mailbox that holds it: candidates for the no-reply
    rule, which decides the rest."""
    latest = (
        select(m.Message.thread_id, func.max(m.Message.sent_at).label("at"))
        .where(m.Message.status == "parsed", m.Message.automated.is_(None), m.Message.thread_id.is_not(None))
        .group_by(m.Message.thread_id)
        .subquery()
    )
    rows = session.execute(
        select(m.Thread, m.Message.sender, m.Mailbox.owner)
        .join(latest, latest.c.thread_id == m.Thread.id)
        .join(m.Message, and_(m.Message.thread_id == m.Thread.id, m.Message.sent_at == latest.c.at))
        .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
        .join(m.Mailbox, m.Mailbox.name == m.Provenance.mailbox)
        .where(latest.c.at <= db_time(before), latest.c.at >= db_time(since))
        .order_by(m.Thread.id, m.Provenance.id)
    )
    found: dict[int, tuple[m.Thread, str, str]] = {}
    for thread, sender, owner in rows:
        found.setdefault(thread.id, (thread, sender or "", owner))
    return list(found.values())


def last_inbound_by_account(session: Session) -> dict[int, datetime]:
    """Account id -> the date of the latest person-written message sent from that account."""
    return {
        account_id: at
        for account_id, at in session.execute(
            select(m.Participant.account_id, func.max(m.Message.sent_at))
            .join(m.Message, m.Message.id == m.Participant.message_pk)
            .where(
                m.Participant.role == "from",
                m.Participant.account_id.is_not(None),
                m.Message.automated.is_(None),
            )
            .group_by(m.Participant.account_id)
        )
        if at is not None and account_id is not None
    }


def quarantine_reason(session: Session, message_pk: int) -> str | None:
    return session.scalar(select(m.Quarantine.reason).where(m.Quarantine.message_pk == message_pk))
