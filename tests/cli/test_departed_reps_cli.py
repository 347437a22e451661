"""`mailsync rep deactivate|activate` and `mailsync reassign` as an admin meets them: main(argv), real
SQLite and PostgreSQL, the demo's CRM files (no mail, so no matcher to load)."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.eventlog import EventLog
from storage.repo import Repo
from tests.conftest import DEMO, write_config

DANA, SAM = "dana@northwind.example", "sam@northwind.example"

pytestmark = pytest.mark.both_dbs


@pytest.fixture
def config(tmp_path, capsys, db_url):
    path = write_config(tmp_path, database_url=db_url)
    crm = tmp_path / "crm"
    shutil.copytree(DEMO / "crm", crm, ignore=shutil.ignore_patterns("bad"))
    # A CRM value is outside text too: an account name with a terminal escape and a line break.
    with (crm / "accounts.csv").open("a", encoding="utf-8") as accounts:
        accounts.write('ACC-666,"Evil\x1b[31m Corp\nSecond line",evil.example\n')
    with (crm / "opportunities.csv").open("a", encoding="utf-8") as opportunities:
        opportunities.write(f"OPP-666,ACC-666,Evil deal,Negotiation,100,USD,{DANA},2026-01-01\n")
    for argv in (["db", "upgrade"], ["crm", "import", str(crm)]):
        assert main(["-c", str(path), *argv]) == 0
    capsys.readouterr()
    return path


def run(capsys, config, *argv):
    """Exit code, stdout, and stderr without the log lines that share it."""
    code = main(["-c", str(config), *argv])
    captured = capsys.readouterr()
    return code, captured.out, "\n".join(e for e in captured.err.splitlines() if not e.startswith("{"))


def kinds(config):
    return [e.kind for e in EventLog(load_settings(config).events_dir)]


def active(config):
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            return dict(session.execute(select(m.Rep.email, m.Rep.active)).all())
    finally:
        repo.dispose()


def test_the_commands_are_listed(capsys, config):
    code, out, _ = run(capsys, config, "rep", "--help")
    assert code == 0
    assert {"deactivate", "activate"} <= {line.strip("│ ").split(" ")[0] for line in out.splitlines()}
    assert "reassign" in run(capsys, config, "--help")[1]


def test_deactivate_dry_run_then_for_real_then_again_by_short_name(capsys, config):
    code, out, _ = run(capsys, config, "rep", "deactivate", DANA, "--dry-run")
    assert (code, out.splitlines()) == (0, [f"{DANA}: would be marked inactive", "dry run: nothing written"])
    assert active(config)[DANA] is True
    assert "rep_deactivated" not in kinds(config)
    code, out, _ = run(capsys, config, "rep", "deactivate", "dana")  # the part before the @ will do
    assert (code, out.splitlines()) == (0, [f"{DANA}: marked inactive"])
    assert run(capsys, config, "rep", "deactivate", DANA)[1] == f"{DANA}: already inactive\n"
    assert kinds(config).count("rep_deactivated") == 1
    assert active(config) == {DANA: False, SAM: True, "mia@northwind.example": True}
    code, out, _ = run(capsys, config, "rep", "activate", DANA, "--json")
    assert json.loads(out) == {"rep": DANA, "active": True, "changed": True, "dry_run": False,
                               "mailboxes": [], "open_proposals": 0}  # fmt: skip


def test_an_unknown_rep_is_an_error_with_its_fix(capsys, config):
    code, out, err = run(capsys, config, "rep", "deactivate", "nobody@northwind.example")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: no rep nobody@northwind.example in the CRM",
        "fix: check the address, or add the rep to reps.csv and run `mailsync crm import`",
    ]


def test_reassign_dry_run_writes_nothing_and_crm_text_is_shown_escaped(capsys, config):
    code, out, _ = run(capsys, config, "reassign", "--from", DANA, "--to", SAM, "--account", "evil.example",
                       "--dry-run")  # fmt: skip
    assert code == 0
    assert "\x1b" not in out
    assert f"reassign {DANA} -> {SAM} (accounts: Evil[31m Corp Second line)" in out.splitlines()
    assert "dry run: nothing written" in out
    assert "reassigned" not in kinds(config)
    code, out, _ = run(
        capsys, config, "reassign", "--from", DANA, "--to", SAM, "--account", "ACC-666", "--json"
    )
    assert json.loads(out)["moved"] == {"opportunities": 1, "contacts": 0, "proposals": 0}
    assert kinds(config).count("reassigned") == 1
