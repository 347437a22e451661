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

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from nlp.match import match_participant, match_people
from nlp.propose import ThreadView, Thresholds
from nlp.stale import lost_by_silence
from storage import mailstore
from storage.models import Suggestion
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


def thread_view(session: Session, thread: Thread, owner: str, crm: CrmSnapshot) -> ThreadView:
    """The stored thread as the propose stage sees it, matched against the current CRM."""
    messages = tuple(
        stored_match(msg, people, crm) for msg, people in mailstore.thread_messages(session, thread.id)
    )
    ids = {o.id for msg in messages for a in msg.accounts for o in crm.open_opportunities.get(a.id, ())}
    opened, history = mailstore.opportunity_context(session, ids, thread.id)
    return ThreadView(
        key=thread.key,
        subject=thread.subject,
        linked_opportunity=thread.opportunity_id,
        messages=messages,
        owner=owner,
        opened=opened,
        history=history,
        proposed_elsewhere=_proposed_earlier(session, thread.id, messages),
    )


def _proposed_earlier(session: Session, thread_id: int, messages: tuple[Match, ...]) -> frozenset[str]:
    """Those of the thread's outside senders already on an open new-opportunity suggestion of an older
    thread. Matched in SQL on the payload's contact list, so the cost stays with the few candidates."""
    senders = {
        p.address.email for m in messages for p in m.participants if p.role == "from" and not p.internal
    }
    if not senders:
        return frozenset()
    contacts = Suggestion.payload["contacts"].as_string()
    found = session.scalars(
        select(contacts).where(
            Suggestion.kind == ProposalKind.NEW_OPPORTUNITY.value,
            Suggestion.status == "open",
            Suggestion.thread_id < thread_id,
            or_(*(contacts.contains(email, autoescape=True) for email in sorted(senders))),
        )
    )
    listed = {email.strip() for row in found for email in (row or "").split(";")}
    return frozenset(senders & listed)


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
