"""What approving a proposal changes in the CRM store, one kind at a time, and how decisions are kept.

Database work on one session and nothing else: mailsync/approval/decisions.py decides who may decide
and what an edit means, appends the event, and calls these inside the transaction that applies it.
`edits` arrive checked and normalised (amount "50000.00", currency "EUR", a canonical stage,
close_date "2026-03-31"), so what a replay of the event log applies is exactly what was applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from config.errors import DecisionError
from storage import models as m
from storage.models import db_time
from storage.records import normalise_email

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sqlalchemy.orm import Session

    Edits = Mapping[str, str]

CLOSED = {"closed_won": "won", "closed_lost": "lost"}


@dataclass(frozen=True, slots=True)
class ProposalLine:
    """One open proposal as `mailsync proposals` lists it."""

    key: str
    kind: str
    payload: dict[str, Any]
    confidence: float
    rep: str | None
    subject: str  # of the conversation it came from


def suggestion(session: Session, key: str, *, lock: bool = False) -> m.Suggestion | None:
    """The proposal with this stable key; `lock` holds its row until the transaction ends (PostgreSQL),
    so two deciders of one proposal apply one after the other and the second sees it decided."""
    query = select(m.Suggestion).where(m.Suggestion.key == key)
    return session.scalar(query.with_for_update() if lock else query)


def last_decision(session: Session, suggestion_id: int) -> m.Decision | None:
    return session.scalar(
        select(m.Decision).where(m.Decision.suggestion_id == suggestion_id).order_by(m.Decision.id.desc())
    )


def lead_of(session: Session, rep: str) -> str | None:
    """The team lead of `rep` (reps.csv `lead`), if the CRM names one."""
    return session.scalar(select(m.Rep.lead).where(func.lower(m.Rep.email) == rep.lower()))


def has_left(session: Session, rep: str) -> bool:
    """Whether `rep` is in the CRM as a rep who left (reps.csv `active = false`)."""
    return session.scalar(select(m.Rep.active).where(func.lower(m.Rep.email) == rep.lower())) is False


def keys(session: Session) -> list[str]:
    """Every proposal's key, decided or not: what a short form must be unique among."""
    return list(session.scalars(select(m.Suggestion.key)))


def open_proposals(session: Session, rep: str | None = None) -> list[ProposalLine]:
    """Open proposals, a rep's alone when `rep` is given, each rep's most confident first."""
    query = (
        select(m.Suggestion, m.Thread.subject)
        .join(m.Thread, m.Thread.id == m.Suggestion.thread_id, isouter=True)
        .where(m.Suggestion.status == "open")
        .order_by(m.Suggestion.owner_rep, m.Suggestion.confidence.desc(), m.Suggestion.id)
    )
    if rep is not None:
        query = query.where(func.lower(m.Suggestion.owner_rep) == rep.lower())
    return [
        ProposalLine(row.key, row.kind, dict(row.payload), row.confidence, row.owner_rep, subject or "")
        for row, subject in session.execute(query)
    ]


def record(
    session: Session,
    row: m.Suggestion,
    *,
    verdict: str,
    who: str,
    how: str,
    at: datetime,
    edits: Edits,
    digest_token: str | None,
    event_id: str,
) -> None:
    """Keep the decision (who, when, how, with what edits, from which digest) and close the proposal."""
    row.status = "approved" if verdict == "approve" else "rejected"
    row.updated_at = at
    session.add(
        m.Decision(
            suggestion_id=row.id,
            verdict=verdict,
            who=who,
            how=how,
            at=at,
            edits=dict(edits),
            digest_token=digest_token,
            event_id=event_id,
        )
    )


def approve(session: Session, row: m.Suggestion, edits: Edits, at: datetime) -> str:
    """Apply an approved proposal to the CRM; returns what was done, in the past tense."""
    return _APPROVE[row.kind](session, row, edits, at)


def describe(kind: str, payload: Mapping[str, Any], subject: str) -> str:
    """What a proposal asks, as a plain imperative ("link “Pricing” to Acme - rollout"): for listings
    and rejections. `subject` is its conversation's. Mail text in it is raw: the caller escapes."""
    if kind == "link_thread":
        return f"link “{subject or '(no subject)'}” to {payload.get('opportunity')}"
    if kind == "new_opportunity":
        money = " ".join(str(v) for v in (payload.get("amount"), payload.get("currency")) if v)
        worth = f" ({money})" if payload.get("amount") else ""
        return f"create the opportunity {payload.get('name')}{worth}"
    if kind == "stage_change":
        stages = f"from {payload.get('from_stage')} to {payload.get('to_stage')}"
        return f"move {payload.get('opportunity')} {stages}"
    if kind == "new_contact":
        name, email = payload.get("name") or payload.get("email"), payload.get("email")
        return f"add {name} <{email}> as a contact at {payload.get('account')}"
    if kind == "contact_moved":
        new = payload.get("new_account") or payload.get("new_account_domain")
        return f"move {payload.get('contact')} to {new} ({payload.get('email')})"
    return f"apply a {kind} proposal"


def subject_of(session: Session, row: m.Suggestion) -> str:
    """The subject of the conversation a proposal came from."""
    thread = session.get(m.Thread, row.thread_id) if row.thread_id is not None else None
    return thread.subject if thread is not None else ""


def rep_email(session: Session, given: str) -> str | None:
    """The rep `given` names: their email, or the part before the @ when only one rep has it."""
    given = given.strip().lower()
    emails = [
        e for e in session.scalars(select(m.Rep.email)) if given in {e.lower(), e.lower().split("@")[0]}
    ]
    return emails[0].lower() if len(emails) == 1 else None


# --- one function per kind --------------------------------------------------------------------------


def _new_opportunity(session: Session, row: m.Suggestion, edits: Edits, at: datetime) -> str:
    payload = row.payload
    account, created = _account(
        session, payload.get("account_id"), payload.get("new_account_domain"), payload.get("account")
    )
    stage = edits.get("stage") or {"won": "closed_won", "lost": "closed_lost"}.get(
        str(payload.get("outcome")), "qualification"
    )
    amount = edits.get("amount") or payload.get("amount")
    opp = m.Opportunity(
        account_id=account.id,
        name=edits.get("name") or payload.get("name") or account.name,
        amount=Decimal(amount) if amount else None,
        currency=edits.get("currency") or (payload.get("currency") if amount else None),
        owner_rep=row.owner_rep,
        created_at=at,  # entered into the CRM now; first_seen_at says when the deal really began
        first_seen_at=_first_evidence(row),
    )
    _set_stage(opp, stage, edits, at)
    session.add(opp)
    session.flush()
    thread = session.get(m.Thread, row.thread_id) if row.thread_id is not None else None
    if thread is not None:
        thread.opportunity_id = opp.id
    worth = f" for {opp.amount} {opp.currency or ''}".rstrip() if opp.amount is not None else ""
    new = " (new account)" if created else ""
    return f"Created the opportunity {opp.name} at {account.name}{new}{worth}, stage {stage}"


def _link_thread(session: Session, row: m.Suggestion, edits: Edits, at: datetime) -> str:
    opp = _chosen_opportunity(session, row, edits.get("opportunity"))
    thread = session.get(m.Thread, row.thread_id) if row.thread_id is not None else None
    if thread is None:
        raise DecisionError(
            f"the conversation of {row.key} is no longer in the database",
            reason="unknown",
            fix="nothing to link; `mailsync proposals` lists what is open",
        )
    thread.opportunity_id = opp.id
    _update_deal(opp, edits, at)
    return f"Linked “{thread.subject}” to {opp.name}"


def _stage_change(session: Session, row: m.Suggestion, edits: Edits, at: datetime) -> str:
    opp = _opportunity(session, row, row.payload.get("opportunity_id"))
    before = opp.stage
    _update_deal(opp, {"stage": str(row.payload["to_stage"]), **edits}, at)
    return f"Moved {opp.name} from {before} to {opp.stage}"


def _new_contact(session: Session, row: m.Suggestion, edits: Edits, at: datetime) -> str:
    del at
    email = normalise_email(str(row.payload["email"]))
    name = edits.get("name") or str(row.payload.get("name") or "")
    known = session.get(m.ContactAddress, email)
    if known is not None:
        return f"{known.contact.name or email} <{email}> was a contact already; nothing added"
    domain = session.get(m.AccountDomain, email.rpartition("@")[2])
    account = domain.account if domain else _existing(session, m.Account, row.payload.get("account_id"))
    session.add(
        m.Contact(
            name=name,
            account_id=account.id if account else None,
            owner_rep=row.owner_rep,
            addresses=[m.ContactAddress(email=email)],
        )
    )
    at_account = f" at {account.name}" if account else ""
    return f"Added {name or email} <{email}> as a contact{at_account}"


def _contact_moved(session: Session, row: m.Suggestion, edits: Edits, at: datetime) -> str:
    del edits, at
    payload = row.payload
    contact = _existing(session, m.Contact, payload.get("contact_id"))
    if contact is None:
        raise DecisionError(
            f"the contact of {row.key} ({payload.get('contact')}) is no longer in the CRM",
            reason="unknown",
            fix="nothing to move; `mailsync proposals` lists what is open",
        )
    account, created = _account(
        session,
        payload.get("new_account_id"),
        payload.get("new_account_domain"),
        payload.get("new_account") or payload.get("new_account_domain"),
    )
    contact.account_id = account.id
    email = normalise_email(str(payload["email"]))
    if session.get(m.ContactAddress, email) is None:  # the address they write from now
        contact.addresses.append(m.ContactAddress(email=email))
    new = " (new account)" if created else ""
    return f"Moved {contact.name or email} to {account.name}{new} ({email})"


_APPROVE: dict[str, Callable[[Session, m.Suggestion, Edits, datetime], str]] = {
    "new_opportunity": _new_opportunity,
    "link_thread": _link_thread,
    "stage_change": _stage_change,
    "new_contact": _new_contact,
    "contact_moved": _contact_moved,
}


# --- helpers --------------------------------------------------------------------------------------


def _existing(session: Session, model: type[Any], pk: object) -> Any:
    return session.get(model, int(str(pk))) if pk is not None else None


def _account(session: Session, account_id: object, domain: object, name: object) -> tuple[m.Account, bool]:
    """The proposal's account: the CRM's by id, else the one owning `domain`, else one of that name
    without a domain (a free-mail customer approved twice); created when none is. (account, created)"""
    account = _existing(session, m.Account, account_id)
    if account is not None:
        return account, False
    if domain:
        owner = session.get(m.AccountDomain, str(domain).lower())
        if owner is not None:
            return owner.account, False
    else:
        same = session.scalar(
            select(m.Account)
            .where(func.lower(m.Account.name) == str(name).lower(), ~m.Account.domains.any())
            .order_by(m.Account.id)
        )
        if same is not None:
            return same, False
    account = m.Account(name=str(name or domain))
    if domain:
        account.domains.append(m.AccountDomain(domain=str(domain).lower()))
    session.add(account)
    session.flush()
    return account, True


def _opportunity(session: Session, row: m.Suggestion, opportunity_id: object) -> m.Opportunity:
    opp = _existing(session, m.Opportunity, opportunity_id)
    if opp is None:
        raise DecisionError(
            f"the opportunity of {row.key} ({row.payload.get('opportunity')}) is no longer in the CRM",
            reason="unknown",
            fix="nothing to change; `mailsync proposals` lists what is open",
        )
    return opp  # type: ignore[no-any-return]


def _chosen_opportunity(session: Session, row: m.Suggestion, wanted: str | None) -> m.Opportunity:
    """The link's target: the one the rep named (CRM id or exact name), else the top candidate."""
    if wanted is None:
        return _opportunity(session, row, row.payload.get("opportunity_id"))
    found = list(
        session.scalars(
            select(m.Opportunity).where(
                (m.Opportunity.external_id == wanted) | (func.lower(m.Opportunity.name) == wanted.lower())
            )
        )
    )
    if len(found) == 1:
        return found[0]
    problem = f"{len(found)} opportunities are named {wanted!r}" if found else f"no opportunity {wanted!r}"
    raise DecisionError(
        f"cannot link {row.key}: {problem}",
        reason="bad_edit",
        fix=f"name it by its CRM id or exact name; candidates: {row.payload.get('candidates')}",
    )


def _update_deal(opp: m.Opportunity, edits: Edits, at: datetime) -> None:
    if "amount" in edits:
        opp.amount = Decimal(edits["amount"])
    if "currency" in edits:
        opp.currency = edits["currency"]
    _set_stage(opp, edits.get("stage") or opp.stage, edits, at)


def _set_stage(opp: m.Opportunity, stage: str, edits: Edits, at: datetime) -> None:
    """Move to `stage`; a closed one records the outcome and when (the edit's close_date, else now)."""
    close_date = edits.get("close_date")
    if close_date and stage not in CLOSED:
        raise DecisionError(
            f"close_date={close_date} needs a closed stage, and {opp.name} would be at {stage}",
            reason="bad_edit",
            fix="give it with stage=closed_won or stage=closed_lost, or leave close_date out",
        )
    if stage != opp.stage:
        opp.stage_raw = stage  # the CRM's wording of the old stage no longer applies
    opp.stage = stage
    opp.outcome = CLOSED.get(stage)
    if stage not in CLOSED:
        opp.closed_at = None
    elif close_date:
        opp.closed_at = datetime.combine(date.fromisoformat(close_date), time())
    elif opp.closed_at is None:
        opp.closed_at = at


def _first_evidence(row: m.Suggestion) -> datetime | None:
    """When the deal really began: the earliest evidence message, else the payload's first-seen day."""
    sent = [db_time(datetime.fromisoformat(e["sent_at"])) for e in row.evidence if e.get("sent_at")]
    moments = [when for when in sent if when is not None]
    if moments:
        return min(moments)
    day = row.payload.get("first_seen_at")
    return datetime.combine(date.fromisoformat(str(day)), time()) if day else None
