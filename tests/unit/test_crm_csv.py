"""CRM CSV reading: the contract of DESIGN.md, bad rows reported with file, line, column and reason."""

from __future__ import annotations

import pytest

from config.errors import CrmImportError
from config.settings import load_settings
from mailsync.crm_csv import find_files, read_crm_files
from tests.conftest import DEMO, write_config


@pytest.fixture
def stage_for(tmp_path):
    return load_settings(write_config(tmp_path)).stage_for


def test_demo_files_read_cleanly(stage_for):
    result = read_crm_files(find_files([DEMO / "crm"]), stage_for, known={})
    assert result.errors == []
    assert {k: len(v) for k, v in result.rows.items()} == {
        "reps": 3,
        "accounts": 7,
        "contacts": 13,
        "opportunities": 9,
    }
    acme = next(a for a in result.rows["accounts"] if a["id"] == "ACC-001")
    assert len(acme["domains"]) == 2
    assert any(len(c["emails"]) == 2 for c in result.rows["contacts"])
    stages = {o["stage"] for o in result.rows["opportunities"]}
    assert {"closed_won", "closed_lost"} <= stages
    assert all(o["stage_raw"] for o in result.rows["opportunities"])


def test_bad_rows_are_reported_and_good_rows_kept(stage_for):
    result = read_crm_files(
        find_files([DEMO / "crm" / "bad" / "contacts.csv"]),
        stage_for,
        known={"accounts": {"ACC-001", "ACC-002", "ACC-003", "ACC-004", "ACC-005", "ACC-006", "ACC-007"}},
    )
    assert len(result.rows["contacts"]) == 3
    problems = {(e.line, e.column) for e in result.errors}
    assert problems == {(3, "email"), (5, "id")}
    text = [str(e) for e in result.errors]
    assert any("contacts.csv:3, column email: not an email address" in t for t in text)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_cross_references_duplicates_and_stages(tmp_path, stage_for):
    write(
        tmp_path,
        "accounts.csv",
        "id,name,domain\nA1,Acme,acme.example\nA1,Acme again,acme2.example\nA2,Bad,not a domain\n",
    )
    write(tmp_path, "opportunities.csv",
          "id,account_id,name,stage,amount,currency,owner_rep,created_at\n"
          "O1,A1,Deal,Closed Won,48000.00,usd,dana@northwind.example,2026-01-02\n"
          "O2,A9,Ghost,Qualification,,,,\n"
          "O3,A1,Odd,Mystery stage,1,USD,,\n"
          "O4,A1,Money,Demo,$48k,USD,,\n"
          "O5,A1,Date,Demo,10,USD,,02/01/2026\n")  # fmt: skip
    result = read_crm_files(find_files([tmp_path]), stage_for, known={})
    assert [a["id"] for a in result.rows["accounts"]] == ["A1"]
    assert result.rows["opportunities"] == [
        {"id": "O1", "account_id": "A1", "name": "Deal", "stage": "closed_won", "stage_raw": "Closed Won",
         "amount": "48000.00", "currency": "USD", "owner_rep": "dana@northwind.example",
         "created_at": "2026-01-02T00:00:00"},
    ]  # fmt: skip
    reasons = {(e.file.split("/")[-1], e.line, e.column): e.reason for e in result.errors}
    assert reasons[("accounts.csv", 3, "id")].startswith("duplicate 'A1'")
    assert reasons[("accounts.csv", 4, "domain")] == "not a domain: 'not a domain'"
    assert reasons[("opportunities.csv", 3, "account_id")] == "unknown account 'A9'"
    assert "unknown stage 'Mystery stage'" in reasons[("opportunities.csv", 4, "stage")]
    assert "not a plain decimal amount" in reasons[("opportunities.csv", 5, "amount")]
    assert "not an ISO 8601 date" in reasons[("opportunities.csv", 6, "created_at")]


def test_extra_columns_warn_and_map_renames(tmp_path, stage_for):
    write(tmp_path, "reps.csv", "E-Mail,Full Name,team,shoe size\ndana@northwind.example,Dana,East,38\n")
    result = read_crm_files(
        find_files([tmp_path]), stage_for, known={}, mapping={"E-Mail": "email", "Full Name": "name"}
    )
    assert result.rows["reps"] == [{"email": "dana@northwind.example", "name": "Dana", "team": "East"}]
    assert result.warnings == [f"{tmp_path / 'reps.csv'}: ignoring extra column(s) shoe size"]


def test_unreadable_files_are_one_clear_error(tmp_path, stage_for):
    write(tmp_path, "reps.csv", "name,team\nDana,East\n")
    with pytest.raises(CrmImportError, match="missing column 'email'") as caught:
        read_crm_files(find_files([tmp_path]), stage_for, known={})
    assert "--map" in (caught.value.fix or "")
    (tmp_path / "reps.csv").write_bytes(b"email,name\n\xff\xfe,x\n")
    with pytest.raises(CrmImportError, match="not UTF-8"):
        read_crm_files(find_files([tmp_path]), stage_for, known={})
    with pytest.raises(CrmImportError, match="does not exist"):
        find_files([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CrmImportError, match="no CRM CSV files"):
        find_files([tmp_path / "empty"])
