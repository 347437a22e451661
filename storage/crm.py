"""The CRM store: applies validated CRM imports (upsert by external id) and snapshots it for matching."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

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
        counts["reps"][_upsert(session, m.Rep, m.Rep.email, row)[1]] += 1
    session.flush()
    accounts: dict[str, m.Account] = {}
    for row in payload.get("accounts", []):
        account, outcome = _upsert(
            session, m.Account, m.Account.external_id, {"external_id": row["id"], "name": row["name"]}
        )
        domains = _set_keys(session, account.domains, m.AccountDomain, {d.lower() for d in row["domains"]})
        counts["accounts"][_changed(outcome, domains)] += 1
        accounts[row["id"]] = account
    session.flush()
    for row in payload.get("contacts", []):
        fields = {
            "external_id": row["id"],
            "name": row["name"],
            "account_id": _account_pk(session, accounts, row.get("account_id")),
            "owner_rep": row.get("owner_rep"),
        }
        contact, outcome = _upsert(session, m.Contact, m.Contact.external_id, fields)
        addresses = _set_keys(
            session, contact.addresses, m.ContactAddress, {normalise_email(e) for e in row["emails"]}
        )
        counts["contacts"][_changed(outcome, addresses)] += 1
    for row in payload.get("opportunities", []):
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
        counts["opportunities"][_upsert(session, m.Opportunity, m.Opportunity.external_id, fields)[1]] += 1
    session.flush()
    return dict(counts)


def _upsert(session: Session, model: type[Any], key: Any, fields: dict[str, Any]) -> tuple[Any, str]:
    """The row whose `key` column equals fields[key.name], created or updated; and new/updated/unchanged."""
    row = session.scalar(select(model).where(key == fields[key.name]))
    if row is None:
        row = model(**fields)
        session.add(row)
        session.flush()
        return row, "new"
    changed = False
    for name, value in fields.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return row, "updated" if changed else "unchanged"


def _changed(outcome: str, children_changed: bool) -> str:
    return "updated" if children_changed and outcome == "unchanged" else outcome


def _account_pk(session: Session, cache: dict[str, m.Account], external_id: str | None) -> int | None:
    if not external_id:
        return None
    account = cache.get(external_id) or session.scalar(
        select(m.Account).where(m.Account.external_id == external_id)
    )
    return account.id if account else None


def _set_keys(session: Session, owned: list[Any], model: type[Any], wanted: set[str]) -> bool:
    """Give a row exactly the `wanted` domains or addresses; a key taken by another row moves here
    (one domain, one address belongs to one account, one contact: the newest import wins)."""
    key = model.__mapper__.primary_key[0].name
    if {getattr(item, key) for item in owned} == wanted:
        return False
    owned.clear()
    session.flush()
    for value in sorted(wanted):
        taken = session.get(model, value)
        if taken is not None:
            session.delete(taken)
            session.flush()
        owned.append(model(**{key: value}))
    return True


def crm_version(session: Session) -> tuple[int, datetime | None]:
    """Changes whenever a CRM import (or any other event) is applied: the snapshot is stale then."""
    count, last = session.execute(select(func.count(), func.max(m.AppliedEvent.at))).one()
    return int(count), last


def load_snapshot(
    session: Session, internal_domains: frozenset[str], free_mail_domains: frozenset[str]
) -> CrmSnapshot:
    """The CRM as lookups, for the match stage.

    Reads plain columns, not ORM objects: at 50,000 contacts the ORM's identity map alone held more
    memory than the whole snapshot. A contact with several addresses is one ContactRef, and the
    few distinct rep addresses are shared strings.
    """
    shared: dict[str, str] = {}

    def rep(email: str | None) -> str | None:
        return None if email is None else shared.setdefault(email, email)

    accounts = {
        account_id: AccountRef(id=account_id, name=name)
        for account_id, name in session.execute(select(m.Account.id, m.Account.name))
    }
    by_domain = {
        domain: accounts[account_id]
        for domain, account_id in session.execute(select(m.AccountDomain.domain, m.AccountDomain.account_id))
        if domain not in free_mail_domains and domain not in internal_domains
    }
    contacts = {
        contact_id: ContactRef(id=contact_id, name=name, account_id=account_id, owner_rep=rep(owner))
        for contact_id, name, account_id, owner in session.execute(
            select(m.Contact.id, m.Contact.name, m.Contact.account_id, m.Contact.owner_rep)
        )
    }
    by_email = {
        email: contacts[contact_id]
        for email, contact_id in session.execute(select(m.ContactAddress.email, m.ContactAddress.contact_id))
    }
    open_opps: dict[int, list[OpportunityRef]] = defaultdict(list)
    columns = (
        m.Opportunity.id,
        m.Opportunity.external_id,
        m.Opportunity.account_id,
        m.Opportunity.name,
        m.Opportunity.stage,
        m.Opportunity.amount,
        m.Opportunity.currency,
        m.Opportunity.owner_rep,
    )
    query = select(*columns).where(m.Opportunity.stage.not_in(CLOSED)).order_by(m.Opportunity.id)
    for opp_id, external_id, account_id, name, stage, amount, currency, owner in session.execute(query):
        open_opps[account_id].append(
            OpportunityRef(
                id=opp_id,
                external_id=external_id,
                account_id=account_id,
                name=name,
                stage=stage,
                amount=amount,
                currency=currency,
                owner_rep=rep(owner),
            )
        )
    return CrmSnapshot(
        contacts_by_email=by_email,
        accounts=accounts,
        accounts_by_domain=by_domain,
        open_opportunities={k: tuple(v) for k, v in open_opps.items()},
        # Departed reps too: their address stays ours, so their old mail never makes our company a prospect.
        reps=frozenset(session.scalars(select(m.Rep.email))),
        internal_domains=internal_domains,
        free_mail_domains=free_mail_domains,
    )
