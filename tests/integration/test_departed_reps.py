"""A rep leaves: `rep deactivate`, their exported mailbox imported under their name with its true dates,
`reassign` to a successor whose digest then asks about the inherited deal, and the rule between the
CLI and reps.csv's `active` column. Through main(argv), on SQLite and on PostgreSQL."""

from __future__ import annotations

import gc
import json
import textwrap
import warnings
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from config.settings import load_settings
from mailsync.admin.crm_import import KIND as CRM_IMPORT
from mailsync.admin.reassign import KIND as REASSIGNED
from mailsync.admin.reassign import apply_reassign_event
from mailsync.cli import main
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import models as m
from storage.archive import Archive
from storage.crm import apply_crm_import
from storage.eventlog import EventLog
from storage.repo import Repo
from storage.reps import KINDS as REP_KINDS
from storage.reps import apply_rep_event
from tests.support.config import imap_config
from tests.support.mail import plain_mail

pytestmark = pytest.mark.slow  # several CLI commands, one of them loads the matcher

DANA, SAM, MIA = "dana@northwind.example", "sam@northwind.example", "mia@northwind.example"
TAKEOUT = "Takeout/Mail/All mail Including Spam and Trash.mbox"

CRM = {
    "reps.csv": f"""\
        email,name,team,lead
        {DANA},Dana Whitfield,East,{MIA}
        {SAM},Sam Okafor,East,{MIA}
        {MIA},Mia Laurent,Management,
        """,
    "accounts.csv": """\
        id,name,domain
        ACC-1,Acme Logistics,acme.example
        ACC-2,Harbor Foods,harbor.example
        """,
    "contacts.csv": f"""\
        id,account_id,name,email,owner_rep
        CON-1,ACC-1,Rachel Kim,rachel@acme.example,{DANA}
        CON-2,ACC-2,Greg Holloway,greg@harbor.example,{DANA}
        CON-3,ACC-2,Ines Roth,ines@harbor.example,{MIA}
        """,
    "opportunities.csv": f"""\
        id,account_id,name,stage,amount,currency,owner_rep,created_at
        OPP-1,ACC-1,Acme FleetSense rollout,Negotiation,52000,USD,{DANA},2024-01-10
        OPP-2,ACC-2,Harbor reefer monitoring,Negotiation,30000,USD,{DANA},2024-01-10
        OPP-3,ACC-2,Harbor pilot,Closed Won,5000,USD,{DANA},2023-06-01
        """,
}

# Google Takeout's mbox: a `From <thread id>@xxx <date>` separator, X-GM-THRID and X-Gmail-Labels headers,
# CRLF line endings; Inbox and Sent mail in one file. Dated 2024, long before the import.
_MESSAGES = [
    ("Tue Mar 05 10:20:30 +0000 2024", "Inbox,Important,Opened", "Rachel Kim <rachel@acme.example>",
     f"Dana Whitfield <{DANA}>", "FleetSense rollout: signed order form", "Tue, 05 Mar 2024 10:20:30 +0000",
     "<a1@acme.example>", "", ("Hi Dana,\n\nThe FleetSense rollout is approved. We accept the proposal for 40 "
     "vans at 52,000 USD and will sign the contract this week.\n\nRachel")),
    ("Tue Mar 05 15:00:00 +0000 2024", "Sent", f"Dana Whitfield <{DANA}>", "Rachel Kim <rachel@acme.example>",
     "Re: FleetSense rollout: signed order form", "Tue, 05 Mar 2024 15:00:00 +0000", "<d1@northwind.example>",
     "<a1@acme.example>", "Great news Rachel, I will send the contract today.\n\nDana"),
    ("Mon Feb 12 09:00:00 +0000 2024", "Inbox,Opened", "Li Wei <li@prospect.example>", f"Dana Whitfield <{DANA}>",
     "Quote for 25 trucks", "Mon, 12 Feb 2024 09:00:00 +0000", "<p1@prospect.example>", "",
     ("Hello Dana,\n\nCould you send us a quote for telematics on our 25 trucks? Our budget is about "
      "30,000 EUR.\n\nBest,\nLi Wei\nProspect Freight")),
]  # fmt: skip


def utc(*fields):
    """A time as the database keeps it: naive UTC."""
    return datetime(*fields, tzinfo=UTC).replace(tzinfo=None)


def takeout_mbox(path):
    parts = []
    for n, (separator, labels, sender, to, subject, date, mid, parent, body) in enumerate(_MESSAGES):
        headers = [f"From 179200000000000000{n}@xxx {separator}", f"X-GM-THRID: 179200000000000000{n}",
                   f"X-Gmail-Labels: {labels}", f"Delivered-To: {DANA}", f"From: {sender}", f"To: {to}",
                   f"Subject: {subject}", f"Date: {date}", f"Message-ID: {mid}"]  # fmt: skip
        if parent:
            headers += [f"In-Reply-To: {parent}", f"References: {parent}"]
        headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=UTF-8", ""]
        parts.append("\r\n".join(headers) + "\r\n" + body.replace("\n", "\r\n") + "\r\n")
    path.parent.mkdir(parents=True)
    path.write_bytes("\r\n".join(parts).encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request, tmp_path, monkeypatch, capsys):
    """A team without internal_domains (so only reps.csv says Dana's address is ours), Dana's exported
    mailbox as an import-only mailbox, and the CRM imported; on the database the param names."""
    if request.param == "postgresql":
        monkeypatch.setenv("MAILSYNC_DATABASE_URL", request.getfixturevalue("pg_fresh_url"))
    path = tmp_path / "mailsync.toml"
    path.write_text(
        'database_url = "sqlite:///var/mailsync.db"\n\n'
        f'[[mailboxes]]\nname = "dana-archive"\nowner = "{DANA}"\n\n'
        f'[[mailboxes]]\nname = "sam"\nowner = "{SAM}"\n',
        encoding="utf-8",
    )
    crm = tmp_path / "crm"
    crm.mkdir()
    for name, text in CRM.items():
        (crm / name).write_text(textwrap.dedent(text), encoding="utf-8")
    assert run(capsys, path, "db", "upgrade")[0] == 0
    assert run(capsys, path, "crm", "import", str(crm))[0] == 0
    return path


def run(capsys, config, *argv):
    """`mailsync -c config argv...` in-process: exit code and stdout (stderr in `run.err`). Engines the
    CLI leaves to process exit are collected now, so psycopg does not warn in whatever runs next."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*deleted while still open", ResourceWarning)
        code = main(["-c", str(config), *argv])
        gc.collect()
    captured = capsys.readouterr()
    run.err = captured.err
    return code, captured.out


def as_json(capsys, config, *argv):
    code, out = run(capsys, config, *argv, "--json")
    assert code == 0, out
    return json.loads(out)


def query(config, statement):
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            return session.execute(statement).all()
    finally:
        repo.dispose()


def owners(config, model, key):
    return dict(query(config, select(key, model.owner_rep).order_by(key)))


def events(config, kind):
    return [e for e in EventLog(load_settings(config).events_dir) if e.kind == kind]


def test_a_departed_reps_takeout_export_is_theirs_with_its_true_dates_and_goes_to_the_successor(
    config, tmp_path, capsys
):
    assert as_json(capsys, config, "rep", "deactivate", "dana")["changed"] is True
    takeout_mbox(tmp_path / TAKEOUT)
    code, out = run(capsys, config, "import", str(tmp_path / "Takeout"), "--mailbox", "dana-archive")
    assert code == 0, out

    # Attributed to Dana, dated by the mail, not by the import.
    assert query(config, select(m.Mailbox.name, m.Mailbox.owner)) == [("dana-archive", DANA)]
    sent = dict(query(config, select(m.Message.message_id, m.Message.sent_at)))
    assert sent == {
        "a1@acme.example": utc(2024, 3, 5, 10, 20, 30),
        "d1@northwind.example": utc(2024, 3, 5, 15, 0),
        "p1@prospect.example": utc(2024, 2, 12, 9, 0),
    }
    assert sorted(query(config, select(m.Thread.first_at))) == [
        (utc(2024, 2, 12, 9, 0),),
        (utc(2024, 3, 5, 10, 20, 30),),
    ]
    proposals = {kind: (key, rep) for kind, key, rep in query(
        config, select(m.Suggestion.kind, m.Suggestion.key, m.Suggestion.owner_rep))}  # fmt: skip
    assert set(proposals) == {"new_opportunity", "link_thread"}  # Dana (inactive) is no "new contact"
    assert {rep for _, rep in proposals.values()} == {DANA}

    # A decision on Dana's proposal before the hand-over: the deal begins at the first email.
    assert run(capsys, config, "approve", proposals["new_opportunity"][0])[0] == 0
    [(name, first_seen, owner)] = query(
        config,
        select(m.Opportunity.name, m.Opportunity.first_seen_at, m.Opportunity.owner_rep).where(
            m.Opportunity.external_id.is_(None)
        ),
    )
    assert (first_seen, owner) == (utc(2024, 2, 12, 9, 0), DANA)

    before = run(capsys, config, "digest", "--preview", str(tmp_path / "before"))[1]
    assert DANA not in before  # an inactive rep gets no digest
    assert "Acme FleetSense rollout" not in (tmp_path / "before" / "digest-sam.html").read_text()

    planned = as_json(capsys, config, "reassign", "--from", DANA, "--to", "sam", "--dry-run")
    expected = {"opportunities": 3, "contacts": 2, "proposals": 1}  # OPP-1, OPP-2, the new one; CON-1/2
    assert (planned["would_move"], planned["closed_kept"], planned["changed"]) == (expected, 1, False)
    assert owners(config, m.Opportunity, m.Opportunity.id)[1] == DANA
    assert events(config, REASSIGNED) == []

    done = as_json(capsys, config, "reassign", "--from", DANA, "--to", "sam")
    assert (done["moved"], done["changed"]) == (expected, True)
    again = as_json(capsys, config, "reassign", "--from", DANA, "--to", SAM)
    assert (again["moved"], again["changed"]) == (dict.fromkeys(expected, 0), False)
    code, out = run(capsys, config, "reassign", "--from", DANA, "--to", SAM)
    assert code == 0
    assert "nothing to move" in out
    assert len(events(config, REASSIGNED)) == 1

    opportunities = dict(query(config, select(m.Opportunity.name, m.Opportunity.owner_rep)))
    assert opportunities == {"Acme FleetSense rollout": SAM, "Harbor reefer monitoring": SAM, name: SAM,
                             "Harbor pilot": DANA}  # fmt: skip  # a won deal is Dana's record
    assert owners(config, m.Contact, m.Contact.external_id) == {"CON-1": SAM, "CON-2": SAM, "CON-3": MIA}
    by_kind = dict(query(config, select(m.Suggestion.kind, m.Suggestion.owner_rep)))
    assert by_kind == {"new_opportunity": DANA, "link_thread": SAM}  # the approved one stays Dana's
    assert query(config, select(m.Decision.verdict, m.Decision.how)) == [("approve", "cli")]
    assert {r for (r,) in query(config, select(m.Mailbox.owner))} == {DANA}  # her mail stays hers

    # The successor's next digest asks about the inherited deal.
    code, out = run(capsys, config, "digest", "--preview", str(tmp_path / "after"))
    assert code == 0
    assert f"{SAM}: 1 proposal(s)" in out
    digest = (tmp_path / "after" / "digest-sam.html").read_text(encoding="utf-8")
    assert "Acme FleetSense rollout" in digest
    assert "FleetSense rollout: signed order form" in (tmp_path / "after" / "digest-sam.txt").read_text()


def test_the_last_explicit_statement_wins_between_the_cli_and_reps_csv(config, tmp_path, capsys):
    def crm_import(name, text):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "reps.csv").write_text(textwrap.dedent(text), encoding="utf-8")
        code, out = run(capsys, config, "crm", "import", str(folder))
        assert code == 0, out
        return out

    def active():
        return dict(query(config, select(m.Rep.email, m.Rep.active)))[DANA]

    crm_import("explicit", f"email,name,active\n{DANA},Dana,true\n")
    assert as_json(capsys, config, "rep", "deactivate", DANA, "--dry-run") | {"dry_run": None} == {
        "rep": DANA, "active": False, "changed": True, "dry_run": None, "mailboxes": [], "open_proposals": 0
    }  # fmt: skip
    assert active() is True
    assert run(capsys, config, "rep", "deactivate", DANA)[0] == 0
    assert active() is False
    crm_import("no-column", f"email,name,team\n{DANA},Dana W.,East\n")
    assert active() is False  # an older reps.csv says nothing about `active`
    crm_import("empty-cell", f"email,name,active\n{DANA},Dana Whitfield,\n")
    assert active() is False  # nor does an empty cell
    assert "nothing changed" in crm_import("explicit-again", f"email,name,active\n{DANA},Dana,true\n")
    assert active() is False  # the very same rows again are no new statement
    crm_import("newer", f"email,name,team,active\n{DANA},Dana,West,yes\n")
    assert active() is True  # a newer explicit `active=true` is
    crm_import("left", f"email,name,team,active\n{DANA},Dana,West,false\n")
    assert active() is False
    assert as_json(capsys, config, "rep", "deactivate", DANA)["changed"] is False
    assert as_json(capsys, config, "rep", "activate", DANA)["changed"] is True
    assert active() is True

    # The event log alone gives the same answer: replayed in order into an empty database.
    log = list(EventLog(load_settings(config).events_dir))
    assert [e.kind for e in log if e.kind in REP_KINDS] == ["rep_deactivated", "rep_activated"]
    fresh = Repo(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    fresh.upgrade()
    try:
        for event in log:
            with fresh.session() as session:
                if event.kind == CRM_IMPORT:
                    apply_crm_import(session, event.payload)
                elif event.kind in REP_KINDS:
                    apply_rep_event(session, event)
                    apply_rep_event(session, event)  # a second time changes nothing
                elif event.kind == REASSIGNED:
                    apply_reassign_event(session, event)
            with fresh.session() as session:
                if event.kind == "rep_deactivated":
                    assert session.scalar(select(m.Rep.active).where(m.Rep.email == DANA)) is False
        with fresh.session() as session:
            rebuilt = dict(session.execute(select(m.Rep.email, m.Rep.active)).all())
    finally:
        fresh.dispose()
    assert rebuilt == dict(query(config, select(m.Rep.email, m.Rep.active)))


def test_reassign_limited_to_an_account_and_its_refusals(config, capsys):
    done = as_json(capsys, config, "reassign", "--from", DANA, "--to", SAM, "--account", "harbor.example")
    assert done["accounts"] == ["Harbor Foods"]
    assert (done["moved"], done["closed_kept"]) == ({"opportunities": 1, "contacts": 1, "proposals": 0}, 1)
    assert owners(config, m.Opportunity, m.Opportunity.external_id) == {
        "OPP-1": DANA,
        "OPP-2": SAM,
        "OPP-3": DANA,
    }
    assert owners(config, m.Contact, m.Contact.external_id) == {"CON-1": DANA, "CON-2": SAM, "CON-3": MIA}
    [event] = events(config, REASSIGNED)
    assert event.payload["opportunities"] == [
        {"id": event.payload["opportunities"][0]["id"], "external_id": "OPP-2"}
    ]
    # Projected again (a rebuild replays the log): what it names moves, once, and nothing else does.
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            assert apply_reassign_event(session, event) == dict.fromkeys(
                ["opportunities", "contacts", "proposals"], 0
            )
            session.execute(update(m.Opportunity).values(owner_rep=DANA))  # as before it, in a fresh database
        with repo.session() as session:
            moved = apply_reassign_event(session, replace(event, id="replayed"))
        with repo.session() as session:
            again = apply_reassign_event(session, replace(event, id="replayed"))
    finally:
        repo.dispose()
    assert (moved["opportunities"], again["opportunities"]) == (1, 0)
    assert owners(config, m.Opportunity, m.Opportunity.external_id) == {
        "OPP-1": DANA,
        "OPP-2": SAM,
        "OPP-3": DANA,
    }

    assert run(capsys, config, "rep", "deactivate", MIA)[0] == 0
    for argv, message in [
        (["--to", "nobody@northwind.example"], "no such rep"),
        (["--to", MIA], "inactive rep"),
        (["--to", DANA], "both"),
        (["--to", SAM, "--account", "ACC-404"], "no account has that id or domain"),
    ]:
        code, _ = run(capsys, config, "reassign", "--from", DANA, *argv)
        assert code == 2, argv
        assert message in run.err
    assert len(events(config, REASSIGNED)) == 1


def test_a_departed_reps_mail_in_a_colleagues_mailbox_does_not_make_their_company_a_prospect(
    config, tmp_path, capsys
):
    """Without internal_domains only reps.csv says Dana is one of us: deactivating her must not make her
    a prospect when her old mail turns up in Sam's mailbox (an .eml tree here)."""
    assert run(capsys, config, "rep", "deactivate", DANA)[0] == 0
    tree = tmp_path / "sam-export" / "2024"
    tree.mkdir(parents=True)
    (tree / "quote.eml").write_bytes(
        f"From: Dana Whitfield <{DANA}>\r\nTo: Sam Okafor <{SAM}>\r\nSubject: Quote for 40 tablets\r\n"
        "Date: Fri, 01 Mar 2024 10:00:00 +0000\r\nMessage-ID: <h2@northwind.example>\r\n\r\n"
        "Hi Sam,\r\n\r\nCould you send us a quote for 40 tablets? Our budget is about 20,000 EUR.\r\n".encode()
    )
    assert run(capsys, config, "import", str(tmp_path / "sam-export"), "-m", "sam")[0] == 0
    assert query(config, select(m.Message.sent_at)) == [(utc(2024, 3, 1, 10, 0),)]
    assert query(config, select(m.Suggestion.kind, m.Suggestion.summary)) == []


def test_sync_and_the_daemon_leave_an_inactive_owners_mailbox_alone(
    tmp_path, dovecot, imap_user, monkeypatch, capsys, parse_worker
):
    extra = '\n[daemon]\npoll_interval = 600\njitter = 0\nidle = false\n[web]\nlisten = "127.0.0.1:0"\n'
    config = imap_config(
        tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"], extra=extra
    )  # mailbox "imap", owned by Dana
    (tmp_path / "reps.csv").write_text(textwrap.dedent(CRM["reps.csv"]), encoding="utf-8")
    dovecot.append(imap_user.name, "INBOX", plain_mail("sent to her after she left"))
    for argv in (
        ["db", "upgrade"],
        ["crm", "import", str(tmp_path / "reps.csv")],
        ["rep", "deactivate", DANA],
    ):
        assert run(capsys, config, *argv)[0] == 0

    def captured():
        return len(query(config, select(m.Message.id)))

    code, out = run(capsys, config, "sync", "--once")
    assert code == 0
    assert "owner inactive (departed): not polled" in out
    assert run.err.count("mailbox_skipped_inactive") == 1
    assert captured() == 0
    assert f"mailbox imap is not polled: its owner {DANA} is inactive" in run(capsys, config, "status")[1]

    settings = load_settings(config)
    repo = Repo(settings.database_url)
    metrics = Metrics(["imap"])
    daemon = Daemon(settings, Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker), metrics)
    [mailbox] = daemon.mailboxes
    try:
        with capture_logs() as logs:
            daemon.poll(mailbox)
            daemon.poll(mailbox)
        assert [e["mailbox"] for e in logs if e["event"] == "mailbox_skipped_inactive"] == ["imap"]
        assert metrics.registry.get_sample_value("mailsync_mailbox_inactive", {"mailbox": "imap"}) == 1
        health = daemon.health()
        assert (health.ok, "mailbox:imap" in health.checks) == (True, False)  # not polled is no outage
        assert captured() == 0

        assert run(capsys, config, "rep", "activate", DANA)[0] == 0
        daemon.poll(mailbox)  # the next poll, no restart
        assert captured() == 1
        assert metrics.registry.get_sample_value("mailsync_mailbox_inactive", {"mailbox": "imap"}) == 0
        assert daemon.health().checks["mailbox:imap"] == "ok"
    finally:
        repo.dispose()
