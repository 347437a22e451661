"""Stored threads back through the propose stage: a thread as stored, and the daily no-reply job.

`thread_view` re-matches a stored thread against the current CRM, with what the propose stage
needs beyond the mail: when each candidate deal was opened, and who is on its other linked threads.
The pipeline calls it for the thread of every new message; attachment names come from the
`message.attachments` column the parse stage filled.

`flag_unanswered` is the lost-by-silence rule (nlp/stale.py) run over the database at a given "now":
the daemon runs it once a day; `mailsync digest` and the evaluation call `flag_unanswered`
with their own "now".
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from nlp.match import match_participant, match_people
from nlp.propose import ThreadView, Thresholds
from nlp.stale import lost_by_silence
from storage import mailstore
from storage.models import Suggestion, SuggestionContact
from storage.records import Address, ProposalKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from config.settings import MatchingSettings
    from storage.models import Message, Thread
    from storage.models import Participant as ParticipantRow
    from storage.records import CrmSnapshot, Match
    from storage.repo import Repo

HORIZON = timedelta(days=730)  # threads silent longer than this are history, not deals going cold


def thresholds(settings: MatchingSettings) -> Thresholds:
    return Thresholds(
        link=settings.link_threshold, suggest=settings.suggest_threshold, classifier=settings.classifier
    )


def stored_match(message: Message, people: list[ParticipantRow], crm: CrmSnapshot) -> Match:
    """A stored message matched against the current CRM."""
    return match_people(
        fingerprint=message.fingerprint,
        sent_at=message.sent_at,
        subject=message.subject,
        body=message.body_text,
        people=[(p.role, Address(name=p.name, email=p.email)) for p in people],
        automated=message.automated,
        crm=crm,
        attachments=tuple(message.attachments or ()),
    )


class MatchCache:
    """Matches of stored messages against one CRM snapshot, the most recently used `size` kept.

    A Match is a function of the message's stored fields and the snapshot, so a thread re-read for its
    next message re-matches only what is new. An entry is used only while the fields it was made from
    are still those of the message (a redaction or a replay changes them), and only for the snapshot it
    was made with: a CRM import empties the cache. Memory stays flat: `size` messages at most."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._crm: CrmSnapshot | None = None
        self._entries: OrderedDict[int, tuple[tuple[Any, ...], Match]] = OrderedDict()
        self._lock = threading.Lock()

    def match(self, message: Message, people: list[ParticipantRow], crm: CrmSnapshot) -> Match:
        made_of = (
            message.fingerprint,
            message.sent_at,
            message.subject,
            message.body_text,
            message.automated,
            tuple(message.attachments or ()),
            tuple((p.role, p.name, p.email) for p in people),
        )
        with self._lock:
            if crm is not self._crm:
                self._entries.clear()
                self._crm = crm
            found = self._entries.get(message.id)
            if found is not None and found[0] == made_of:
                self._entries.move_to_end(message.id)
                return found[1]
        match = stored_match(message, people, crm)
        with self._lock:
            if crm is self._crm:
                self._entries[message.id] = (made_of, match)
                self._entries.move_to_end(message.id)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return match


_matches = MatchCache()


def thread_view(
    session: Session,
    thread: Thread,
    owner: str,
    crm: CrmSnapshot,
    stored: list[tuple[Message, list[ParticipantRow]]] | None = None,
) -> ThreadView:
    """The stored thread as the propose stage sees it, matched against the current CRM. `stored`: its
    messages as mailstore.thread_messages gives them, when the caller read several threads at once."""
    if stored is None:
        stored = mailstore.thread_messages(session, thread.id)
    messages = tuple(_matches.match(msg, people, crm) for msg, people in stored)
    ids = {o.id for msg in messages for a in msg.accounts for o in crm.open_opportunities.get(a.id, ())}
    context = mailstore.opportunity_context(session, ids, thread.id)
    return ThreadView(
        key=thread.key,
        subject=thread.subject,
        linked_opportunity=thread.opportunity_id,
        messages=messages,
        owner=owner,
        opened=context.opened,
        history=context.history,
        settled=context.settled,
        proposed_elsewhere=_proposed_earlier(session, thread.id, messages),
    )


# Built once (read for every touched thread): building it per call cost more than the read. On the
# tables (Core), which skips the ORM's per-statement work, autoflush included: the caller flushes.
_contact, _suggestion = SuggestionContact.__table__.c, Suggestion.__table__.c
_PROPOSED_TO = (
    select(_contact.email, _suggestion.kind, _suggestion.status, _suggestion.thread_id)
    .join(Suggestion.__table__, _suggestion.id == _contact.suggestion_id)
    .where(_contact.email.in_(bindparam("emails", expanding=True)))
)


def _proposed_earlier(session: Session, thread_id: int, messages: tuple[Match, ...]) -> frozenset[str]:
    """Those of the thread's outside senders already on an open new-opportunity suggestion of an older
    thread: looked up by address (suggestion_contact), so the cost stays with the few candidates."""
    senders = {
        p.address.email for m in messages for p in m.participants if p.role == "from" and not p.internal
    }
    if not senders:
        return frozenset()
    by_address = {email.lower(): email for email in senders}  # suggestion_contact holds them lower-cased
    # Only the address in SQL: SQLite (no statistics) would otherwise read by kind and status, every open
    # new-opportunity suggestion, once a thread has a few senders.
    session.flush()  # as the autoflush of an ORM statement would (see _PROPOSED_TO)
    found = session.execute(_PROPOSED_TO, {"emails": sorted(by_address)})
    return frozenset(
        by_address[email]
        for email, kind, status, on_thread in found
        if kind == ProposalKind.NEW_OPPORTUNITY.value
        and status == "open"
        and on_thread is not None
        and on_thread < thread_id
    )


def flag_unanswered(repo: Repo, crm: CrmSnapshot, settings: MatchingSettings, now: datetime) -> int:
    """Propose lost-by-silence for every thread that qualifies at `now`; returns changed suggestions."""
    cutoff = now - timedelta(days=settings.lost_after_days)
    changed = 0
    with repo.session() as session:
        inbound = mailstore.last_inbound_by_account(session)
        for thread, sender, owner in mailstore.quiet_threads(session, cutoff, cutoff - HORIZON):
            if not match_participant(Address("", sender), "from", crm).internal:
                continue  # the customer had the last word
            view = thread_view(session, thread, owner, crm)
            found = lost_by_silence(
                [view],
                crm,
                now=now,
                after_days=settings.lost_after_days,
                last_inbound=inbound,
                thresholds=thresholds(settings),
            )
            changed += mailstore.sync_suggestions(session, thread.id, [p for _, p in found], withdraw=False)
    return changed
