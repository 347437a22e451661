"""The CRM store: applies validated CRM imports (upsert by external id) and snapshots it for matching."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update

from storage import models as m
from storage.in_lists import chunks
from storage.models import db_text
from storage.records import AccountRef, ContactRef, CrmSnapshot, OpportunityRef, normalise_email

if TYPE_CHECKING:
    from sqlalchemy.orm import InstrumentedAttribute, Session

CLOSED = ("closed_won", "closed_lost")
CHUNK = 1_000  # keys per `IN (...)` read: well below SQLite's and PostgreSQL's bound-parameter limits


def known_external_ids(session: Session) -> dict[str, set[str]]:
    """External ids already in the store, per entity, for cross-reference checks of a new import."""
    return {
        "accounts": set(
            session.scalars(select(m.Account.external_id).where(m.Account.external_id.is_not(None)))
        ),
        "reps": set(session.scalars(select(m.Rep.email))),
    }


def apply_crm_import(session: Session, payload: dict[str, list[dict[str, Any]]]) -> dict[str, Counter[str]]:
    """Upsert reps, accounts, contacts and opportunities; returns new/updated/unchanged counts.

    Set-based, so that 50,000 contacts take seconds, not minutes: the stored rows an import names are
    read a chunk of keys at a time, each row is decided in memory in the payload's order (a later row
    meets what an earlier one did, as when each was written at once), and the net changes are written
    with a few multi-row statements. New rows get their ids in the payload's order.
    """
    counts: dict[str, Counter[str]] = {}
    if rows := payload.get("reps"):
        reps = _Upserts(session, m.Rep, "email", rows)
        reps.write(session)
        counts["reps"] = Counter(reps.outcomes)
    ids: dict[str, int] = {}  # this import's accounts by external id
    if rows := payload.get("accounts"):
        accounts = _Upserts(
            session, m.Account, "external_id", [{"external_id": r["id"], "name": r["name"]} for r in rows]
        )
        accounts.write(session)
        ids = {row["id"]: account_id for row, account_id in zip(rows, accounts.ids(), strict=True)}
        wanted = [{d.lower() for d in row["domains"]} for row in rows]
        domains = _Keys(session, m.AccountDomain.domain, m.AccountDomain.account_id, accounts.stored, wanted)
        changed = [domains.give(ids[row["id"]], keys) for row, keys in zip(rows, wanted, strict=True)]
        domains.write(session)
        counts["accounts"] = Counter(map(_changed, accounts.outcomes, changed))
    named = {row.get("account_id") for kind in ("contacts", "opportunities") for row in payload.get(kind, [])}
    account_pk = _account_pks(session, ids, named)
    if rows := payload.get("contacts"):
        fields = [
            {
                "external_id": row["id"],
                "name": row["name"],
                "account_id": account_pk.get(row.get("account_id")),
                "owner_rep": row.get("owner_rep"),
            }
            for row in rows
        ]
        contacts = _Upserts(session, m.Contact, "external_id", fields)
        contacts.write(session)
        wanted = [{normalise_email(e) for e in row["emails"]} for row in rows]
        addresses = _Keys(
            session, m.ContactAddress.email, m.ContactAddress.contact_id, contacts.stored, wanted
        )
        changed = [
            addresses.give(contact_id, keys) for contact_id, keys in zip(contacts.ids(), wanted, strict=True)
        ]
        addresses.write(session)
        counts["contacts"] = Counter(map(_changed, contacts.outcomes, changed))
    if rows := payload.get("opportunities"):
        opportunities = _Upserts(
            session, m.Opportunity, "external_id", [_opportunity(row, account_pk) for row in rows]
        )
        opportunities.write(session)
        counts["opportunities"] = Counter(opportunities.outcomes)
    return counts


def _opportunity(row: dict[str, Any], account_pk: dict[str | None, int]) -> dict[str, Any]:
    stage = row["stage"]
    return {
        "external_id": row["id"],
        "account_id": account_pk.get(row["account_id"]),
        "name": row["name"],
        "stage": stage,
        "stage_raw": row["stage_raw"],
        "amount": Decimal(row["amount"]) if row.get("amount") else None,
        "currency": row.get("currency"),
        "owner_rep": row.get("owner_rep"),
        "created_at": datetime.fromisoformat(row["created_at"]) if row.get("created_at") else None,
        "outcome": {"closed_won": "won", "closed_lost": "lost"}.get(stage),
    }


def _changed(outcome: str, children_changed: bool) -> str:
    return "updated" if children_changed and outcome == "unchanged" else outcome


def _account_pks(session: Session, ids: dict[str, int], named: set[str | None]) -> dict[str | None, int]:
    """The id of each account a contact or opportunity names: this import's, else the store's."""
    others = {name for name in named if name and name not in ids}
    stored: dict[str | None, int] = {}
    column = m.Account.external_id
    for chunk in chunks({db_text(name) for name in others}, CHUNK):
        stored.update(session.execute(select(column, m.Account.id).where(column.in_(chunk))).all())
    pks: dict[str | None, int] = {name: stored[db_text(name)] for name in others if db_text(name) in stored}
    pks.update(ids)
    return pks


class _Upserts:
    """One table's rows of an import upserted by their `key` column: the stored rows read a chunk of keys
    at a time, then each row compared with the row of its key (stored, or made by an earlier row of this
    import), column by column as the ORM would (the values as loaded against the values given)."""

    def __init__(self, session: Session, model: type[Any], key: str, rows: list[dict[str, Any]]) -> None:
        self.model, self.key = model, key
        names = list(dict.fromkeys(name for row in rows for name in row))
        query = select(model.id, *(getattr(model, name) for name in names))
        records: dict[str, dict[str, Any]] = {}  # by key as stored (keys pass through db_text)
        for chunk in chunks(dict.fromkeys(db_text(row[key]) for row in rows), CHUNK):
            for found in session.execute(query.where(getattr(model, key).in_(chunk))):
                record = found._asdict()
                records[record[key]] = record
        self.stored = [record["id"] for record in records.values()]  # ids of the rows stored before
        self.new: list[dict[str, Any]] = []
        self.changes: dict[int, dict[str, Any]] = {}  # stored row id -> its changed columns
        self.records: list[dict[str, Any]] = []  # each row's record
        self.outcomes: list[str] = []  # each row's new | updated | unchanged
        defaults = {name: _default(model, name) for name in names}
        for row in rows:
            record = records.setdefault(db_text(row[key]), {})
            if not record:
                record.update(defaults | row)
                self.new.append(record)
                outcome = "new"
            else:
                changed = {name: value for name, value in row.items() if record[name] != value}
                record.update(changed)
                if changed and "id" in record:  # a new row goes in as it ends up
                    self.changes.setdefault(record["id"], {}).update(changed)
                outcome = "updated" if changed else "unchanged"
            self.records.append(record)
            self.outcomes.append(outcome)

    def write(self, session: Session) -> None:
        """The new rows inserted (in the order of the rows, and so are their ids) and their ids read back
        (RETURNING in that order costs SQLite a statement a row), the changed ones updated."""
        if self.new:
            session.execute(insert(self.model), self.new)
            made = {db_text(record[self.key]): record for record in self.new}
            column = getattr(self.model, self.key)
            for chunk in chunks(made, CHUNK):
                for key, row_id in session.execute(select(column, self.model.id).where(column.in_(chunk))):
                    made[key]["id"] = row_id
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row_id, changed in self.changes.items():  # one UPDATE a set of changed columns
            groups[tuple(sorted(changed))].append({"id": row_id, **changed})
        for group in groups.values():
            session.execute(update(self.model), group)

    def ids(self) -> list[int]:
        """Each row's id, once written."""
        return [record["id"] for record in self.records]


def _default(model: type[Any], name: str) -> Any:
    """What a new row has in a column its import row does not give (reps.csv's optional columns), so
    that every new row has the same columns and all go in one statement."""
    default = model.__table__.c[name].default
    return default.arg if default is not None and default.is_scalar else None


class _Keys:
    """Account domains or contact addresses: each `key` belongs to one parent; a parent given a key
    another one holds takes it (one domain, one address belongs to one account, one contact: the newest
    import wins). The keys of the parents and the keys wanted are read first, the changes written at
    the end."""

    def __init__(
        self,
        session: Session,
        key: InstrumentedAttribute[str],
        parent: InstrumentedAttribute[int],
        parents: list[int],
        wanted: list[set[str]],
    ) -> None:
        self.key, self.parent = key, parent
        self.owner: dict[str, int] = {}  # key -> its parent's id
        for chunk in chunks(parents, CHUNK):
            self.owner.update(session.execute(select(key, parent).where(parent.in_(chunk))).all())
        for values in chunks({db_text(value) for keys in wanted for value in keys}, CHUNK):
            self.owner.update(session.execute(select(key, parent).where(key.in_(values))).all())
        self.stored = dict(self.owner)
        self.held: dict[int, set[str]] = defaultdict(set)
        for value, owner in self.owner.items():
            self.held[owner].add(value)

    def give(self, parent: int, wanted: set[str]) -> bool:
        """`parent` holds exactly the `wanted` keys; whether it held others before."""
        held = self.held[parent]
        if held == wanted:
            return False
        for value in held:
            del self.owner[value]
        held.clear()
        for value in map(db_text, wanted):
            previous = self.owner.get(value)
            if previous is not None:
                self.held[previous].discard(value)
            self.owner[value] = parent
            held.add(value)
        return True

    def write(self, session: Session) -> None:
        model = self.key.class_
        moved = [value for value, owner in self.stored.items() if self.owner.get(value) != owner]
        for chunk in chunks(moved, CHUNK):
            session.execute(delete(model).where(self.key.in_(chunk)))
        added = [
            {self.key.key: value, self.parent.key: owner}
            for value, owner in self.owner.items()
            if self.stored.get(value) != owner
        ]
        if added:
            session.execute(insert(model), added)


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
