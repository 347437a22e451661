"""The synthetic CRM of bench/synth.py (50,000 contacts, 10,000 accounts, 5,000 opportunities, the
reps) bulk-inserted into a migrated mailsync database, SQLite or PostgreSQL: the CRM the memory and
capture benches run against."""

from __future__ import annotations

from sqlalchemy import insert

from bench.synth import REPS, build_crm
from storage import models as m
from storage.repo import Repo


def build_crm_database(url: str) -> None:
    """Migrate the empty database at `url` and fill it with the synthetic CRM."""
    repo = Repo(url)
    try:
        repo.upgrade()
        crm = build_crm()
        snap = crm.snapshot
        with repo.session() as s:
            s.execute(insert(m.Rep), [{"email": r, "name": r.split("@")[0], "team": "bench"} for r in REPS])
            s.execute(
                insert(m.Account),
                [{"id": a.id, "external_id": f"A{a.id}", "name": a.name} for a in snap.accounts.values()],
            )
            s.execute(
                insert(m.AccountDomain),
                [{"domain": d, "account_id": a.id} for d, a in snap.accounts_by_domain.items()],
            )
            contacts = {c.id: c for _, c in crm.contacts}
            s.execute(
                insert(m.Contact),
                [
                    {"id": c.id, "external_id": f"C{c.id}", "account_id": c.account_id, "name": c.name}
                    | {"owner_rep": c.owner_rep}
                    for c in contacts.values()
                ],
            )
            s.execute(insert(m.ContactAddress), [{"email": e, "contact_id": c.id} for e, c in crm.contacts])
            s.execute(
                insert(m.Opportunity),
                [
                    {"id": o.id, "external_id": o.external_id, "account_id": o.account_id, "name": o.name}
                    | {"stage": o.stage, "stage_raw": o.stage, "amount": o.amount, "currency": o.currency}
                    | {"owner_rep": o.owner_rep}
                    for opps in snap.open_opportunities.values()
                    for o in opps
                ],
            )
    finally:
        repo.dispose()
