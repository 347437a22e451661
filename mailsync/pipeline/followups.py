"""Stored threads back through the propose stage: a thread as stored, and the daily no-reply job.

`ThreadViews` re-matches stored threads against the current CRM, with what the propose stage needs
beyond the mail: when each candidate deal was opened, and who is on its other linked threads. The
pipeline makes the views of a batch's touched threads at once; `thread_view` is one thread's.
Attachment names come from the `message.attachments` column the parse stage filled.

`flag_unanswered` is the lost-by-silence rule (nlp/stale.py) run over the database at a given "now":
the daemon runs it once a day; `mailsync digest` and the evaluation call `flag_unanswered`
with their own "now".
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from nlp.match import match_participant, match_people
from nlp.propose import ThreadView, Thresholds
from nlp.stale import lost_by_silence
from storage import mailstore
from storage.deal_context import ContextReads
from storage.records import Address
from storage.suggestion_rows import SuggestionRows

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from sqlalchemy.orm import Session

    from config.settings import MatchingSettings
    from storage.mailstore import StoredPerson, StoredThread
    from storage.models import Message, Suggestion, Thread
    from storage.records import CrmSnapshot, Match
    from storage.repo import Repo

HORIZON = timedelta(days=730)  # threads silent longer than this are history, not deals going cold


def thresholds(settings: MatchingSettings) -> Thresholds:
    return Thresholds(
        link=settings.link_threshold, suggest=settings.suggest_threshold, classifier=settings.classifier
    )


def stored_match(message: Message, people: list[StoredPerson], crm: CrmSnapshot) -> Match:
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

    # 1,024: a few batches' threads. 4,096 held ~13 MB more (each entry keeps its message's body) and
    # made a replay of 5,000 messages no faster: a thread comes back within a few batches or not at all.
    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._crm: CrmSnapshot | None = None
        self._entries: OrderedDict[int, tuple[tuple[Any, ...], Match]] = OrderedDict()
        self._lock = threading.Lock()

    def match(self, message: Message, people: list[StoredPerson], crm: CrmSnapshot) -> Match:
        made_of = _made_of(message, [(p.role, p.name, p.email) for p in people])
        with self._lock:
            if crm is not self._crm:
                self._entries.clear()
                self._crm = crm
            found = self._entries.get(message.id)
            if found is not None and found[0] == made_of:
                self._entries.move_to_end(message.id)
                return found[1]
        match = stored_match(message, people, crm)
        self._keep(message.id, made_of, match, crm)
        return match

    def remember(self, message: Message, match: Match, crm: CrmSnapshot) -> None:
        """The match of a message just parsed and stored (mailstore.fill_parsed), kept as stored_match
        would make it from the stored fields, so that its thread's view does not match it again: its
        participants are stored as matched (a normalised address matches the same) and its date as
        stored. A stored value that differs from the parsed one (made safe for the database) is read
        back later as another key: the message is matched again then, never given a stale match."""
        people = [(p.role, p.address.name, p.address.email) for p in match.participants]
        stored = replace(match, fingerprint=message.fingerprint, sent_at=message.sent_at)
        self._keep(message.id, _made_of(message, people), stored, crm)

    def _keep(self, message_id: int, made_of: tuple[Any, ...], match: Match, crm: CrmSnapshot) -> None:
        with self._lock:
            if crm is not self._crm:
                self._entries.clear()
                self._crm = crm
            self._entries[message_id] = (made_of, match)
            self._entries.move_to_end(message_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def _made_of(message: Message, people: list[tuple[str, str, str]]) -> tuple[Any, ...]:
    """What a stored message's match is made from (MatchCache's key)."""
    return (
        message.fingerprint,
        message.sent_at,
        message.subject,
        message.body_text,
        message.automated,
        tuple(message.attachments or ()),
        tuple(people),
    )


_matches = MatchCache()


def remember_match(message: Message, match: Match, crm: CrmSnapshot) -> None:
    """MatchCache.remember on the cache the propose stage reads."""
    _matches.remember(message, match, crm)


def thread_view(
    session: Session,
    thread: Thread,
    owner: str,
    crm: CrmSnapshot,
    stored: StoredThread | None = None,
) -> ThreadView:
    """The stored thread as the propose stage sees it, matched against the current CRM. `stored`: its
    messages as mailstore.thread_messages gives them, when the caller read them already."""
    if stored is None:
        stored = mailstore.thread_messages(session, thread.id)
    return ThreadViews(session, [thread], crm, {thread.id: stored}).view(thread, owner)


class ThreadViews:
    """The views of several stored threads for one pass of the propose stage: each thread's messages
    matched against the current CRM, and what the mail elsewhere says of them (when each candidate deal
    was opened, who is on its other linked threads, which senders an older thread proposed as a new
    deal) read once for all (storage/deal_context.py). Passed to sync_suggestions as its `batch`, it reads
    the suggestions to sync once for all too, and a view made later reads what the earlier threads'
    proposals wrote, as a read per thread did."""

    def __init__(
        self,
        session: Session,
        threads: Sequence[Thread],
        crm: CrmSnapshot,
        stored: Mapping[int, StoredThread],
    ) -> None:
        self._session, self._threads = session, threads
        self._messages = {
            thread.id: tuple(_matches.match(msg, people, crm) for msg, people in stored[thread.id])
            for thread in threads
        }
        self._deals = {thread_id: _candidate_deals(found, crm) for thread_id, found in self._messages.items()}
        self._senders = {thread_id: _outside_senders(found) for thread_id, found in self._messages.items()}
        self._reads = ContextReads(
            session,
            deals={deal for deals in self._deals.values() for deal in deals},
            senders={email for senders in self._senders.values() for email in senders},
            threads=self._messages,
        )
        self._suggestions: SuggestionRows | None = (
            None  # read when first asked: thread_view's callers sync alone
        )

    def view(self, thread: Thread, owner: str) -> ThreadView:
        context = self._reads.deal_context(thread.id, self._deals[thread.id])
        return ThreadView(
            key=thread.key,
            subject=thread.subject,
            linked_opportunity=thread.opportunity_id,
            messages=self._messages[thread.id],
            owner=owner,
            opened=context.opened,
            history=context.history,
            settled=context.settled,
            proposed_elsewhere=self._reads.proposed_earlier(thread.id, self._senders[thread.id]),
        )

    # What sync_suggestions reads and writes between views (mailstore.BatchSuggestions): a view made
    # later reads what the earlier threads' proposals wrote, as a read per thread did.
    def read(self, thread_id: int, keys: Collection[str]) -> list[Suggestion]:
        if self._suggestions is None:
            self._suggestions = SuggestionRows(self._session, self._messages, self._likely_keys())
        return self._suggestions.read(thread_id, keys)

    def note(self, rows: Iterable[Suggestion]) -> None:
        rows = list(rows)
        if self._suggestions is not None:
            self._suggestions.note(rows)
        self._reads.saw(rows)

    def _likely_keys(self) -> set[str]:
        """The keys the propose stage makes for these threads (nlp/propose.py's formats): read up front.
        One it makes otherwise (a moved contact, say) is read when sync_suggestions asks for it."""
        keys = set()
        for thread in self._threads:
            deals = {*self._deals[thread.id], thread.opportunity_id}
            keys |= {f"link:{thread.key}", f"new_opportunity:{thread.key}"}
            keys |= {f"stage:{thread.key}:{deal}" for deal in deals if deal is not None}
            people = {p.address.email for msg in self._messages[thread.id] for p in msg.participants}
            keys |= {f"new_contact:{email}" for email in people}
        return keys


def _candidate_deals(messages: tuple[Match, ...], crm: CrmSnapshot) -> set[int]:
    """The open deals of every account the thread's people are at."""
    return {o.id for msg in messages for a in msg.accounts for o in crm.open_opportunities.get(a.id, ())}


def _outside_senders(messages: tuple[Match, ...]) -> set[str]:
    return {p.address.email for m in messages for p in m.participants if p.role == "from" and not p.internal}


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
