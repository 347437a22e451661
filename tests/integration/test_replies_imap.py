"""Approval by reply through real parts: a rep's reply APPENDed to the reply mailbox on Dovecot, read by
the daemon's poll of that mailbox, applied, and confirmed through a real SMTP server (aiosmtpd).

The proposals are real: the demo CRM and Maildir imported through the pipeline. The digest they answer
is a digest_send row (sending it is tested in test_digest_send*.py). The tests that apply a reply or
capture one run on SQLite and on PostgreSQL (both_dbs); those a reply is refused in, on SQLite.
"""

from __future__ import annotations

import email.utils
import secrets
import textwrap
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from mailsync.admin.crm_import import import_crm
from mailsync.approval.decisions import DecisionRequest, decide
from mailsync.approval.inbox import HANDLED, ReplyInbox
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.importer import import_source
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import models as m
from storage.eventlog import EventLog
from storage.records import Provenance, RawMessage
from tests.conftest import DEMO, write_config
from tests.support.config import PASSWORD_ENV, imap_mailbox

DANA = "dana@northwind.example"
REPLY_MAILBOX = "crm-digest"
LINK_KEY_ENV = "TEST_LINK_KEY"


@pytest.fixture
def config_file(tmp_path, dovecot, imap_user, smtp_server, monkeypatch, db_url):
    """The tests' usual config, plus the digest's own mailbox on Dovecot as [digest] reply_mailbox and
    [smtp] pointing at the aiosmtpd server."""
    monkeypatch.setenv(PASSWORD_ENV, imap_user.password)
    monkeypatch.setenv(LINK_KEY_ENV, "k" * 40)
    mailbox = imap_mailbox(
        dovecot,
        imap_user.name,
        password_env=PASSWORD_ENV,
        name=REPLY_MAILBOX,
        owner="crm-digest@northwind.example",
        folders=["INBOX"],
    )
    extra = textwrap.dedent(
        f"""
        [daemon]
        poll_interval = 600
        jitter = 0
        idle = false

        [web]
        listen = "127.0.0.1:0"
        secret_key_env = "{LINK_KEY_ENV}"

        [digest]
        reply_mailbox = "{REPLY_MAILBOX}"
        """
    )
    return write_config(tmp_path, mailbox + smtp_server.smtp_toml() + extra, database_url=db_url)


@pytest.fixture
def proposals(settings, repo, pipeline):
    """Dana's open proposals from the demo, oldest first: (id, key)."""
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline.refresh_crm()
    import_source(pipeline, FileSource(DEMO / "Maildir", "dana"), DANA)
    with repo.session() as s:
        rows = s.execute(
            select(m.Suggestion.id, m.Suggestion.key)
            .where(m.Suggestion.owner_rep == DANA, m.Suggestion.status == "open")
            .order_by(m.Suggestion.id)
        ).all()
    assert len(rows) >= 4, "the demo gives Dana several proposals"
    return [tuple(r) for r in rows]


def sent_digest(repo, keys, period="2026-11-30", rep=DANA):
    """A digest_send row as the sender leaves it: its numbers 1..N are `keys`. Returns its token."""
    token = secrets.token_hex(16)
    with repo.session() as s:
        s.add(
            m.DigestSend(
                token=token,
                rep=rep,
                kind="rep",
                period=period,
                message_id=f"<digest.{token}@northwind.example>",
                status="sent",
                items=[{"n": n, "key": key} for n, key in enumerate(keys, 1)],
            )
        )
    return token


def reply(body, *, token=None, sender=f"Dana Whitfield <{DANA}>", message_id=None):
    """A reply as Gmail sends it: top-posted, the digest quoted below with ">"."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = "CRM digest <crm-digest@northwind.example>"
    message["Subject"] = "Re: CRM digest: 4 proposals"
    message["Date"] = email.utils.format_datetime(email.utils.localtime())
    message["Message-ID"] = message_id or f"<reply-{secrets.token_hex(6)}@mail.gmail.example>"
    if token is not None:
        message["In-Reply-To"] = f"<digest.{token}@northwind.example>"
        message["References"] = f"<digest.{token}@northwind.example>"
    quoted = "> 1. Link this conversation to Acme?\n>    approve 1 / reject 1\n>\n> approve all\n> reject 2"
    message.set_content(
        f"{body}\n\nOn Mon, Nov 30, 2026 at 7:30 AM CRM digest <crm-digest@northwind.example> wrote:\n\n{quoted}\n"
    )
    return message.as_bytes()


def poll(settings, pipeline):
    """One poll of the reply mailbox by the daemon: sync (captures the reply), then the replies."""
    daemon = Daemon(settings, pipeline, Metrics([REPLY_MAILBOX]))
    daemon.poll(settings.mailbox(REPLY_MAILBOX))


def statuses(repo):
    with repo.session() as s:
        return dict(s.execute(select(m.Suggestion.key, m.Suggestion.status)).all())


def decisions(repo):
    with repo.session() as s:
        return s.execute(
            select(
                m.Suggestion.key, m.Decision.verdict, m.Decision.who, m.Decision.how, m.Decision.digest_token
            )
            .join(m.Suggestion, m.Suggestion.id == m.Decision.suggestion_id)
            .order_by(m.Decision.id)
        ).all()


@pytest.mark.both_dbs
def test_reply_approves_and_the_confirmation_lists_the_line_not_understood(
    settings, repo, pipeline, proposals, dovecot, imap_user, smtp_server
):
    keys = [key for _, key in proposals[:4]]
    token = sent_digest(repo, keys)
    raw = reply("approve 1\nplease call me about 3", token=token, message_id="<r-approve@mail.gmail.example>")
    dovecot.append(imap_user.name, "INBOX", raw)

    poll(settings, pipeline)

    assert decisions(repo) == [(keys[0], "approve", DANA, "reply", token)]
    after = statuses(repo)
    assert after[keys[0]] == "approved"
    assert [after[k] for k in keys[1:]] == ["open", "open", "open"]  # the quoted "approve all" did nothing
    [sent] = smtp_server.messages
    answer = sent.message
    assert sent.rcpt_tos == (DANA,)
    assert answer["In-Reply-To"] == "<r-approve@mail.gmail.example>"
    assert answer["Auto-Submitted"] == "auto-replied"
    assert answer["X-Mailsync-Digest"] == token
    assert answer["Subject"] == "Re: CRM digest: 4 proposals"
    text = answer.get_content().replace("\r\n", "\n")
    assert "Your reply to the CRM digest of 2026-11-30:" in text
    assert "Done:\n  1. " in text
    assert 'Not understood:\n  "please call me about 3": not a command' in text
    with repo.session() as s:
        kept = s.scalar(select(m.Message).where(m.Message.message_id == "r-approve@mail.gmail.example"))
        assert (kept.status, kept.thread_id) == ("digest", None)  # archived, never customer mail


@pytest.mark.both_dbs
def test_a_reply_is_handled_once_even_by_a_restarted_daemon(
    settings, repo, pipeline, proposals, dovecot, imap_user, smtp_server
):
    keys = [key for _, key in proposals[:2]]
    token = sent_digest(repo, keys)
    dovecot.append(imap_user.name, "INBOX", reply("reject 2", token=token))
    poll(settings, pipeline)
    assert len(smtp_server.messages) == 1

    poll(settings, pipeline)  # a new Daemon: nothing remembered in memory
    inbox = ReplyInbox(settings, repo, pipeline.archive, pipeline.parser, EventLog(settings.events_dir))
    assert inbox.process() == 0

    assert len(smtp_server.messages) == 1
    assert decisions(repo) == [(keys[1], "reject", DANA, "reply", token)]
    handled = [e for e in EventLog(settings.events_dir) if e.kind == HANDLED]
    assert len(handled) == 1


@pytest.mark.parametrize(
    ("sender", "with_token", "reason"),
    [
        ("Sam Okafor <sam@northwind.example>", True, "not_recipient"),  # forged From, right token
        (f"Dana Whitfield <{DANA}>", False, "no_digest_token"),  # right From, no token
        (f"Dana Whitfield <{DANA}>", "wrong", "unknown_digest"),  # a token no digest has
    ],
)
def test_a_reply_that_is_not_the_reps_answer_to_their_digest_does_nothing(
    settings, repo, pipeline, proposals, dovecot, imap_user, smtp_server, sender, with_token, reason
):
    keys = [key for _, key in proposals[:3]]
    token = sent_digest(repo, keys)
    used = {True: token, False: None, "wrong": secrets.token_hex(16)}[with_token]
    dovecot.append(imap_user.name, "INBOX", reply("approve all", token=used, sender=sender))
    before = statuses(repo)

    with capture_logs() as logs:
        poll(settings, pipeline)

    assert statuses(repo) == before
    assert decisions(repo) == []
    assert smtp_server.messages == []
    assert [e["reason"] for e in logs if e["event"] == "reply_refused"] == [reason]
    poll(settings, pipeline)  # handled: refused once, not again at every poll
    assert len([e for e in EventLog(settings.events_dir) if e.kind == HANDLED]) == 1


@pytest.mark.parametrize(
    ("header", "reason"),
    [("Auto-Submitted: auto-replied", "automated"), ("X-Mailsync-Digest: {token}", "own_mail")],
)
def test_machine_mail_in_the_reply_mailbox_is_never_answered(
    settings, repo, pipeline, proposals, dovecot, imap_user, smtp_server, header, reason, debug_logging
):
    """An out-of-office answer to a digest, or a copy of mailsync's own confirmation: answering either
    could start a mail loop."""
    token = sent_digest(repo, [key for _, key in proposals[:2]])
    raw = reply("approve all\nI am out of the office until Monday.", token=token)
    dovecot.append(imap_user.name, "INBOX", header.format(token=token).encode() + b"\r\n" + raw)

    with capture_logs() as logs:
        poll(settings, pipeline)

    assert decisions(repo) == []
    assert smtp_server.messages == []
    assert [e["reason"] for e in logs if e["event"] == "reply_ignored"] == [reason]


@pytest.mark.both_dbs
def test_a_reply_to_an_old_digest_acts_on_what_is_still_open_and_names_what_was_decided(
    settings, repo, pipeline, proposals, dovecot, imap_user, smtp_server
):
    keys = [key for _, key in proposals[:4]]
    old = sent_digest(repo, keys[:2], period="2026-11-29")
    sent_digest(repo, [keys[2], keys[3]], period="2026-11-30")  # today's digest numbers others 1 and 2
    events = EventLog(settings.events_dir)
    decide(repo, events, DecisionRequest(key=keys[0], verdict="approve", who=DANA, how="link"))

    dovecot.append(imap_user.name, "INBOX", reply("approve 1 2", token=old))
    poll(settings, pipeline)

    after = statuses(repo)
    assert (after[keys[1]], after[keys[2]], after[keys[3]]) == ("approved", "open", "open")
    text = smtp_server.messages[0].message.get_content().replace("\r\n", "\n")
    assert "Your reply to the CRM digest of 2026-11-29:" in text
    assert "Done:\n  2. " in text
    assert "Already decided, nothing changed:\n  1. " in text


@pytest.mark.both_dbs
def test_a_reps_own_mailbox_holding_a_digest_and_a_reply_captures_neither_as_customer_mail(
    repo, pipeline, proposals
):
    token = secrets.token_hex(16)
    digest = textwrap.dedent(
        f"""\
        From: CRM digest <crm-digest@northwind.example>
        To: {DANA}
        Subject: CRM digest: 4 proposals
        Date: Mon, 30 Nov 2026 07:30:00 +0100
        Message-ID: <digest.{token}@northwind.example>
        X-Mailsync-Digest: {token}
        Auto-Submitted: auto-generated

        1. New contact Jo Park <jo.park@newcustomer.example>? Evidence: "we want 40 vans by May".
        """
    ).encode()
    rep_reply = reply(
        "approve 1\n\nJo Park <jo.park@newcustomer.example> wants 40 vans",
        token=token,
        message_id="<r-own@x>",
    )
    with repo.session() as s:
        before = (
            s.scalar(select(func.count()).select_from(m.Suggestion)),
            s.scalar(select(func.count(m.Thread.id))),
        )
    for n, raw in enumerate((digest, rep_reply), 1):
        copy = RawMessage(raw, Provenance("dana", folder="INBOX", uidvalidity=1, uid=1000 + n))
        assert pipeline.ingest(copy, DANA).outcome == "new"

    with repo.session() as s:
        kept = s.execute(
            select(m.Message.message_id, m.Message.status, m.Message.thread_id, m.Message.blob_sha256).where(
                m.Message.message_id.in_([f"digest.{token}@northwind.example", "r-own@x"])
            )
        ).all()
        people = s.scalar(
            select(func.count())
            .select_from(m.Participant)
            .join(m.Message, m.Message.id == m.Participant.message_pk)
            .where(m.Message.status == "digest")
        )
        after = (
            s.scalar(select(func.count()).select_from(m.Suggestion)),
            s.scalar(select(func.count(m.Thread.id))),
        )
    assert sorted(row[:3] for row in kept) == [
        (f"digest.{token}@northwind.example", "digest", None),
        ("r-own@x", "digest", None),
    ]
    assert people == 0
    assert after == before  # no thread, no proposal (no "new contact Jo Park") from either
    assert sorted(pipeline.archive.get(row.blob_sha256) for row in kept) == sorted(
        [digest, rep_reply]
    )  # kept
