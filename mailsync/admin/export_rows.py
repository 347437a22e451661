"""What `mailsync export` writes, row by row: the CRM in DESIGN's import format, then activities,
proposals and decisions.

Rows are plain dicts of JSON values (str, int, float, bool, None, lists, dicts), raw as stored: the
writer escapes CSV cells, JSONL keeps them. Rows the external CRM has an id for (`id` column) are
written exactly as `mailsync crm import` would store them again, so re-importing an export changes
nothing: the stage as the CRM wrote it (while it still maps to the stored stage), calendar dates as
dates, addresses and domains sorted. A contact left without an address cannot be written so and is
left out, with a warning. Records captured from mail that no CRM has an id for yet get the reference
`mailsync:<kind>:<id>` and go to their own `new_*` files, which `crm import` ignores: importing them
as CRM rows would create each a second time. Large tables are read in keyset-paged chunks, so memory
stays flat on a million messages, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import func, select

from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.orm import Session
    from sqlalchemy.sql import Select

log = structlog.get_logger()
Row = dict[str, Any]
CHUNK = 500  # threads, proposals or decisions per query: bounded memory, few round trips


def reference(kind: str, pk: int | None, external_id: str | None) -> str | None:
    """How an export names a record: the CRM's id, else mailsync's own `mailsync:<kind>:<pk>`."""
    if pk is None:
        return None
    return external_id or f"mailsync:{kind}:{pk}"


def stamp(value: datetime | None) -> str | None:
    """A database time (naive UTC) as ISO 8601 with its zone."""
    return None if value is None else value.replace(tzinfo=UTC).isoformat()


def _calendar(value: datetime | None) -> str | None:
    """A CRM date as the importer reads it back: the date alone when it is midnight (a calendar date)."""
    if value is None:
        return None
    return value.date().isoformat() if value.time() == time() else value.isoformat()


class References:
    """Each account's, contact's and opportunity's export reference, loaded once per export."""

    def __init__(self, session: Session) -> None:
        def load(kind: str, model: Any) -> dict[int, str]:
            return {
                pk: f"mailsync:{kind}:{pk}" if ext is None else ext
                for pk, ext in session.execute(select(model.id, model.external_id))
            }

        self.accounts = load("account", m.Account)
        self.contacts = load("contact", m.Contact)
        self.opportunities = load("opportunity", m.Opportunity)


# --- the CRM, in the import format ----------------------------------------------------------------


def count_crm(session: Session, model: Any, *, known: bool) -> int:
    """How many rows `known` (with a CRM id) or captured (without) of `model` there are."""
    if model is m.Rep:
        return int(session.scalar(select(func.count()).select_from(m.Rep)) or 0) if known else 0
    present = model.external_id.is_not(None) if known else model.external_id.is_(None)
    return int(session.scalar(select(func.count()).select_from(model).where(present)) or 0)


def reps(session: Session, refs: References, *, known: bool) -> Iterator[Row]:
    del refs
    if not known:
        return
    for rep in session.scalars(select(m.Rep).order_by(m.Rep.id)):
        yield {
            "email": rep.email,
            "name": rep.name,
            "team": rep.team,
            "lead": rep.lead,
            "active": rep.active,
            "timezone": rep.timezone,
            "digest_at": rep.digest_at,
            "locale": rep.locale,
        }


def accounts(session: Session, refs: References, *, known: bool) -> Iterator[Row]:
    domains: dict[int, list[str]] = defaultdict(list)
    for domain, account_id in session.execute(
        select(m.AccountDomain.domain, m.AccountDomain.account_id).order_by(m.AccountDomain.domain)
    ):
        domains[account_id].append(domain)
    query = select(m.Account.id, m.Account.name).where(_known(m.Account, known=known))
    for pk, name in session.execute(query.order_by(m.Account.id)):
        yield {"id": refs.accounts[pk], "name": name, "domain": ";".join(domains[pk])}


def contacts(session: Session, refs: References, *, known: bool) -> Iterator[Row]:
    addresses: dict[int, list[str]] = defaultdict(list)
    for email, contact_id in session.execute(
        select(m.ContactAddress.email, m.ContactAddress.contact_id).order_by(m.ContactAddress.email)
    ):
        addresses[contact_id].append(email)
    query = select(m.Contact.id, m.Contact.account_id, m.Contact.name, m.Contact.owner_rep)
    for pk, account_id, name, owner in session.execute(
        query.where(_known(m.Contact, known=known)).order_by(m.Contact.id)
    ):
        if not addresses[pk]:  # every address moved to another contact: contacts.csv needs one
            log.warning("export_contact_without_address", contact=refs.contacts[pk])
            continue
        yield {
            "id": refs.contacts[pk],
            "account_id": refs.accounts.get(account_id) if account_id is not None else None,
            "name": name,
            "email": ";".join(addresses[pk]),
            "owner_rep": owner,
        }


def opportunities(
    session: Session, refs: References, *, known: bool, stage_for: Callable[[str], str | None]
) -> Iterator[Row]:
    query = select(m.Opportunity).where(_known(m.Opportunity, known=known)).order_by(m.Opportunity.id)
    for opp in session.scalars(query):
        # The CRM's wording while it still means the stored stage; after a stage change, the stage.
        stage = opp.stage_raw if opp.stage_raw and stage_for(opp.stage_raw) == opp.stage else opp.stage
        yield {
            "id": refs.opportunities[opp.id],
            "account_id": refs.accounts.get(opp.account_id),
            "name": opp.name,
            "stage": stage,
            "amount": None if opp.amount is None else str(opp.amount),
            "currency": opp.currency,
            "owner_rep": opp.owner_rep,
            "created_at": _calendar(opp.created_at),
        }


def _known(model: Any, *, known: bool) -> Any:
    return model.external_id.is_not(None) if known else model.external_id.is_(None)


# --- what mail added ------------------------------------------------------------------------------


def count_activities(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(m.Message).where(_activity())) or 0)


def _activity() -> Any:
    return (m.Message.status == "parsed") & m.Message.thread_id.is_not(None)


def activities(session: Session, refs: References) -> Iterator[Row]:
    """Every parsed message, thread by thread in date order, with who saw it where.

    Plain columns, not ORM objects: loading Message rows would read every body too, and build an
    object per participant and provenance, for the few values a row needs."""
    owners = _owners(session)
    for chunk in _pages(session, select(m.Thread.id).order_by(m.Thread.id), m.Thread.id):
        query = _activity_columns().where(m.Message.thread_id.in_(chunk), _activity())
        order = (m.Message.thread_id, m.Message.sent_at.nulls_last(), m.Message.id)
        yield from _activity_rows(session, refs, owners, session.execute(query.order_by(*order)).all())


def activities_between(session: Session, refs: References, first: int, last: int) -> list[Row]:
    """The activity rows of the parsed messages whose ids lie in [first, last], by id (the webhook's
    batches: message ids only grow, so a range names a batch for good)."""
    query = _activity_columns().where(m.Message.id.between(first, last), _activity()).order_by(m.Message.id)
    return list(_activity_rows(session, refs, _owners(session), session.execute(query).all()))


def _owners(session: Session) -> dict[str, str]:
    return dict(session.execute(select(m.Mailbox.name, m.Mailbox.owner)).all())


def _activity_columns() -> Select[Any]:
    message = m.Message
    return (
        select(message.id, message.thread_id, m.Thread.subject, m.Thread.opportunity_id,
               message.message_id, message.sent_at, message.sender, message.subject,
               message.automated, message.attachments)
        .join(m.Thread, m.Thread.id == message.thread_id)
    )  # fmt: skip


def _activity_rows(session: Session, refs: References, owners: dict[str, str], found: Any) -> Iterator[Row]:
    pks = [row[0] for row in found]
    people = _participants(session, pks, refs)
    seen = _provenances(session, pks, owners)
    for pk, thread, thread_subject, opp, message_id, sent_at, sender, subject, automated, files in found:
        places = seen[pk]
        yield {
            "thread_id": thread,
            "thread_subject": thread_subject,
            "opportunity_id": refs.opportunities.get(opp) if opp is not None else None,
            "message_id": message_id,
            "sent_at": stamp(sent_at),
            "from": sender,
            **people[pk],
            "subject": subject,
            "automated": automated,
            "attachments": list(files or []),
            "seen_by": sorted({s["owner"] or s["mailbox"] for s in places}),
            "first_seen_at": min((s["seen_at"] for s in places if s["seen_at"]), default=None),
            "provenance": places,
        }


def _participants(session: Session, pks: list[int], refs: References) -> dict[int, Row]:
    """Per message: its to and cc addresses, and the CRM contacts and accounts among its people."""
    found: dict[int, Row] = defaultdict(
        lambda: {"to": [], "cc": [], "contact_ids": set(), "account_ids": set()}
    )
    query = (
        select(m.Participant.message_pk, m.Participant.role, m.Participant.email,
               m.Participant.contact_id, m.Participant.account_id)
        .where(m.Participant.message_pk.in_(pks))
        .order_by(m.Participant.id)
    )  # fmt: skip
    for pk, role, email, contact, account in session.execute(query):
        row = found[pk]
        if role in {"to", "cc"}:
            row[role].append(email)
        if contact in refs.contacts:
            row["contact_ids"].add(refs.contacts[contact])
        if account in refs.accounts:
            row["account_ids"].add(refs.accounts[account])
    for pk in pks:
        found[pk]["contact_ids"] = sorted(found[pk]["contact_ids"])
        found[pk]["account_ids"] = sorted(found[pk]["account_ids"])
    return found


def _provenances(session: Session, pks: list[int], owners: dict[str, str]) -> dict[int, list[Row]]:
    found: dict[int, list[Row]] = defaultdict(list)
    place = m.Provenance
    query = (
        select(place.message_pk, place.mailbox, place.folder, place.uidvalidity, place.uid, place.path,
               place.seen_at, place.gone_at)
        .where(place.message_pk.in_(pks))
        .order_by(place.id)
    )  # fmt: skip
    for pk, mailbox, folder, uidvalidity, uid, path, seen_at, gone_at in session.execute(query):
        found[pk].append(
            {
                "mailbox": mailbox,
                "owner": owners.get(mailbox),
                "folder": folder,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "path": path,
                "seen_at": stamp(seen_at),
                "gone_at": stamp(gone_at),
            }
        )
    return found


def count_of(session: Session, model: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def proposals(session: Session, refs: References) -> Iterator[Row]:
    """Every proposal with its status and, once decided, the last decision on it."""
    del refs
    for chunk in _pages(session, select(m.Suggestion.id).order_by(m.Suggestion.id), m.Suggestion.id):
        rows = session.execute(
            select(m.Suggestion, m.Thread.subject)
            .join(m.Thread, m.Thread.id == m.Suggestion.thread_id, isouter=True)
            .where(m.Suggestion.id.in_(chunk))
            .order_by(m.Suggestion.id)
        )
        last: dict[int, m.Decision] = {}
        for decision in session.scalars(
            select(m.Decision).where(m.Decision.suggestion_id.in_(chunk)).order_by(m.Decision.id)
        ):
            last[decision.suggestion_id] = decision
        for row, subject in rows:
            decided = last.get(row.id)
            yield {
                "key": row.key,
                "kind": row.kind,
                "status": row.status,
                "summary": row.summary,
                "confidence": row.confidence,
                "owner_rep": row.owner_rep,
                "thread_id": row.thread_id,
                "thread_subject": subject,
                "created_at": stamp(row.created_at),
                "updated_at": stamp(row.updated_at),
                "decided_at": stamp(decided.at) if decided else None,
                "decided_by": decided.who if decided else None,
                "decided_how": decided.how if decided else None,
                "payload": row.payload,
                "evidence": row.evidence,
            }
        session.expunge_all()


def decisions(session: Session, refs: References) -> Iterator[Row]:
    """Every decision taken, in order: who, when, how, with which edits, and its event-log entry."""
    del refs
    for chunk in _pages(session, select(m.Decision.id).order_by(m.Decision.id), m.Decision.id):
        yield from _decision_rows(session, m.Decision.id.in_(chunk))
        session.expunge_all()


def decisions_between(session: Session, refs: References, first: int, last: int) -> list[Row]:
    """The decisions whose ids lie in [first, last], in order (the webhook's batches)."""
    del refs
    return list(_decision_rows(session, m.Decision.id.between(first, last)))


def _decision_rows(session: Session, where: Any) -> Iterator[Row]:
    query = (
        select(m.Decision, m.Suggestion.key, m.Suggestion.kind)
        .join(m.Suggestion, m.Suggestion.id == m.Decision.suggestion_id)
        .where(where)
        .order_by(m.Decision.id)
    )
    for decision, key, kind in session.execute(query):
        yield {
            "id": decision.id,
            "proposal": key,
            "kind": kind,
            "verdict": decision.verdict,
            "who": decision.who,
            "how": decision.how,
            "at": stamp(decision.at),
            "edits": decision.edits,
            "event_id": decision.event_id,
        }


def _pages(session: Session, ids: Select[int], column: Any) -> Iterator[list[int]]:
    """The ids `ids` selects, CHUNK at a time, by keyset (no OFFSET: each page costs the same)."""
    last: int | None = None
    while True:
        page = ids if last is None else ids.where(column > last)
        chunk = list(session.scalars(page.limit(CHUNK)))
        if not chunk:
            return
        yield chunk
        last = chunk[-1]
