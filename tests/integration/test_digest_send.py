"""Sending digests through a real SMTP server (aiosmtpd on loopback), from the demo's real proposals.

The demo (CRM CSVs and Maildir) goes through the real pipeline once per module; each test gets a copy
of that database and a config whose [smtp] points at its own aiosmtpd. What arrives is parsed with the
stdlib. Never twice a period, nothing when nothing is new, nothing for paused or departed reps, and a
relay that refuses leaves the digest to be sent again with the same Message-ID.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest
from sqlalchemy import select, update
from structlog.testing import capture_logs

from config.errors import ConfigError
from config.settings import load_settings
from mailsync.approval.links import LinkSigner
from mailsync.approval.reps import apply_rep_event, pause_rep
from mailsync.approval.send import DigestSender
from mailsync.cli import main
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import models as m
from storage.archive import Archive
from storage.eventlog import EventLog
from storage.repo import Repo
from tests.conftest import DEMO, pg_copy_url, write_config
from tests.integration.test_digest_escaping import hostile_mail

KEY_ENV = "TEST_DIGEST_LINK_KEY"
DANA, SAM, MIA = "dana@northwind.example", "sam@northwind.example", "mia@northwind.example"
HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "X-Mailsync-Digest",
           "List-Unsubscribe", "List-Unsubscribe-Post")  # fmt: skip


class Setup:
    def __init__(self, tmp_path, server, demo_var, monkeypatch, database_url=None) -> None:
        shutil.copytree(demo_var, tmp_path / "var")
        monkeypatch.setenv(KEY_ENV, "a-test-key-that-signs-digest-links")
        extra = server.smtp_toml() + (
            f'\n[web]\npublic_url = "https://crm.northwind.example"\nsecret_key_env = "{KEY_ENV}"\n'
            '\n[digest]\nsend_at = "07:30"\ntimezone = "Europe/Berlin"\n'
        )
        self.config = write_config(tmp_path, extra, database_url=database_url)
        self.settings = load_settings(self.config)
        self.server = server
        self.repo = Repo(self.settings.database_url)

    def cli(self, capsys, *argv: str) -> tuple[int, str, str]:
        code = main(["-c", str(self.config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def sender(self) -> DigestSender:
        """A sender as a freshly started daemon builds it."""
        return DigestSender(self.settings, self.repo, LinkSigner.from_settings(self.settings.web))

    def rows(self, rep: str = DANA) -> list[m.DigestSend]:
        with self.repo.session() as s:
            return list(
                s.scalars(select(m.DigestSend).where(m.DigestSend.rep == rep).order_by(m.DigestSend.id))
            )

    def outbox(self) -> list[str]:
        box = self.settings.archive_dir / "outbox"
        return sorted(p.name for p in box.iterdir()) if box.exists() else []

    def to(self, rep: str) -> list:
        return [got for got in self.server.messages if got.rcpt_tos == (rep,)]


def demo_setup(request, tmp_path, server, monkeypatch, db_backend) -> Setup:
    """A copy of the demo with [smtp] on `server`: on PostgreSQL (tests marked both_dbs) a copy of the
    database imported once per module (the `demo_pg` fixture), else of its SQLite `var/`."""
    if db_backend == "postgresql":
        var, url = request.getfixturevalue("demo_pg")
        return Setup(tmp_path, server, var, monkeypatch, pg_copy_url(request, url))
    return Setup(tmp_path, server, request.getfixturevalue("demo_var"), monkeypatch)


@pytest.fixture
def setup(tmp_path, smtp_server, monkeypatch, db_backend, request):
    setup = demo_setup(request, tmp_path, smtp_server, monkeypatch, db_backend)
    yield setup
    setup.repo.dispose()


def test_a_digest_arrives_as_multipart_alternative_with_every_header(setup, capsys):
    code, out, err = setup.cli(capsys, "digest", "--send", "--rep", DANA)
    assert code == 0, err
    [got] = setup.server.messages
    [row] = setup.rows()
    message = got.message
    assert got.rcpt_tos == (DANA,)
    assert got.mail_from == "crm-digest@northwind.example"
    assert all(message[h] for h in HEADERS), {h: message[h] for h in HEADERS}
    assert message["From"] == "CRM digest <crm-digest@northwind.example>"
    assert message["To"] == f"Dana Whitfield <{DANA}>"
    assert message["Subject"].startswith("CRM digest")
    assert message["Message-ID"] == row.message_id == f"<digest.{row.token}@northwind.example>"
    assert re.fullmatch(r"[0-9a-f]{32}", row.token)
    assert message["X-Mailsync-Digest"] == row.token
    assert message["Auto-Submitted"] == "auto-generated"
    assert abs(parsedate_to_datetime(message["Date"]) - datetime.now(UTC)) < timedelta(hours=1)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.fullmatch(r"<(https://crm\.northwind\.example/a/\S+)>", message["List-Unsubscribe"]).group(1)
    claim = LinkSigner.from_settings(setup.settings.web).verify(url.rsplit("/", 1)[1])
    line = f"List-Unsubscribe: <{url}>\r\n".encode()  # on the wire: one line, no encoded words
    assert line in got.data
    assert (claim.action, claim.rep, claim.digest_token) == ("unsubscribe", DANA, row.token)

    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert row.status == "sent"
    assert row.sent_at is not None
    with setup.repo.session() as s:
        open_keys = set(s.scalars(select(m.Suggestion.key).where(m.Suggestion.owner_rep == DANA)))
    assert [item["n"] for item in row.items] == list(range(1, len(row.items) + 1))
    assert {item["key"] for item in row.items} == open_keys  # the demo's 12 fit in one digest
    assert setup.outbox() == []  # the kept copy goes once the send is recorded
    assert f"{DANA}: sent, {len(open_keys)} proposal(s), {row.message_id}" in out


@pytest.mark.both_dbs
def test_sent_once_a_period_across_runs_and_restarts(setup, capsys):
    assert setup.cli(capsys, "digest", "--send", "--rep", DANA)[0] == 0
    code, out, _ = setup.cli(capsys, "digest", "--send", "--rep", DANA)
    assert code == 0
    assert "already sent for" in out
    later_today = datetime.now(UTC)
    assert [o.reason for o in setup.sender().send_due(later_today) if o.rep == DANA] in ([], ["already_sent"])
    assert len(setup.to(DANA)) == 1
    assert len(setup.rows()) == 1


@pytest.mark.both_dbs
def test_the_daemon_job_sends_each_due_rep_once_and_catches_up_after_a_restart(setup):
    # 06:00 UTC is 07:00 in Berlin: nobody is due; 07:00 UTC is 08:00: everyone with proposals is.
    day = datetime(2031, 3, 4, tzinfo=UTC)
    sender = setup.sender()
    assert sender.send_due(day.replace(hour=6)) == []
    outcomes = {(o.kind, o.rep): (o.status, o.reason) for o in sender.send_due(day.replace(hour=7))}
    assert outcomes == {
        ("rep", DANA): ("sent", ""),
        ("rep", SAM): ("sent", ""),
        ("rep", MIA): ("skipped", "nothing_new"),
        ("manager", MIA): ("sent", ""),  # mia leads dana and sam (fixtures/demo/crm/reps.csv)
    }
    assert sender.send_due(day.replace(hour=7, minute=1)) == []  # the next minute: nothing to look at
    restarted = setup.sender()
    again = {(o.kind, o.rep): o.reason for o in restarted.send_due(day.replace(hour=9))}
    assert again == {
        ("rep", DANA): "already_sent",
        ("rep", SAM): "already_sent",
        ("rep", MIA): "nothing_new",
        ("manager", MIA): "already_sent",
    }
    assert len(setup.to(DANA)) == len(setup.to(SAM)) == 1
    (team,) = setup.to(MIA)  # the manager digest, once
    report = team.message
    assert report["Subject"].startswith("CRM digest: your team's pipeline")
    text = report.get_body(("plain",)).get_content()
    assert "Dana Whitfield: open pipeline" in text or "dana@northwind.example: open pipeline" in text
    assert [r.period for r in setup.rows()] == ["2031-03-04"]


@pytest.mark.both_dbs
def test_nothing_new_since_the_last_digest_sends_nothing_until_a_new_proposal(setup, debug_logging):
    sender = setup.sender()
    monday = datetime(2031, 3, 3, 8, tzinfo=UTC)
    assert sender.send_now(DANA, monday).status == "sent"
    with capture_logs() as logs:
        tuesday = sender.send_now(DANA, monday + timedelta(days=1))
    assert (tuesday.status, tuesday.reason) == ("skipped", "nothing_new")
    assert {"event": "digest_skipped", "rep": DANA, "period": "2031-03-04", "reason": "nothing_new",
            "log_level": "info"} in logs  # fmt: skip
    with setup.repo.session() as s:  # a proposal the last digest did not show
        s.add(m.Suggestion(key="test:new-contact:ivy", kind="new_contact", summary="Ivy Chen (Acme)",
                           payload={"contact": "Ivy Chen", "email": "ivy@acme.example"}, confidence=0.8,
                           evidence=[], owner_rep=DANA))  # fmt: skip
    wednesday = sender.send_now(DANA, monday + timedelta(days=2))
    assert wednesday.status == "sent"
    assert len(setup.to(DANA)) == 2
    assert "test:new-contact:ivy" in {item["key"] for item in setup.rows()[-1].items}


@pytest.mark.both_dbs
def test_paused_and_departed_reps_get_nothing_and_resume_undoes_a_pause(setup, capsys):
    code, out, _ = setup.cli(capsys, "rep", "pause", SAM)
    assert (code, out.strip()) == (0, f"{SAM}: paused")
    assert setup.cli(capsys, "rep", "pause", SAM)[1].strip() == f"{SAM}: already paused"
    events = [e for e in EventLog(setup.settings.events_dir) if e.kind.startswith("rep_")]
    assert [(e.kind, e.payload["rep"], e.payload["how"]) for e in events] == [("rep_paused", SAM, "cli")]
    with setup.repo.session() as s:
        s.execute(update(m.Rep).where(m.Rep.email == DANA).values(active=False))
    for rep, why in ((SAM, "paused"), (DANA, "inactive (departed)")):
        code, out, _ = setup.cli(capsys, "digest", "--send", "--rep", rep)
        assert code == 0
        assert why in out
    looked_at = setup.sender().send_due(datetime(2031, 3, 4, 12, tzinfo=UTC))
    reps = [(o.rep, o.reason) for o in looked_at if o.kind == "rep"]
    assert reps == [(MIA, "nothing_new")]  # neither sam nor dana
    assert [o.rep for o in looked_at if o.kind == "manager"] == [MIA]  # their lead hears of both
    assert [got.rcpt_tos for got in setup.server.messages] == [(MIA,)]  # the manager digest only
    (team,) = setup.server.messages
    assert "(left)" in team.message.get_body(("plain",)).get_content()  # dana, departed
    setup.server.messages.clear()

    assert setup.cli(capsys, "rep", "resume", SAM)[1].strip() == f"{SAM}: resumed"
    code, out, _ = setup.cli(capsys, "digest", "--send", "--rep", SAM)
    assert code == 0
    assert len(setup.to(SAM)) == 1


@pytest.mark.both_dbs
def test_a_refusing_relay_leaves_the_digest_to_be_sent_again_with_the_same_message_id(setup, capsys):
    setup.server.refuse("550 5.7.1 Relaying denied")
    code, _, err = setup.cli(capsys, "digest", "--send", "--rep", DANA)
    assert code == 1
    assert "refused: 550 5.7.1 Relaying denied" in err
    assert "fix:" in err
    [row] = setup.rows()
    assert row.status == "sending"
    assert setup.outbox() == [f"{row.token}.eml"]

    setup.server.refuse(None)
    code, _, err = setup.cli(capsys, "digest", "--send", "--rep", DANA)
    assert code == 0, err
    [got] = setup.server.messages
    [after] = setup.rows()
    assert (after.status, after.token) == ("sent", row.token)
    assert got.message["Message-ID"] == row.message_id
    assert setup.outbox() == []


def test_a_row_without_its_outbox_copy_is_rendered_again_with_the_same_identity(setup):
    # Killed after the row was committed and before the copy was kept: SMTP never had this digest.
    setup.server.refuse("451 4.3.0 Try again later")
    sender = setup.sender()
    assert sender.send_now(DANA).status == "failed"
    [row] = setup.rows()
    (setup.settings.archive_dir / "outbox" / f"{row.token}.eml").unlink()
    setup.server.refuse(None)
    assert sender.send_now(DANA).status == "sent"
    [got] = setup.server.messages
    assert got.message["Message-ID"] == row.message_id
    assert got.message["X-Mailsync-Digest"] == row.token
    assert setup.rows()[0].status == "sent"


def test_text_from_mail_cannot_add_a_header(tmp_path, smtp_server, monkeypatch, capsys):
    # Hostile subjects and names (CR/LF, "Bcc: eve" encoded in the mail) through the real pipeline, and
    # a rep name with CR/LF in the CRM: the digest's headers are ours alone, its recipient the rep alone.
    inbox = tmp_path / "hostile"
    inbox.mkdir()
    (inbox / "a.eml").write_bytes(hostile_mail(1, "mallory@acme.example", "Mon, 02 Mar 2026 10:00:00 +0000"))
    (inbox / "b.eml").write_bytes(
        hostile_mail(2, "buyer@evilcorp.example", "Tue, 03 Mar 2026 10:00:00 +0000")
    )
    empty = tmp_path / "empty"
    (empty / "var").mkdir(parents=True)
    setup = Setup(tmp_path / "run", smtp_server, empty / "var", monkeypatch)
    try:
        for argv in (["db", "upgrade"], ["crm", "import", str(DEMO / "crm")], ["import", str(inbox), "--mailbox", "dana"]):  # fmt: skip
            assert setup.cli(capsys, *argv)[0] == 0
        with setup.repo.session() as s:
            s.execute(update(m.Rep).where(m.Rep.email == DANA).values(name="Dana\r\nBcc: eve@evil.example"))
        code, _, err = setup.cli(capsys, "digest", "--send", "--rep", DANA)
        assert code == 0, err
    finally:
        setup.repo.dispose()
    [got] = smtp_server.messages
    assert got.rcpt_tos == (DANA,)
    head = got.data.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if line and not line[0].isspace()]
    assert sorted(set(names)) == sorted(
        {*HEADERS, "X-Auto-Response-Suppress", "MIME-Version", "Content-Type"}
    )
    assert not re.search(r"(?im)^bcc:", head)  # the name is quoted in To, never a line of its own
    assert [a.addr_spec for a in got.message["To"].addresses] == [DANA]
    assert "\r" not in got.message["Subject"]
    assert "\n" not in got.message["Subject"]


def test_pause_by_link_is_recorded_once_and_applies_again_from_the_event_log(setup):
    events = EventLog(setup.settings.events_dir)
    assert pause_rep(setup.repo, events, DANA.upper(), "link") is True
    assert pause_rep(setup.repo, events, DANA, "link") is False
    [event] = [e for e in events if e.kind == "rep_paused"]
    assert (event.actor, event.payload["how"]) == (DANA, "link")
    with setup.repo.session() as s:  # a database rebuilt without it gets it back from the log, once
        s.execute(update(m.Rep).where(m.Rep.email == DANA).values(paused_at=None))
        s.execute(m.AppliedEvent.__table__.delete().where(m.AppliedEvent.id == event.id))
    for _ in range(2):
        with setup.repo.session() as s:
            apply_rep_event(s, event)
    with setup.repo.session() as s:
        assert s.scalar(select(m.Rep.paused_at).where(m.Rep.email == DANA)) is not None
        assert s.scalar(select(m.AppliedEvent.kind).where(m.AppliedEvent.id == event.id)) == "rep_paused"


def test_the_daemon_job_sends_a_due_digest(setup, parse_worker):
    with setup.repo.session() as s:  # due from midnight: due whenever the test runs
        s.execute(update(m.Rep).where(m.Rep.email == DANA).values(digest_at="00:00", timezone="UTC"))
    pipeline = Pipeline(setup.settings, setup.repo, Archive(setup.settings.archive_dir), parse_worker)
    daemon = Daemon(setup.settings, pipeline, Metrics())
    daemon.digest_job()
    daemon.digest_job()
    assert len(setup.to(DANA)) == 1
    assert setup.rows()[0].status == "sent"


def test_a_daemon_that_sends_digests_needs_the_link_key_at_start(setup, parse_worker, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    pipeline = Pipeline(setup.settings, setup.repo, Archive(setup.settings.archive_dir), parse_worker)
    with pytest.raises(ConfigError, match=KEY_ENV):
        Daemon(setup.settings, pipeline, Metrics())
