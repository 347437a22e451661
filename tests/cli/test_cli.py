"""The command line, in process through main(argv), against real files and a real SQLite database."""

from __future__ import annotations

import pytest

from mailsync.cli import main
from tests.conftest import DEMO, write_config

COMMANDS = ("import", "digest", "verify", "status", "quarantine", "db", "crm", "config")


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_every_command_with_a_description(capsys):
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
