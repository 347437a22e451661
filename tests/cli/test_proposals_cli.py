"""`mailsync proposals`, `approve` and `reject` as an admin meets them: main(argv) on the imported demo."""

from __future__ import annotations

import getpass
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
NEW_OPP = "new_opportunity:20260526081437.6AB9F1@mail.spedition-bergmann.example"
REDLINE_STAGE = "stage:14E11D36-6243-5BEE-9C12-46A35F7A7F85@redlinecouriers.example:"  # + the deal's id


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """The demo, imported once through the CLI; each test gets a copy."""
    folder = tmp_path_factory.mktemp("demo")
    config = write_config(folder)
    for argv in (
        ["db", "upgrade"],
        ["crm", "import", str(DEMO / "crm")],
        ["import", str(DEMO / "Maildir"), "-m", "dana"],
    ):
        assert main(["-c", str(config), *argv]) == 0
    return folder


@pytest.fixture
def config(imported, tmp_path, capsys):
    shutil.copytree(imported, tmp_path / "demo")
    capsys.readouterr()
    return tmp_path / "demo" / "mailsync.toml"


def run(capsys, config, *argv):
    """Exit code, stdout, and stderr without JSON log lines."""
    code = main(["-c", str(config), *argv])
    captured = capsys.readouterr()
    return code, captured.out, "\n".join(e for e in captured.err.splitlines() if not e.startswith("{"))


def listed(capsys, config, *argv):
    code, out, _ = run(capsys, config, "proposals", "--json", *argv)
    assert code == 0
    return json.loads(out)


def rows(config, model, *where):
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as s:
            return list(s.scalars(select(model).where(*where)))
    finally:
        repo.dispose()


def test_proposals_lists_what_each_asks_and_whose_it_is(capsys, config):
    everything = listed(capsys, config)
    assert len(everything) == 15
    new_opp = next(p for p in everything if p["key"] == NEW_OPP)
    assert new_opp == {
        "id": new_opp["id"],
        "key": NEW_OPP,
        "kind": "new_opportunity",
        "asks": "Create the opportunity Spedition Bergmann GmbH – Anfrage: Angebot für 10 FleetSense-Geräte (12500.00 EUR)?",
        "confidence": 0.9,
        "rep": DANA,
    }
    sams = listed(capsys, config, "--rep", "sam")  # the part before the @ is enough when it is unique
    assert {p["rep"] for p in sams} == {SAM}
    assert len(sams) == 3
    code, out, _ = run(capsys, config, "proposals", "--rep", SAM)
    assert code == 0
    assert all(p["id"] in out for p in sams)
    assert "3 open; `mailsync approve ID` or `mailsync reject ID` decides one." in out


def test_approve_by_short_id_records_a_cli_decision_and_applies_it(capsys, config):
    short = next(p["id"] for p in listed(capsys, config) if p["key"] == NEW_OPP)
    code, out, err = run(capsys, config, "approve", short, "--json")
    assert (code, err) == (0, "")
    [outcome] = json.loads(out)
    assert outcome["ok"]
    assert outcome["key"] == NEW_OPP
    assert outcome["summary"].startswith("Created the opportunity Spedition Bergmann GmbH")
    [decision] = rows(config, m.Decision)
    assert (decision.verdict, decision.how, decision.who) == ("approve", "cli", f"cli:{getpass.getuser()}")
    assert [e.payload["key"] for e in EventLog(load_settings(config).events_dir) if e.kind == "decision"] == [
        NEW_OPP
    ]
    assert (
        rows(config, m.Opportunity, m.Opportunity.name.startswith("Spedition Bergmann"))[0].currency == "EUR"
    )
    assert NEW_OPP not in {p["key"] for p in listed(capsys, config)}


def test_approve_with_edits_as_a_rep_and_in_words(capsys, config):
    code, out, err = run(
        capsys,
        config,
        "approve",
        NEW_OPP,
        "--edit",
        "amount=14000",
        "--edit",
        "stage=Negotiation",
        "--as",
        DANA,
    )
    assert (code, err) == (0, "")
    assert out.startswith("approved ")
    assert "for 14000.00 EUR, stage negotiation" in out
    [decision] = rows(config, m.Decision)
    assert (decision.who, decision.edits) == (DANA, {"amount": "14000.00", "stage": "negotiation"})


def test_reject_then_approve_again_is_refused_as_decided(capsys, config):
    key = next(p["key"] for p in listed(capsys, config) if p["key"].startswith(REDLINE_STAGE))
    code, out, _ = run(capsys, config, "reject", key, "--json")
    assert code == 0
    assert (
        json.loads(out)[0]["summary"]
        == "Rejected: move Redline - FleetSense vans (Oakland + Boston) from discovery to demo"
    )
    code, out, _ = run(capsys, config, "approve", key, "--json")
    assert code == 1
    [outcome] = json.loads(out)
    assert (outcome["ok"], outcome["reason"]) == (False, "decided")
    assert outcome["error"].startswith(f"proposal {key} was rejected already by cli:")
    assert rows(config, m.Suggestion, m.Suggestion.key == key)[0].status == "rejected"


def test_dry_run_changes_nothing(capsys, config):
    code, out, _ = run(capsys, config, "approve", NEW_OPP, "--dry-run")
    assert code == 0
    assert out.startswith("would approve ")
    assert out.splitlines()[-1] == "dry run: nothing written"
    assert rows(config, m.Decision) == []
    assert list(EventLog(load_settings(config).events_dir)) != []  # the CRM import's event...
    assert all(e.kind != "decision" for e in EventLog(load_settings(config).events_dir))  # ...and no decision


@pytest.mark.parametrize(
    ("argv", "error", "fix"),
    [
        (["approve", "nope"], "error: no proposal nope", "fix: `mailsync proposals` lists the open proposals and their keys"),
        (["approve", NEW_OPP, "--edit", "amount=lots"], "error: bad amount 'lots': not a plain number",
         "fix: write a plain number without separators: amount=50000 or amount=50000.00"),
        (["approve", NEW_OPP, "--edit", "colour=red"], "error: cannot edit 'colour'",
         "fix: the fields are amount, currency, stage, name, close_date, opportunity, e.g. amount=50000 stage=proposal"),
        (["approve", NEW_OPP, "link", "--edit", "amount=5"], "error: --edit changes one proposal, and this names several",
         "fix: approve the one to edit on its own: mailsync approve ID --edit amount=50000"),
        (["approve", NEW_OPP, "--as", "nobody@northwind.example"], "error: --as nobody@northwind.example: no such rep in the CRM",
         "fix: give a rep's email as reps.csv has it (or the part before the @)"),
        (["reject", "new_"], "error: 'new_' matches 4 proposals (new_contact:nadia.petrova@acme.example, ",
         "fix: give more of the key, or the short form `mailsync proposals` shows"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_a_fix(capsys, config, argv, error, fix):
    code, _, err = run(capsys, config, *argv)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(error)
    assert lines[1] == fix
    assert rows(config, m.Decision) == []
