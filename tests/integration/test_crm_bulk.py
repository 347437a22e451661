"""CRM imports applied set-based: a few statements however many rows, and every row's outcome, id and
keys as when rows were written one at a time (tests/integration/test_crm_store.py has the basics)."""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, select

from storage import crm
from storage import models as m
from storage.crm import apply_crm_import

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.both_dbs

OPTIONS = {"lead": "lee@northwind.example", "active": True, "timezone": "Europe/Berlin"}


@contextmanager
def statements(repo) -> Iterator[list[str]]:
    """The SQL statements sent to the database meanwhile (an executemany counts once)."""
    seen: list[str] = []

    def keep(_conn, _cursor, statement, *_args: Any) -> None:
        seen.append(statement)

    event.listen(repo.engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(repo.engine, "before_cursor_execute", keep)


def account(id_, name, *domains):
    return {"id": id_, "name": name, "domains": list(domains)}


def contact(id_, account_id, *emails, name=None):
    return {
        "id": id_,
        "account_id": account_id,
        "name": name or id_,
        "emails": list(emails),
        "owner_rep": None,
    }


def deal(id_, account_id, stage="proposal", amount=None):
    return {
        "id": id_,
        "account_id": account_id,
        "name": f"Deal {id_}",
        "stage": stage,
        "stage_raw": stage.title(),
        "amount": amount,
        "currency": "EUR" if amount else None,
        "owner_rep": None,
        "created_at": "2026-01-05T00:00:00",
    }


def crm_of(size, name="Acme"):
    return {
        "reps": [{"email": f"rep{i}@northwind.example", "name": f"Rep {i}", "team": None} for i in range(3)],
        "accounts": [account(f"A{i}", f"{name} {i}", f"a{i}.example") for i in range(size)],
        "contacts": [contact(f"C{i}", f"A{i}", f"c{i}@a{i}.example") for i in range(size)],
        "opportunities": [deal(f"O{i}", f"A{i}") for i in range(size)],
    }


def test_an_import_takes_a_few_statements_however_many_rows(repo):
    with repo.session() as s, statements(repo) as sent:
        counts = apply_crm_import(s, crm_of(600))
    assert {kind: dict(c) for kind, c in counts.items()} == {
        "reps": {"new": 3},
        "accounts": {"new": 600},
        "contacts": {"new": 600},
        "opportunities": {"new": 600},
    }
    assert len(sent) < 40, len(sent)  # one at a time, it was more than 4,000
    renamed = crm_of(600, name="Initech")
    with repo.session() as s, statements(repo) as sent:
        counts = apply_crm_import(s, renamed)
    assert dict(counts["accounts"]) == {"updated": 600}
    assert dict(counts["contacts"]) == {"unchanged": 600}
    assert len(sent) < 40, len(sent)
    with repo.session() as s, statements(repo) as sent:
        counts = apply_crm_import(s, renamed)
    assert {kind: dict(c) for kind, c in counts.items()} == {
        "reps": {"unchanged": 3},
        "accounts": {"unchanged": 600},
        "contacts": {"unchanged": 600},
        "opportunities": {"unchanged": 600},
    }
    assert not [sql for sql in sent if not sql.lstrip().upper().startswith("SELECT")]  # nothing written


def test_a_reimport_moves_keys_and_counts_each_row_as_before(repo, monkeypatch):
    monkeypatch.setattr(crm, "CHUNK", 2)  # the stored rows are read in several chunks
    with repo.session() as s:
        apply_crm_import(s, {
            "reps": [{"email": "dana@northwind.example", "name": "Dana", "team": "East", **OPTIONS},
                     {"email": "sam@northwind.example", "name": "Sam", "team": None}],
            "accounts": [account("A1", "Acme", "acme.example"), account("A2", "Globex", "globex.example"),
                         account("A3", "Initech", "initech.example")],
            "contacts": [contact("C1", "A1", "rachel@acme.example"), contact("C2", "A2", "joe@globex.example"),
                         contact("C3", None, "kim@free.example")],
            "opportunities": [deal("O1", "A1", amount="100"), deal("O2", "A2")],
        })  # fmt: skip
    with repo.session() as s:
        counts = apply_crm_import(s, {
            "reps": [{"email": "sam@northwind.example", "name": "Sam", "team": None, "active": False},
                     {"email": "dana@northwind.example", "name": "Dana", "team": "East"},
                     {"email": "lee@northwind.example", "name": "Lee", "team": None}],
            # A3 takes A1's domain, A4 (new) A2's: neither A1 nor A2 is in this import.
            "accounts": [account("A3", "Initech", "initech.example", "ACME.example"),
                         account("A4", "Umbrella", "umbrella.example", "globex.example")],
            # C1 moves to the new A4; C4 (new) takes C2's address and names A2, only in the store.
            "contacts": [contact("C1", "A4", "Rachel+crm@acme.example"), contact("C4", "A2", "joe@globex.example"),
                         contact("C3", "", "kim@free.example"), contact("C5", "A9", "new@free.example")],
            "opportunities": [deal("O1", "A1", amount="100.00"), deal("O2", "A2", stage="closed_won"),
                              deal("O3", "A4", amount="5")],
        })  # fmt: skip
    assert {kind: dict(c) for kind, c in counts.items()} == {
        "reps": {"updated": 1, "unchanged": 1, "new": 1},
        "accounts": {"updated": 1, "new": 1},
        "contacts": {"updated": 1, "new": 2, "unchanged": 1},
        "opportunities": {"unchanged": 1, "updated": 1, "new": 1},
    }
    with repo.session() as s:
        domains = dict(s.execute(select(m.AccountDomain.domain, m.Account.external_id).join(m.Account)).all())
        addresses = dict(
            s.execute(select(m.ContactAddress.email, m.Contact.external_id).join(m.Contact)).all()
        )
        contacts = dict(
            s.execute(select(m.Contact.external_id, m.Account.external_id).outerjoin(m.Account)).all()
        )
        reps = {r.email: (r.active, r.lead, r.timezone) for r in s.scalars(select(m.Rep))}
        deals = {o.external_id: (o.stage, o.outcome, o.amount) for o in s.scalars(select(m.Opportunity))}
    assert domains == {
        "acme.example": "A3",
        "initech.example": "A3",
        "globex.example": "A4",
        "umbrella.example": "A4",
    }
    assert addresses == {
        "rachel@acme.example": "C1",
        "joe@globex.example": "C4",
        "kim@free.example": "C3",
        "new@free.example": "C5",
    }
    assert contacts == {"C1": "A4", "C2": "A2", "C3": None, "C4": "A2", "C5": None}
    assert reps == {
        "dana@northwind.example": (True, "lee@northwind.example", "Europe/Berlin"),  # absent: kept
        "sam@northwind.example": (False, None, None),
        "lee@northwind.example": (True, None, None),  # new, without the column: active
    }
    assert deals == {
        "O1": ("proposal", None, Decimal("100.00")),
        "O2": ("closed_won", "won", None),
        "O3": ("proposal", None, Decimal("5.00")),
    }


def test_new_rows_get_their_ids_in_the_order_of_the_import(repo):
    names = ["Zeta", "Alpha", "Mu", "Beta"]
    with repo.session() as s:
        apply_crm_import(s, {"accounts": [account(f"X{n}", n) for n in names]})
    with repo.session() as s:
        assert list(s.scalars(select(m.Account.name).order_by(m.Account.id))) == names
