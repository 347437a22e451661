"""`mailsync export` as an admin meets it: in process through main(argv), real files, real SQLite; the
exports themselves on PostgreSQL too."""

from __future__ import annotations

import json

import pytest

from mailsync.cli import main
from mailsync.cli.app import err as stderr_console
from tests.conftest import DEMO, write_config


@pytest.fixture
def config(tmp_path, capsys, db_url):
    path = write_config(tmp_path, database_url=db_url)
    assert main(["-c", str(path), "db", "upgrade"]) == 0
    assert main(["-c", str(path), "crm", "import", str(DEMO / "crm")]) == 0
    capsys.readouterr()
    return path


def run(capsys, config, *argv):
    """Exit code, stdout, and stderr lines without the JSON log events that share it."""
    code = main(["-c", str(config), *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, [e for e in captured.err.splitlines() if not e.startswith("{")]


@pytest.mark.both_dbs
def test_json_summary_names_every_file_and_its_rows(tmp_path, capsys, config):
    code, out, err = run(capsys, config, "export", "--out", tmp_path / "x", "--format", "both", "--json")
    assert code == 0, err
    summary = json.loads(out)
    files = {(f["table"], f["format"]): f["rows"] for f in summary["files"]}
    assert files[("accounts", "csv")] == files[("accounts", "jsonl")] == 7
    assert files[("reps", "jsonl")] == 3
    assert files[("decisions", "csv")] == 0
    assert len(files) == 20  # 10 tables, 2 formats
    assert all((tmp_path / "x" / f"{table}.{fmt}").is_file() for table, fmt in files)
    assert err == []  # no progress bar off a terminal


@pytest.mark.both_dbs
def test_the_table_summary_and_importing_the_export_back(tmp_path, capsys, config):
    code, out, _ = run(capsys, config, "export", "--out", tmp_path / "x", "--only", "accounts, reps")
    assert code == 0
    assert "accounts.csv" in out
    assert "new_accounts.csv" in out
    assert "contacts.csv" not in out
    code, out, _ = run(capsys, config, "crm", "import", tmp_path / "x")
    assert code == 0
    assert out.splitlines()[-1] == "nothing changed: these rows were imported before"


@pytest.mark.both_dbs
def test_progress_is_shown_on_a_terminal(tmp_path, capsys, config, monkeypatch):
    monkeypatch.setattr(stderr_console, "_force_terminal", True)
    monkeypatch.setattr(stderr_console, "_width", 100)  # whatever the terminal running the tests is
    code, _, err = run(capsys, config, "export", "--out", tmp_path / "x", "--only", "contacts")
    assert code == 0
    shown = "\n".join(err)
    assert "new_contacts" in shown
    assert "13/13" in shown  # the demo CRM's contacts, counted as they were written


@pytest.mark.parametrize(
    ("argv", "message", "fix"),
    [
        (
            ["--only", "accounts,deals"],
            "error: --only 'accounts,deals': no table 'deals'",
            "fix: name some of",
        ),
        (["--only", ","], "error: --only ',': names no table", "fix: name some of"),
        (["--format", "xlsx"], "error: --format 'xlsx' is not csv, jsonl or both", "fix: write --format"),
    ],
)
def test_a_bad_option_is_one_line_with_its_fix(tmp_path, capsys, config, argv, message, fix):
    code, _, err = run(capsys, config, "export", "--out", tmp_path / "x", *argv)
    assert code == 2
    assert err[0] == message
    assert err[1].startswith(fix)
    assert not (tmp_path / "x").exists()


def test_an_out_dir_that_cannot_be_written_is_one_line_with_its_fix(tmp_path, capsys, config):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, _, err = run(capsys, config, "export", "--out", blocker / "export")
    assert code == 2
    assert err == [
        f"error: --out {blocker / 'export'}: cannot write there (Not a directory)",
        "fix: pass a directory you may write to (it is created if missing): --out DIR",
    ]


def test_out_is_required(capsys, config):
    code, _, err = run(capsys, config, "export")
    assert code == 2
    assert "--out" in "\n".join(err)
