"""The CRM store: applies validated CRM imports (upsert by external id) and snapshots it for matching."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from storage import models as m
from storage.records import AccountRef, ContactRef, CrmSnapshot, OpportunityRef, normalise_email

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

CLOSED = ("closed_won", "closed_lost")


def known_external_ids(session: Session) -> dict[str, set[str]]:
    """External ids already in the store, per entity, for cross-reference checks of a new import."""
    return {
        "accounts": set(
            session.scalars(select(m.Account.external_id).where(m.Account.external_id.is_not(None)))
        ),
        "reps": set(session.scalars(select(m.Rep.email))),
    }


def apply_crm_import(session: Session, payload: dict[str, list[dict[str, Any]]]) -> dict[str, Counter[str]]:
    """Upsert reps, accounts, contacts and opportunities; returns new/updated/unchanged counts."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in payload.get("reps", []):
        rep = session.scalar(select(m.Rep).where(m.Rep.email == row["email"]))
        counts["reps"][_upsert(session, rep, m.Rep, row)] += 1
    session.flush()
    accounts: dict[str, m.Account] = {}
    for row in payload.get("accounts", []):
        account = session.scalar(select(m.Account).where(m.Account.external_id == row["id"]))
        fields = {"external_id": row["id"], "name": row["name"]}
        outcome = _upsert(session, account, m.Account, fields)
        account = account or session.scalar(select(m.Account).where(m.Account.external_id == row["id"]))
        assert account is not None  # noqa: S101 - just upserted
        if _set_domains(session, account, row["domains"]) and outcome == "unchanged":
            outcome = "updated"
        counts["accounts"][outcome] += 1
        accounts[row["id"]] = account
    session.flush()
    for row in payload.get("contacts", []):
        account_id = _account_pk(session, accounts, row.get("account_id"))
        contact = session.scalar(select(m.Contact).where(m.Contact.external_id == row["id"]))
        fields = {
            "external_id": row["id"],
            "name": row["name"],
            "account_id": account_id,
            "owner_rep": row.get("owner_rep"),
        }
        outcome = _upsert(session, contact, m.Contact, fields)
        contact = contact or session.scalar(select(m.Contact).where(m.Contact.external_id == row["id"]))
        assert contact is not None  # noqa: S101 - just upserted
        if _set_addresses(session, contact, row["emails"]) and outcome == "unchanged":
            outcome = "updated"
        counts["contacts"][outcome] += 1
    for row in payload.get("opportunities", []):
        opportunity = session.scalar(select(m.Opportunity).where(m.Opportunity.external_id == row["id"]))
        stage = row["stage"]
        fields = {
            "external_id": row["id"],
            "account_id": _account_pk(session, accounts, row["account_id"]),
            "name": row["name"],
            "stage": stage,
            "stage_raw": row["stage_raw"],
            "amount": Decimal(row["amount"]) if row.get("amount") else None,
            "currency": row.get("currency"),
            "owner_rep": row.get("owner_rep"),
            "created_at": datetime.fromisoformat(row["created_at"]) if row.get("created_at") else None,
            "outcome": {"closed_won": "won", "closed_lost": "lost"}.get(stage),
        }
        counts["opportunities"][_upsert(session, opportunity, m.Opportunity, fields)] += 1
    session.flush()
    return dict(counts)


def _upsert(session: Session, row: Any, model: type[m.Base], fields: dict[str, Any]) -> str:
    if row is None:
        session.add(model(**fields))
        return "new"
    changed = False
    for name, value in fields.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return "updated" if changed else "unchanged"


def _account_pk(session: Session, cache: dict[str, m.Account], external_id: str | None) -> int | None:
    if not external_id:
        return None
    account = cache.get(external_id) or session.scalar(
        select(m.Account).where(m.Account.external_id == external_id)
    )
    return account.id if account else None


def _set_domains(session: Session, account: m.Account, domains: list[str]) -> bool:
    wanted = {d.lower() for d in domains}
    if {d.domain for d in account.domains} == wanted:
        return False
    account.domains.clear()
    session.flush()
    for domain in sorted(wanted):
        taken = session.get(m.AccountDomain, domain)
        if taken is not None:  # a domain belongs to one account: the newest import wins
            session.delete(taken)
            session.flush()
        account.domains.append(m.AccountDomain(domain=domain))
    return True


def _set_addresses(session: Session, contact: m.Contact, emails: list[str]) -> bool:
    wanted = {normalise_email(e) for e in emails}
    if {a.email for a in contact.addresses} == wanted:
        return False
    contact.addresses.clear()
    session.flush()
    for email in sorted(wanted):
        taken = session.get(m.ContactAddress, email)
        if taken is not None:
            session.delete(taken)
            session.flush()
        contact.addresses.append(m.ContactAddress(email=email))
    return True


def load_snapshot(
    session: Session, internal_domains: frozenset[str], free_mail_domains: frozenset[str]
) -> CrmSnapshot:
    """The CRM as lookups, for the match stage."""
    accounts = {a.id: AccountRef(id=a.id, name=a.name) for a in session.scalars(select(m.Account))}
    by_domain = {
        d.domain: accounts[d.account_id]
        for d in session.scalars(select(m.AccountDomain))
        if d.domain not in free_mail_domains and d.domain not in internal_domains
    }
    contacts = {c.id: c for c in session.scalars(select(m.Contact))}
    by_email = {
        a.email: ContactRef(
            id=a.contact_id,
            name=contacts[a.contact_id].name,
            account_id=contacts[a.contact_id].account_id,
            owner_rep=contacts[a.contact_id].owner_rep,
        )
        for a in session.scalars(select(m.ContactAddress))
    }
    open_opps: dict[int, list[OpportunityRef]] = defaultdict(list)
    for opp in session.scalars(
        select(m.Opportunity).where(m.Opportunity.stage.not_in(CLOSED)).order_by(m.Opportunity.id)
    ):
        open_opps[opp.account_id].append(
            OpportunityRef(
                id=opp.id,
                external_id=opp.external_id,
                account_id=opp.account_id,
                name=opp.name,
                stage=opp.stage,
                amount=opp.amount,
                currency=opp.currency,
                owner_rep=opp.owner_rep,
            )
        )
    return CrmSnapshot(
        contacts_by_email=by_email,
        accounts=accounts,
        accounts_by_domain=by_domain,
        open_opportunities={k: tuple(v) for k, v in open_opps.items()},
        reps=frozenset(session.scalars(select(m.Rep.email).where(m.Rep.active))),
        internal_domains=internal_domains,
        free_mail_domains=free_mail_domains,
    )
