"""Applying CRM imports to the store: upsert by external id, domains and addresses that move."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage import models as m
from storage.crm import apply_crm_import

pytestmark = pytest.mark.both_dbs


def account(id_, name, *domains):
    return {"id": id_, "name": name, "domains": list(domains)}


def contact(id_, account_id, *emails):
    return {"id": id_, "account_id": account_id, "name": id_, "emails": list(emails), "owner_rep": None}


def test_reimport_updates_changes_and_moves_keys(repo):
    with repo.session() as s:
        first = apply_crm_import(s, {
            "accounts": [account("A1", "Acme", "acme.example"), account("A2", "Globex", "globex.example")],
            "contacts": [contact("C1", "A1", "Rachel+crm@ACME.example"), contact("C2", "A2", "joe@globex.example")],
        })  # fmt: skip
    assert first["accounts"]["new"] == 2
    assert first["contacts"]["new"] == 2
    with repo.session() as s:
        second = apply_crm_import(s, {
            "accounts": [account("A1", "Acme Corp", "acme.example"), account("A2", "Globex", "globex.example", "acme.example")],
            "contacts": [contact("C1", "A1", "rachel@acme.example"), contact("C2", "A2", "joe@globex.example", "rachel@acme.example")],
        })  # fmt: skip
    assert dict(second["accounts"]) == {"updated": 2}  # a renamed one, and one that took a domain
    assert dict(second["contacts"]) == {"unchanged": 1, "updated": 1}  # C2 took the address from C1
    with repo.session() as s:
        domains = dict(s.execute(select(m.AccountDomain.domain, m.Account.external_id).join(m.Account)).all())
        addresses = dict(
            s.execute(select(m.ContactAddress.email, m.Contact.external_id).join(m.Contact)).all()
        )
        names = set(s.scalars(select(m.Account.name)))
    assert domains == {"acme.example": "A2", "globex.example": "A2"}
    assert addresses == {"rachel@acme.example": "C2", "joe@globex.example": "C2"}
    assert names == {"Acme Corp", "Globex"}


def test_pipeline_reloads_its_crm_snapshot_after_an_import(config_file, pipeline):
    from mailsync.cli import main  # noqa: PLC0415
    from tests.conftest import ROOT  # noqa: PLC0415

    assert not pipeline.crm.accounts
    assert not pipeline.refresh_crm_if_changed()  # nothing applied since the snapshot
    assert main(["--config", str(config_file), "crm", "import", str(ROOT / "fixtures/demo/crm")]) == 0
    assert pipeline.refresh_crm_if_changed()  # another process imported: the daemon's next pass sees it
    assert pipeline.crm.accounts
    assert not pipeline.refresh_crm_if_changed()
