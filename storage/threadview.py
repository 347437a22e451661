"""One message's conversation as `mailsync show` prints it: messages, CRM matches, proposals, decisions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from config.errors import SearchError
from storage import models as m
from storage.search import excerpt

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

    from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class MessageLine:
    id: int
    sent_at: datetime | None
    sender: str | None
    subject: str
    status: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class Named:
    """A contact or account the conversation was matched to."""

    id: int
    external_id: str | None
    name: str
    emails: tuple[str, ...]  # the participants' addresses that matched it


@dataclass(frozen=True, slots=True)
class OpportunityLine:
    id: int
    external_id: str | None
    name: str
    stage: str
    amount: Decimal | None
    currency: str | None
    owner_rep: str | None


@dataclass(frozen=True, slots=True)
class DecisionLine:
    verdict: str
    who: str
    how: str
    at: datetime
    edits: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProposalLine:
    key: str
    kind: str
    status: str
    summary: str
    confidence: float
    rep: str | None
    decisions: tuple[DecisionLine, ...]


@dataclass(frozen=True, slots=True)
class ThreadView:
    message_id: int  # the message asked for
    thread_id: int | None  # None: not threaded yet (pending) or never (quarantined)
    subject: str
    messages: tuple[MessageLine, ...]
    contacts: tuple[Named, ...]
    accounts: tuple[Named, ...]
    opportunity: OpportunityLine | None
    proposals: tuple[ProposalLine, ...]


def thread_view(session: Session, message_id: int) -> ThreadView:
    """The conversation of message `message_id`, oldest message first; SearchError if there is none."""
    asked = session.get(m.Message, message_id)
    if asked is None:
        raise SearchError(
            f"no message with id {message_id}", fix="`mailsync search WORDS` lists messages with their ids"
        )
    thread = session.get(m.Thread, asked.thread_id) if asked.thread_id is not None else None
    members = (
        select(m.Message).where(m.Message.thread_id == thread.id).order_by(m.Message.sent_at, m.Message.id)
        if thread is not None
        else select(m.Message).where(m.Message.id == asked.id)
    )
    messages = tuple(
        MessageLine(row.id, row.sent_at, row.sender, row.subject, row.status, excerpt(row.body_text, []))
        for row in session.scalars(members)
    )
    ids = [line.id for line in messages]
    return ThreadView(
        message_id=asked.id,
        thread_id=thread.id if thread else None,
        subject=thread.subject if thread else asked.subject,
        messages=messages,
        contacts=_matched(session, ids, m.Contact, m.Participant.contact_id),
        accounts=_matched(session, ids, m.Account, m.Participant.account_id),
        opportunity=_opportunity(session, thread.opportunity_id if thread else None),
        proposals=_proposals(session, thread.id) if thread else (),
    )


def _matched(
    session: Session, ids: list[int], model: type[m.Contact | m.Account], key: Any
) -> tuple[Named, ...]:
    rows = session.execute(
        select(model.id, model.external_id, model.name, m.Participant.email)
        .join(m.Participant, key == model.id)
        .where(m.Participant.message_pk.in_(ids))
        .order_by(model.name, model.id, m.Participant.email)
    )
    found: dict[int, tuple[str | None, str, list[str]]] = {}
    for pk, external_id, name, email in rows:
        emails = found.setdefault(pk, (external_id, name, []))[2]
        if email not in emails:
            emails.append(email)
    return tuple(Named(pk, ext, name, tuple(emails)) for pk, (ext, name, emails) in found.items())


def _opportunity(session: Session, opportunity_id: int | None) -> OpportunityLine | None:
    row = session.get(m.Opportunity, opportunity_id) if opportunity_id is not None else None
    if row is None:
        return None
    return OpportunityLine(
        row.id, row.external_id, row.name, row.stage, row.amount, row.currency, row.owner_rep
    )


def _proposals(session: Session, thread_id: int) -> tuple[ProposalLine, ...]:
    rows = list(
        session.scalars(
            select(m.Suggestion).where(m.Suggestion.thread_id == thread_id).order_by(m.Suggestion.id)
        )
    )
    decisions: dict[int, list[DecisionLine]] = {}
    for row in session.scalars(
        select(m.Decision)
        .where(m.Decision.suggestion_id.in_([r.id for r in rows]))
        .order_by(m.Decision.at, m.Decision.id)
    ):
        decisions.setdefault(row.suggestion_id, []).append(
            DecisionLine(row.verdict, row.who, row.how, row.at, dict(row.edits))
        )
    return tuple(
        ProposalLine(
            r.key, r.kind, r.status, r.summary, r.confidence, r.owner_rep, tuple(decisions.get(r.id, ()))
        )
        for r in rows
    )
