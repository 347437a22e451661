"""The command line, in process through main(argv), against real files and a real SQLite database."""

from __future__ import annotations

import shutil

import pytest

from mailsync.cli import main
from tests.conftest import DEMO, write_config

COMMANDS = ("import", "digest", "verify", "status", "quarantine", "db", "crm", "config")


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_command_with_a_description(capsys, monkeypatch):
    # typer lays help out to the terminal's width (COLUMNS off a terminal); our own output never wraps.
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in COMMANDS:
        line = next((row for row in out.splitlines() if row.strip("│ ").startswith(command + " ")), None)
        assert line is not None, f"{command} missing from --help"
        assert len(line.strip("│ ").split()) > 2, f"{command} has no description"
    assert "MAILSYNC_CONFIG" in out


def test_config_check_names_the_key_and_the_fix(tmp_path, capsys):
    config = write_config(
        tmp_path, '\n[[mailboxes]]\nname = "x"\nowner = "x@n.example"\nhost = "h"\npassword = "hunter2"\n'
    )
    code, _, err = run(capsys, "--config", str(config), "config", "check")
    assert code == 2
    assert "mailboxes[1].password" in err
    assert "fix:" in err
    assert "hunter2" not in err


def test_config_check_reports_a_missing_secret(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CLI_TEST_PW", raising=False)
    config = write_config(
        tmp_path,
        '\n[[mailboxes]]\nname = "x"\nowner = "x@n.example"\nhost = "h"\npassword_env = "CLI_TEST_PW"\n',
    )
    code, _, err = run(capsys, "--config", str(config), "config", "check")
    assert code == 2
    assert "CLI_TEST_PW is not set" in err
    monkeypatch.setenv("CLI_TEST_PW", "s3cret")
    code, out, _ = run(capsys, "--config", str(config), "config", "check")
    assert code == 0
    assert "config ok" in out
    assert "s3cret" not in out


def test_commands_refuse_an_unmigrated_database_with_the_fix(tmp_path, capsys):
    config = write_config(tmp_path)
    code, _, err = run(capsys, "--config", str(config), "import", str(DEMO / "Maildir"), "--mailbox", "dana")
    assert code == 1
    assert "mailsync db upgrade" in err


def test_demo_flow_end_to_end(tmp_path, capsys):
    config = str(write_config(tmp_path))
    assert run(capsys, "-c", config, "db", "upgrade")[0] == 0
    code, out, _ = run(capsys, "-c", config, "crm", "import", str(DEMO / "crm"))
    assert code == 0
    assert "opportunities.csv" in out
    code, out, _ = run(capsys, "-c", config, "import", str(DEMO / "Maildir"), "--mailbox", "dana")
    assert code == 0
    assert "50" in out
    code, out, _ = run(capsys, "-c", config, "digest", "--preview", str(tmp_path / "digests"))
    assert code == 0
    html = (tmp_path / "digests" / "digest-dana.html").read_text()
    text = (tmp_path / "digests" / "digest-dana.txt").read_text()
    assert "Granite" in html
    assert "New opportunities" in text
    assert "<script" not in html
    code, out, _ = run(capsys, "-c", config, "quarantine")
    assert code == 0
    assert "no header block" in out
    code, out, _ = run(capsys, "-c", config, "verify")
    assert code == 0
    assert "52" in out
    code, out, _ = run(capsys, "-c", config, "status")
    assert code == 0
    assert "dana" in out


def test_crm_import_reports_bad_rows_and_keeps_good_ones(tmp_path, capsys):
    config = str(write_config(tmp_path))
    run(capsys, "-c", config, "db", "upgrade")
    run(capsys, "-c", config, "crm", "import", str(DEMO / "crm"))
    code, _, err = run(capsys, "-c", config, "crm", "import", str(DEMO / "crm" / "bad" / "contacts.csv"))
    assert code == 1
    assert "contacts.csv:3, column email" in err
    assert "contacts.csv:5, column id" in err
    assert "good rows were imported" in err


@pytest.mark.parametrize("columns", ["40", "300"])
def test_errors_stay_on_one_line_at_any_path_length_and_width(tmp_path, capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    home = tmp_path / ("a-long-checkout-path-" * 8)
    home.mkdir()
    monkeypatch.chdir(home)
    csv = home / "contacts.csv"
    shutil.copy(DEMO / "crm" / "bad" / "contacts.csv", csv)
    assert len(str(csv)) >= 150
    config = str(write_config(home))
    run(capsys, "-c", config, "db", "upgrade")
    run(capsys, "-c", config, "crm", "import", str(DEMO / "crm"))
    code, out, err = run(capsys, "-c", config, "crm", "import", str(csv))
    assert code == 1
    lines = err.splitlines()
    assert f"rejected {csv}:3, column email: not an email address: 'maya.fischer.pinecrest.example'" in lines
    assert f"rejected {csv}:5, column id: required value is empty" in lines
    assert "2 row(s) rejected; the good rows were imported. Fix them and re-run." in lines
    assert "contacts.csv │" in out  # the table is not squeezed to COLUMNS


MARKUP = ("[red]x[/red]", "[link=javascript:alert(1)]y[/link]", "[bold]z", ":warning:")


def test_outside_text_is_printed_literally_not_as_markup(tmp_path, capsys):
    config = str(write_config(tmp_path))
    run(capsys, "-c", config, "db", "upgrade")
    run(capsys, "-c", config, "crm", "import", str(DEMO / "crm"))
    contacts = tmp_path / "contacts.csv"
    contacts.write_text(
        f"id,account_id,name,email,owner_rep,{MARKUP[2]}\n"
        f"CON-201,{MARKUP[1]},Eve,eve@acme.example,dana@northwind.example,\n"
        "CON-202,ACC-001,Eve,eve@acme.example,dana@northwind.example,\n",
        encoding="utf-8",
    )
    opportunities = tmp_path / "opportunities.csv"
    opportunities.write_text(
        "id,account_id,name,stage,amount,currency,owner_rep,created_at\n"
        f"OPP-201,ACC-001,Deal,{MARKUP[0]},1.00,USD,dana@northwind.example,2026-01-01\n",
        encoding="utf-8",
    )
    code, _, err = run(capsys, "-c", config, "crm", "import", str(contacts), str(opportunities))
    assert code == 1
    assert f"ignoring extra column(s) {MARKUP[2]}" in err
    assert f"unknown account '{MARKUP[1]}'" in err
    assert f"unknown stage '{MARKUP[0]}'" in err
    code, _, err = run(capsys, "-c", config, "crm", "import", str(tmp_path / MARKUP[3]))
    assert code == 1
    assert f"{tmp_path / MARKUP[3]} does not exist" in err


def test_a_path_with_markup_is_printed_literally(tmp_path, capsys):
    config = str(write_config(tmp_path))
    run(capsys, "-c", config, "db", "upgrade")
    folder = tmp_path / "[link=javascript:alert(1)]y [red]x"
    shutil.copytree(DEMO / "Maildir" / ".Sent", folder)
    code, out, err = run(capsys, "-c", config, "import", str(folder), "--mailbox", "dana")
    assert code == 0
    assert f"import {folder} -> mailbox dana" in out
    assert "importing [link=javascript:alert(1)]y [red]x" in err


def test_verify_fails_on_a_corrupted_blob(tmp_path, capsys):
    config = str(write_config(tmp_path))
    run(capsys, "-c", config, "db", "upgrade")
    run(capsys, "-c", config, "import", str(DEMO / "Maildir" / ".Sent"), "--mailbox", "dana")
    blob = next((tmp_path / "var" / "archive" / "blobs").rglob("*.zst"))
    blob.write_bytes(blob.read_bytes()[:-3] + b"xyz")
    code, _, err = run(capsys, "-c", config, "verify")
    assert code == 1
    assert f"corrupt: {blob}" in err


@pytest.mark.parametrize("argv", [["import"], ["digest", "--rep", "x@y"], ["nonsense"]])
def test_usage_errors_exit_non_zero(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err
