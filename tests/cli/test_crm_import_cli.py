"""`mailsync crm import` as an operator meets it: in process through main(argv), real files, real SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.eventlog import EventLog
from storage.repo import Repo
from tests.conftest import write_config

OPPORTUNITIES = "id,account_id,name,stage,amount,currency,owner_rep,created_at\n"
ACCOUNTS = "id,name,domain\nA1,Acme,acme.example\n"


@pytest.fixture
def config(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["-c", str(path), "db", "upgrade"]) == 0
    capsys.readouterr()
    return path


def crm_import(capsys, config, *argv):
    """Exit code, stdout lines, and stderr lines without the JSON log events that share it."""
    code = main(["-c", str(config), "crm", "import", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), [e for e in captured.err.splitlines() if not e.startswith("{")]


def csv_dir(tmp_path, name, **files):
    folder = tmp_path / name
    folder.mkdir()
    for kind, text in files.items():
        (folder / f"{kind}.csv").write_bytes(text.encode())
    return folder


def count(config, model):
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            return session.scalar(select(func.count()).select_from(model))
    finally:
        repo.dispose()


def test_rejected_rows_exit_1_in_every_path_and_the_last_line_says_what_happened(tmp_path, capsys, config):
    folder = csv_dir(tmp_path, "crm", accounts=ACCOUNTS, reps="email,name,team\nnot-an-email,X,East\n")
    code, _, err = crm_import(capsys, config, folder)
    assert code == 1
    assert count(config, m.Account) == 1  # the good file was imported
    assert err[-1] == "1 row(s) rejected; the good rows were imported. Fix them and re-run."
    code, _, err = crm_import(capsys, config, folder)  # the same files again: the good rows are unchanged
    assert code == 1
    assert err[-1] == "1 row(s) rejected; the good rows were imported before. Fix them and re-run."


def test_an_import_whose_every_row_is_rejected_says_so_each_time(tmp_path, capsys, config):
    for attempt in ("first", "second"):
        folder = csv_dir(tmp_path, attempt, reps=f"email,name,team\n{attempt}-not-an-email,X,East\n")
        code, out, err = crm_import(capsys, config, folder)
        assert code == 1
        assert err[-1] == "nothing imported: every row was rejected"
        assert "nothing changed: these rows were imported before" not in out + err
    assert list(EventLog(load_settings(config).events_dir)) == []  # no empty event was logged


def test_an_unchanged_import_says_nothing_changed(tmp_path, capsys, config):
    folder = csv_dir(tmp_path, "crm", accounts=ACCOUNTS)
    assert crm_import(capsys, config, folder)[0] == 0
    code, out, err = crm_import(capsys, config, folder)
    assert code == 0
    assert out[-1] == "nothing changed: these rows were imported before"
    assert not [line for line in err if line.startswith(("rejected", "warning:"))]


def test_semicolon_exports_are_detected_and_delimiter_overrides(tmp_path, capsys, config):
    folder = csv_dir(
        tmp_path,
        "excel",
        reps="\ufeffemail;name;team\r\ndana@northwind.example;Dana;East\r\n",
        accounts="id;name;domain\r\nA1;Acme, Inc.;acme.example\r\n",
    )
    code, _, err = crm_import(capsys, config, folder)
    assert code == 0, err
    assert (count(config, m.Rep), count(config, m.Account)) == (1, 1)
    reps = folder / "reps.csv"
    code, _, err = crm_import(capsys, config, reps, "--delimiter", ",")
    assert code == 1
    assert f"error: {reps}: missing column 'email' (header: email;name;team)" in err
    tabbed = csv_dir(tmp_path, "tabbed", reps="email\tname\tteam\nsam@northwind.example\tSam\tWest\n")
    assert crm_import(capsys, config, tabbed, "--delimiter", "tab")[0] == 0
    assert count(config, m.Rep) == 2


def test_a_huge_field_rejects_its_row_with_where_and_why(tmp_path, capsys, config):
    folder = csv_dir(
        tmp_path,
        "crm",
        reps=f"email,name,team\na@northwind.example,{'x' * 2_000_000},East\nb@northwind.example,B,East\n",
    )
    code, _, err = crm_import(capsys, config, folder)
    assert code == 1
    reps = folder / "reps.csv"
    assert f"rejected {reps}:2, column name: value over 1,048,576 characters, the limit for one field" in err
    assert count(config, m.Rep) == 1
    assert not any("Traceback" in line for line in err)


def test_a_short_row_and_an_unknown_stage_are_reported_as_written(tmp_path, capsys, config):
    folder = csv_dir(
        tmp_path,
        "crm",
        accounts=ACCOUNTS,
        opportunities=OPPORTUNITIES + "O1,A1,Deal\nO2,A1,Deal,Mystery,,,,\n",
    )
    code, _, err = crm_import(capsys, config, folder)
    assert code == 1
    opportunities = folder / "opportunities.csv"
    assert f"rejected {opportunities}:2: row has 3 fields, header has 8" in err
    hint = "unknown stage 'Mystery'; add it to [stage_map] in the config"  # brackets survive the console
    assert f"rejected {opportunities}:3, column stage: {hint}" in err


def test_an_unknown_owner_or_currency_warns_and_imports(tmp_path, capsys, config):
    folder = csv_dir(
        tmp_path,
        "crm",
        accounts=ACCOUNTS,
        opportunities=OPPORTUNITIES + "O1,A1,Deal,Demo,10,XYZ,ghost@northwind.example,\n",
    )
    code, _, err = crm_import(capsys, config, folder)
    assert code == 0
    assert count(config, m.Opportunity) == 1
    opportunities = folder / "opportunities.csv"
    owner = "unknown rep 'ghost@northwind.example' (not in reps.csv nor in the database); imported anyway"
    currency = "'XYZ' is not an ISO 4217 currency code; imported as written"
    assert err == [
        f"warning: {opportunities}:2, column owner_rep: {owner}",
        f"warning: {opportunities}:2, column currency: {currency}",
    ]
