"""CRM CSV reading: the contract of DESIGN.md, bad rows reported with file, line, column and reason."""

from __future__ import annotations

import csv

import pytest

from config.errors import ConfigError, CrmImportError
from config.settings import load_settings
from mailsync.admin.crm_csv import RowError, find_files, parse_delimiter, read_crm_files
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


OPPORTUNITIES = "id,account_id,name,stage,amount,currency,owner_rep,created_at\n"


def test_excel_exports_with_other_delimiters_a_bom_and_crlf_are_read(tmp_path, stage_for):
    # Excel in DE/FR/ES locales writes ';', UTF-8 with a BOM, CRLF, and rows of empty cells at the end.
    (tmp_path / "reps.csv").write_bytes(
        "\ufeffemail;name;team\r\ndana@northwind.example;Dana Whitfield;East\r\n;;\r\n;;\r\n".encode()
    )
    write(tmp_path, "accounts.csv", "id\tname\tdomain\nA1\tAcme, Inc.\tacme.example\n")
    write(
        tmp_path, "contacts.csv", 'id|account_id|name|email|owner_rep\nC1|A1|"Kim | Rachel"|r@acme.example|\n'
    )
    # Line and page separators inside a value are text, not line breaks.
    write(
        tmp_path,
        "opportunities.csv",
        OPPORTUNITIES + "O1,A1,Fleet\u2028rollout\x0c,Demo,,,,\nO2,A1,Two,Demo,,,,\n",
    )
    result = read_crm_files(find_files([tmp_path]), stage_for, known={})
    assert result.errors == []
    assert result.rows["reps"] == [
        {"email": "dana@northwind.example", "name": "Dana Whitfield", "team": "East"}
    ]
    assert result.read["reps"] == 1
    assert result.rows["accounts"] == [{"id": "A1", "name": "Acme, Inc.", "domains": ["acme.example"]}]
    assert result.rows["contacts"][0]["name"] == "Kim | Rachel"
    assert [o["name"] for o in result.rows["opportunities"]] == ["Fleet\u2028rollout", "Two"]


def test_delimiter_option_overrides_detection(tmp_path, stage_for):
    write(tmp_path, "reps.csv", "email;name;team\ndana@northwind.example;Dana;East\n")
    result = read_crm_files(find_files([tmp_path]), stage_for, known={}, delimiter=";")
    assert result.rows["reps"] == [{"email": "dana@northwind.example", "name": "Dana", "team": "East"}]
    with pytest.raises(CrmImportError, match=r"missing column 'email' \(header: email;name;team\)") as caught:
        read_crm_files(find_files([tmp_path]), stage_for, known={}, delimiter=",")
    assert "--delimiter" in (caught.value.fix or "")
    assert [parse_delimiter(v) for v in (None, ";", "tab", "\\t", "|")] == [None, ";", "\t", "\t", "|"]
    for bad in ("||", "", '"'):
        with pytest.raises(ConfigError, match="cannot separate CSV fields"):
            parse_delimiter(bad)


def test_rows_with_too_few_or_too_many_fields_say_so(tmp_path, stage_for):
    write(tmp_path, "accounts.csv", "id,name,domain\nA1,Acme,acme.example\n")
    write(tmp_path, "opportunities.csv", OPPORTUNITIES + "O1,A1,Deal\nO2,A1,Deal,Demo,1,USD,,,extra\n")
    result = read_crm_files(find_files([tmp_path]), stage_for, known={})
    file = str(tmp_path / "opportunities.csv")
    assert result.errors == [
        RowError(file, 2, None, "row has 3 fields, header has 8"),
        RowError(file, 3, None, "row has 9 fields, header has 8"),
    ]
    assert str(result.errors[0]) == f"{file}:2: row has 3 fields, header has 8"


def test_an_oversized_field_rejects_its_row_and_the_rest_is_read(tmp_path, stage_for):
    """A runaway cell (5 MB here; 100 MB in the export that crashed) costs that row, with where and why;
    quoted line breaks in an oversized cell are stepped over, so the line numbers after it stay right."""
    big_quoted = b'"' + b"x" * 700_000 + b"\r\n" + b"y" * 700_000 + b'\n"'
    rows = [
        b"email,name,team\n",
        b"a@northwind.example," + b"x" * 5_000_000 + b",East\n",  # 100 MB behaves the same, in 260 MB of RAM
        b"b@northwind.example,B,East\n",
        b"c@northwind.example,C," + big_quoted + b"\n",
        b"not-an-email,D,East\n",
        b"e@northwind.example,E,East\n",
    ]
    (tmp_path / "reps.csv").write_bytes(b"".join(rows))
    process_limit = csv.field_size_limit()
    result = read_crm_files(find_files([tmp_path]), stage_for, known={})
    file = str(tmp_path / "reps.csv")
    limit = "value over 1,048,576 characters, the limit for one field"
    assert result.errors == [
        RowError(file, 2, "name", limit),
        RowError(file, 4, "team", f"{limit} (the row runs from line 4 to 6: check its quotes)"),
        RowError(file, 7, "email", "not an email address: 'not-an-email'"),
    ]
    assert [r["email"] for r in result.rows["reps"]] == ["b@northwind.example", "e@northwind.example"]
    assert result.read["reps"] == 5
    assert csv.field_size_limit() == process_limit  # left as it was for the rest of the process


def test_another_csv_error_names_file_and_line(tmp_path, stage_for, monkeypatch):
    """A fake reader: on text split into lines the csv module raises nothing but the field limit (NUL is
    allowed since 3.11; a lone CR ends a line), yet anything else it raises must be one line, no traceback."""
    real_reader = csv.reader

    class FailingReader:
        def __init__(self, *args, **kwargs):
            self.reader = real_reader(*args, **kwargs)
            self.line_num = 0

        def __iter__(self):
            return self

        def __next__(self):
            row = next(self.reader)
            self.line_num = self.reader.line_num
            if self.line_num == 3:
                raise csv.Error("line contains NUL")
            return row

    monkeypatch.setattr(csv, "reader", FailingReader)
    write(tmp_path, "reps.csv", "email,name,team\na@northwind.example,A,East\nb@northwind.example,B,East\n")
    with pytest.raises(CrmImportError) as caught:
        read_crm_files(find_files([tmp_path]), stage_for, known={})
    assert str(caught.value) == f"{tmp_path / 'reps.csv'}:3: cannot read the CSV: line contains NUL"


def test_unknown_owner_and_currency_keep_the_row_with_a_warning(tmp_path, stage_for):
    write(tmp_path, "reps.csv", "email,name,team\nsam@northwind.example,Sam,West\n")
    write(tmp_path, "opportunities.csv", OPPORTUNITIES
          + "O1,A1,Known reps,Demo,1,EUR,sam@northwind.example,\n"
          + "O2,A1,Rep in the database,Demo,1,usd,dana@northwind.example,\n"
          + "O3,A1,Nobody,Demo,1,XYZ,ghost@northwind.example,\n")  # fmt: skip
    write(
        tmp_path,
        "contacts.csv",
        "id,account_id,name,email,owner_rep\nC1,A1,Kim,k@acme.example,Ghost@Northwind.example\n",
    )
    known = {"accounts": {"A1"}, "reps": {"dana@northwind.example"}}
    result = read_crm_files(find_files([tmp_path]), stage_for, known=known)
    assert result.errors == []
    assert [o["currency"] for o in result.rows["opportunities"]] == ["EUR", "USD", "XYZ"]
    assert len(result.rows["contacts"]) == 1
    contacts, opportunities = tmp_path / "contacts.csv", tmp_path / "opportunities.csv"
    unknown = "unknown rep 'ghost@northwind.example' (not in reps.csv nor in the database); imported anyway"
    assert result.warnings == [
        f"{contacts}:2, column owner_rep: {unknown}",
        f"{opportunities}:4, column owner_rep: {unknown}",
        f"{opportunities}:4, column currency: 'XYZ' is not an ISO 4217 currency code; imported as written",
    ]
