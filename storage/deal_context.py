"""What the mail elsewhere says of the threads the propose stage reads, read once for all of them.

For each thread it proposes for, the propose stage needs, beyond the thread's own mail: when each
candidate deal was opened, who wrote on the deal's other threads, when another thread's mail won or
lost it, and which of the thread's senders an older thread already proposed as a new deal. Read thread
by thread, that was five statements and two flushes for every thread a batch touched. ContextReads
reads it for all of a batch's threads in five statements, then keeps it current with the suggestions
the batch writes (`saw`): a thread proposed later in the batch reads what the earlier ones proposed,
exactly as it would read them back from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import bindparam, select

from storage import models as m
from storage.in_lists import chunks
from storage.models import contact_emails, db_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session

OUTCOMES = frozenset({"closed_won", "closed_lost"})
NEW_OPPORTUNITY = "new_opportunity"

# Built once, on the tables (Core): a statement built anew per call cost more than the read, and Core
# skips the ORM's per-statement work, autoflush included (ContextReads flushes first). Only the deal or
# the address is in SQL: SQLite (no statistics) would otherwise read by kind and status, every open
# suggestion of a kind.
_opportunity, _thread, _suggestion = m.Opportunity.__table__.c, m.Thread.__table__.c, m.Suggestion.__table__.c
_message, _participant = m.Message.__table__.c, m.Participant.__table__.c
_contact = m.SuggestionContact.__table__.c
_OPENED = select(_opportunity.id, _opportunity.created_at).where(
    _opportunity.id.in_(bindparam("ids", expanding=True))
)
_DEAL_THREADS = select(_thread.id, _thread.opportunity_id).where(
    _thread.opportunity_id.in_(bindparam("ids", expanding=True))
)
_COLUMNS = (
    _suggestion.key,
    _suggestion.thread_id,
    _suggestion.opportunity_id,
    _suggestion.kind,
    _suggestion.status,
    _suggestion.payload["mode"].as_string(),
    _suggestion.payload["to_stage"].as_string(),
    _suggestion.evidence,
)
DEAL_SUGGESTIONS = select(*_COLUMNS).where(_suggestion.opportunity_id.in_(bindparam("ids", expanding=True)))
_PROPOSED_TO = (
    select(_contact.email, *_COLUMNS)
    .join(m.Suggestion.__table__, _suggestion.id == _contact.suggestion_id)
    .where(_contact.email.in_(bindparam("emails", expanding=True)))
)
_THREAD_PEOPLE = (
    select(_message.thread_id, _participant.email)
    .join(m.Participant.__table__, _participant.message_pk == _message.id)
    .where(
        _message.thread_id.in_(bindparam("threads", expanding=True)),
        _participant.contact_id.is_not(None),
        _participant.role == "from",
    )
)


class DealContext(NamedTuple):
    """What the mail elsewhere says of a thread's candidate deals."""

    opened: dict[int, datetime]  # deal -> created_at in the CRM
    history: dict[int, frozenset[str]]  # deal -> CRM contacts who wrote on its other threads
    settled: dict[int, datetime]  # deal -> when another thread's customer won or lost it (not yet decided)


@dataclass(frozen=True, slots=True)
class _Suggestion:
    """A suggestion as these reads need it."""

    thread_id: int | None
    deal: int | None
    kind: str
    status: str
    mode: str | None
    to_stage: str | None
    evidence: list[Any]
    emails: frozenset[str]  # its contacts' addresses (lower-cased), those asked about at least

    def outcome_dates(self) -> list[datetime]:
        """The dates of an open won/lost stage change's evidence; none for any other suggestion."""
        if self.kind != "stage_change" or self.status != "open" or self.to_stage not in OUTCOMES:
            return []
        return [when for when in map(evidence_time, self.evidence or ()) if when is not None]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class ContextReads:
    """The deal context and earlier proposals of a set of threads, read at once (see the module doc).

    `deals`: every candidate deal of the threads; `senders`: their outside senders; `threads`: the
    threads themselves (the batch may link them to a deal, so their writers are read too)."""

    def __init__(
        self, session: Session, deals: Iterable[int], senders: Iterable[str], threads: Iterable[int]
    ) -> None:
        self._session = session
        self._rows: dict[str, _Suggestion] = {}  # suggestion key -> as last read or written
        self._by_deal: dict[int, set[str]] = {}
        self._by_email: dict[str, set[str]] = {}
        ids, emails = sorted(set(deals)), sorted({email.lower() for email in senders})
        session.flush()  # the reads are Core statements: no autoflush of their own
        self._opened: dict[int, datetime] = dict(session.execute(_OPENED, {"ids": ids}).all()) if ids else {}
        self._deal_threads: dict[int, set[int]] = {}  # deal -> the threads the CRM links to it
        for thread_id, deal in session.execute(_DEAL_THREADS, {"ids": ids}) if ids else ():
            self._deal_threads.setdefault(deal, set()).add(thread_id)
        found: dict[str, tuple[Any, ...]] = {}
        contacts: dict[str, set[str]] = {}
        for key, *rest in session.execute(DEAL_SUGGESTIONS, {"ids": ids}) if ids else ():
            found[key] = tuple(rest)
        for email, key, *rest in session.execute(_PROPOSED_TO, {"emails": emails}) if emails else ():
            found[key] = tuple(rest)
            contacts.setdefault(key, set()).add(email)
        for key, (thread_id, deal, kind, status, mode, to_stage, evidence) in found.items():
            listed = frozenset(contacts.get(key, ()))
            self._index(key, _Suggestion(thread_id, deal, kind, status, mode, to_stage, evidence, listed))
        self._people: dict[int, set[str]] = {}  # thread -> the CRM contacts who wrote on it
        links = (row.thread_id for row in self._rows.values() if row.kind == "link_thread")
        self._read_people(
            {*threads, *(t for on in self._deal_threads.values() for t in on), *filter(None, links)}
        )

    def saw(self, rows: Iterable[m.Suggestion]) -> None:
        """Suggestions the caller wrote (or read for writing) since: later reads see them as they are now."""
        for row in rows:
            payload = row.payload or {}
            self._index(
                row.key,
                _Suggestion(
                    row.thread_id,
                    row.opportunity_id,
                    row.kind,
                    row.status,
                    _text(payload.get("mode")),
                    _text(payload.get("to_stage")),
                    list(row.evidence or ()),
                    frozenset(contact_emails(payload)),
                ),
            )

    def deal_context(self, thread_id: int | None, deal_ids: Iterable[int]) -> DealContext:
        """For a thread's candidate deals: when each was opened in the CRM, the CRM contacts who wrote on
        the deal's other threads (linked by the thread's opportunity, an approved link, or an open
        automatic link), and when another thread's mail won or lost it (an open won/lost stage change,
        dated by its evidence: the earliest)."""
        ids = sorted(set(deal_ids))
        if not ids:
            return DealContext({}, {}, {})
        opened = {deal: self._opened[deal] for deal in ids if self._opened.get(deal) is not None}
        people: dict[int, set[str]] = {}
        settled: dict[int, datetime] = {}
        for deal in ids:
            linked = self._deal_threads.get(deal, set()) - {thread_id}
            for key in self._by_deal.get(deal, ()):
                row = self._rows[key]
                if row.thread_id is None or row.thread_id == thread_id:
                    continue
                if row.kind == "link_thread" and (
                    row.status == "approved" or (row.status == "open" and row.mode == "link")
                ):
                    linked.add(row.thread_id)
                for when in row.outcome_dates():
                    settled[deal] = min(when, settled.get(deal, when))
            self._read_people(linked)  # read at the start, but for a thread linked since by another's
            for other in linked:
                if self._people[other]:
                    people.setdefault(deal, set()).update(self._people[other])
        return DealContext(opened, {deal: frozenset(who) for deal, who in people.items()}, settled)

    def proposed_earlier(self, thread_id: int, senders: Iterable[str]) -> frozenset[str]:
        """Those of `senders` already on an open new-opportunity suggestion of an older thread."""
        found = set()
        for email in senders:
            for key in self._by_email.get(email.lower(), ()):
                row = self._rows[key]
                if (
                    row.kind == NEW_OPPORTUNITY
                    and row.status == "open"
                    and row.thread_id is not None
                    and row.thread_id < thread_id
                ):
                    found.add(email)
        return frozenset(found)

    def _index(self, key: str, row: _Suggestion) -> None:
        before = self._rows.get(key)
        if before is not None:
            if before.deal is not None:
                self._by_deal[before.deal].discard(key)
            for email in before.emails:
                self._by_email[email].discard(key)
        self._rows[key] = row
        if row.deal is not None:
            self._by_deal.setdefault(row.deal, set()).add(key)
        for email in row.emails:
            self._by_email.setdefault(email, set()).add(key)

    def _read_people(self, threads: set[int]) -> None:
        """The CRM contacts who wrote on those of `threads` not read yet (participants do not change while
        the propose stage runs: these are Core reads, no flush needed)."""
        wanted = sorted(thread for thread in threads if thread not in self._people)
        for thread_id in wanted:
            self._people[thread_id] = set()
        for part in chunks(wanted):
            for thread_id, email in self._session.execute(_THREAD_PEOPLE, {"threads": part}):
                self._people[thread_id].add(email)


def evidence_time(evidence: dict[str, Any]) -> datetime | None:
    """The date of a stored evidence entry (naive UTC, as messages are stored), if it has one."""
    stamp = evidence.get("sent_at") if isinstance(evidence, dict) else None
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return db_time(when)
