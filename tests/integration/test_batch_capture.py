"""Capture a batch at a time, process from the queue: over a real Dovecot, into SQLite and PostgreSQL.

A capture batch is one commit (blobs synced first, cursor included); a message the database refuses is
quarantined and the rest of its batch commits; captured messages wait as "pending" until the
processing stage takes them, and a process that dies between the two leaves them for the next run.
"""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync import faults
from mailsync.cli import main
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline import process
from mailsync.pipeline.capture import CursorAt
from mailsync.pipeline.ingest import Pipeline
from mailsync.pipeline.sync import sync_mailbox
from mailsync.pipeline.sync_state import Cursor
from storage import mailstore
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.integration.test_postgres_capture import QP_NUL, raw_mail
from tests.support.config import imap_config
from tests.support.mail import plain_mail

pytestmark = pytest.mark.integration


@pytest.fixture
def imap_settings(tmp_path, dovecot, imap_user, monkeypatch):
    return load_settings(
        imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"])
    )


def sync(settings, pipeline, batch_size=200):
    mailbox = settings.mailbox("imap")
    with ImapSource(mailbox, batch_size=batch_size) as source:
        (result,) = sync_mailbox(mailbox, pipeline, source)
    return result


def rows(repo):
    """UID -> (status, quarantine reason), and the INBOX cursor."""
    with repo.session() as s:
        found = s.execute(
            select(m.Provenance.uid, m.Message.status, m.Quarantine.reason)
            .join(m.Message, m.Message.id == m.Provenance.message_pk)
            .outerjoin(m.Quarantine, m.Quarantine.message_pk == m.Message.id)
        ).all()
        cursor = s.scalar(select(m.FolderState.last_uid).where(m.FolderState.name == "INBOX"))
    return {uid: (status, reason) for uid, status, reason in found}, cursor


def test_a_refused_message_amid_a_batch_on_postgresql_is_quarantined_and_the_batch_commits(
    dovecot, imap_user, imap_settings, parse_worker, pg_fresh_url
):
    """One capture batch holding a decoded NUL (stored as U+FFFD), a Message-ID too long for its column
    (refused when captured) and a References entry too long for its column (refused when processed)."""
    messages = [
        raw_mail("ok-1"),
        QP_NUL,
        raw_mail("x" * 1100),
        raw_mail("ok-2"),
        raw_mail("long-ref", headers=b"References: <" + b"r" * 1100 + b"@acme.example>\r\n"),
        raw_mail("ok-3"),
    ]
    uids = dovecot.append_many(imap_user.name, "INBOX", messages)
    repo = Repo(pg_fresh_url)
    committed = []  # messages committed (seen from another connection) as each one's blob is written

    def look() -> None:
        with repo.session() as s:
            committed.append(s.scalar(select(func.count()).select_from(m.Message)))

    try:
        pipeline = Pipeline(imap_settings, repo, Archive(imap_settings.archive_dir), parse_worker)
        with faults.on("after_archive", look):
            result = sync(imap_settings, pipeline)
        found, cursor = rows(repo)
    finally:
        repo.dispose()
    assert committed == [0] * 6, "the six messages were not one capture batch"
    assert result.fetched == 6
    assert result.outcomes == {"new": 4, "quarantined": 2}
    assert sorted(found) == uids
    statuses = [found[uid][0] for uid in uids]
    assert statuses == ["parsed", "parsed", "quarantined", "parsed", "quarantined", "parsed"]
    assert "value too long" in found[uids[2]][1]
    assert "value too long" in found[uids[4]][1]
    assert cursor == uids[-1]


def test_a_capture_batch_commits_whole_or_not_at_all(dovecot, imap_user, imap_settings, repo, pipeline):
    """The batch's commit fails after its rows and cursor are written: none of it is there, and the
    next pass captures it all (its staged blobs written again, as the database never named them)."""
    uids = dovecot.append_many(imap_user.name, "INBOX", [plain_mail(f"atomic {i}") for i in range(8)])

    def refuse() -> None:
        raise RuntimeError("the commit never happens")

    with faults.on("before_cursor", refuse), pytest.raises(RuntimeError):
        sync(imap_settings, pipeline)
    found, cursor = rows(repo)
    assert found == {}
    assert cursor is None
    assert len(list(pipeline.archive.keys())) == 8  # staged, unknown to the database
    result = sync(imap_settings, pipeline)
    found, cursor = rows(repo)
    assert result.outcomes == {"new": 8}
    assert [found[uid][0] for uid in uids] == ["parsed"] * 8
    assert cursor == uids[-1]


def test_a_torn_blob_the_database_never_named_is_written_again(
    dovecot, imap_user, imap_settings, repo, pipeline
):
    """A crash between staging and the batch's sync can leave a torn file under a blob's name; the next
    capture trusts only blobs the database knows, so it writes the file again."""
    dovecot.append_many(imap_user.name, "INBOX", [plain_mail("torn")])
    with dovecot.client(imap_user.name) as client:
        client.select_folder("INBOX", readonly=True)
        served = next(iter(client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values()))[b"BODY[]"]
    key = hashlib.sha256(served).hexdigest()
    path = pipeline.archive.path_for(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # what a power cut before the sync may leave
    assert sync(imap_settings, pipeline).outcomes == {"new": 1}
    assert pipeline.archive.get(key) == served


def test_messages_captured_but_not_processed_are_processed_by_the_next_pass(
    dovecot, imap_user, imap_settings, repo, pipeline, tmp_path, capsys
):
    """As after a kill between the capture commit and processing: the pending messages are the queue,
    and the next pass, with nothing new on the server, processes them (and makes their proposals)."""
    uids = dovecot.append_many(
        imap_user.name,
        "INBOX",
        [plain_mail(f"queued {i}", "Can you send the pricing for 40 seats?") for i in range(5)],
    )
    mailbox = imap_settings.mailbox("imap")
    with ImapSource(mailbox) as source:
        status = source.select("INBOX")
        cursor = CursorAt("imap", "INBOX", Cursor(status.uidvalidity, max(uids)))
        captured = pipeline.capture(list(source.fetch(status, uids)), mailbox.owner, cursor)
    assert [c.outcome for c in captured] == ["new"] * 5
    with repo.session() as s:
        assert mailstore.backlog(s) == 5
    assert main(["-c", str(tmp_path / "mailsync.toml"), "status"]) == 0
    assert "processing backlog: 5 messages waiting" in capsys.readouterr().out
    again = Pipeline(imap_settings, repo, pipeline.archive, pipeline.parser)  # a new process, say
    result = sync(imap_settings, again)
    assert result.fetched == 0
    with repo.session() as s:
        assert mailstore.backlog(s) == 0
        statuses = set(s.scalars(select(m.Message.status)))
        threads = s.scalar(select(func.count()).select_from(m.Thread))
    assert statuses == {"parsed"}
    assert threads == 5


def test_proposals_are_made_once_per_thread_per_batch(
    dovecot, imap_user, imap_settings, repo, pipeline, monkeypatch
):
    """A message and ten replies to it in one batch: their thread is proposed for once, not eleven times."""
    root = plain_mail("deal", "Can you send the pricing for 40 seats?", id_prefix="root")
    root_id = root.split(b"Message-ID: <", 1)[1].split(b">", 1)[0]
    replies = [
        plain_mail(f"Re: deal {i}", "Any news on the pricing?", id_prefix="reply").replace(
            b"Subject:", b"In-Reply-To: <" + root_id + b">\nSubject:", 1
        )
        for i in range(10)
    ]
    dovecot.append_many(imap_user.name, "INBOX", [root, *replies])
    views = []
    real = process.propose

    def counting(view, *args):
        views.append(view.key)
        return real(view, *args)

    monkeypatch.setattr(process, "propose", counting)
    assert sync(imap_settings, pipeline).outcomes == {"new": 11}
    with repo.session() as s:
        threads = s.scalar(select(func.count()).select_from(m.Thread))
    assert threads == 1
    assert len(views) == 1
