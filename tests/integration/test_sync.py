"""IMAP capture against a real Dovecot: first and incremental sync, \\Seen, UIDVALIDITY, deletions, outages."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from config.errors import SourceUnavailable
from config.settings import load_settings
from mailsync.cli import main
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline.sync import sync_mailbox
from storage import models as m
from tests.support.config import imap_config, imap_mailbox
from tests.support.mail import plain_mail as mail


@pytest.fixture
def synced(tmp_path, dovecot, imap_user, monkeypatch, repo, pipeline):
    """(settings, mailbox, run) for a fresh Dovecot user; run() does one sync pass."""
    user, password = imap_user
    settings = load_settings(imap_config(tmp_path, dovecot, user, password, monkeypatch))
    mailbox = settings.mailbox("imap")

    def run(**kwargs):
        with ImapSource(mailbox, batch_size=kwargs.pop("batch_size", 200)) as source:
            return {r.folder: r for r in sync_mailbox(mailbox, pipeline, source, **kwargs)}

    return settings, mailbox, run


def count(repo, model=m.Message):
    with repo.session() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.mark.both_dbs
def test_first_sync_then_incremental(dovecot, imap_user, synced, repo):
    _, _, run = synced
    dovecot.append_many(imap_user.name, "INBOX", [mail(f"first {i}") for i in range(5)])
    dovecot.append(imap_user.name, "Sent", mail("from the sent folder"))
    results = run()
    assert set(results) == {"INBOX", "Sent"}
    assert results["INBOX"].fetched == 5
    assert results["Sent"].fetched == 1
    assert count(repo) == 6
    dovecot.append_many(imap_user.name, "INBOX", [mail("second a"), mail("second b")])
    results = run()
    assert results["INBOX"].fetched == 2  # only the new ones
    assert results["INBOX"].outcomes == {"new": 2}
    assert results["Sent"].fetched == 0
    assert count(repo) == 8
    with repo.session() as s:
        cursors = dict(s.execute(select(m.FolderState.name, m.FolderState.last_uid)).all())
    assert cursors["INBOX"] == 7
    assert cursors["Sent"] == 1


@pytest.mark.both_dbs
def test_a_capture_only_pass_leaves_processing_to_the_next(dovecot, imap_user, synced, repo):
    _, _, run = synced
    dovecot.append_many(imap_user.name, "INBOX", [mail(f"backfill {i}") for i in range(4)])
    results = run(process=False)
    assert results["INBOX"].outcomes == {"new": 4}
    with repo.session() as s:
        statuses = s.scalars(select(m.Message.status)).all()
        cursor = s.scalar(select(m.FolderState.last_uid).where(m.FolderState.name == "INBOX"))
    assert statuses == ["pending"] * 4  # archived and recorded, the cursor past them
    assert cursor == 4
    assert count(repo, m.Thread) == 0
    results = run()  # nothing new on the server: the pass drains the backlog
    assert results["INBOX"].fetched == 0
    with repo.session() as s:
        assert set(s.scalars(select(m.Message.status)).all()) == {"parsed"}
    assert count(repo, m.Thread) == 4


def test_sync_never_sets_seen(dovecot, imap_user, synced):
    _, _, run = synced
    uids = dovecot.append_many(imap_user.name, "INBOX", [mail("unread 1"), mail("unread 2")])
    run()
    with dovecot.client(imap_user.name) as client:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(uids)
    assert all(b"\\Seen" not in f for f in flags.values())


@pytest.mark.both_dbs
def test_uidvalidity_change_resyncs_by_identity_without_duplicates(
    dovecot, imap_user, tmp_path, monkeypatch, repo, pipeline
):
    settings = load_settings(
        imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["Deals"])
    )
    mailbox = settings.mailbox("imap")
    dovecot.create_folder(imap_user.name, "Deals")
    messages = [mail(f"deal {i}") for i in range(3)]
    dovecot.append_many(imap_user.name, "Deals", messages)
    with ImapSource(mailbox) as source:
        sync_mailbox(mailbox, pipeline, source)
    dovecot.delete_folder(imap_user.name, "Deals")
    dovecot.create_folder(imap_user.name, "Deals")
    dovecot.append_many(imap_user.name, "Deals", [*messages, mail("deal new")])
    with capture_logs() as logs, ImapSource(mailbox) as source:
        (result,) = sync_mailbox(mailbox, pipeline, source)
    assert result.resynced
    assert result.outcomes == {"copy": 3, "new": 1}  # same emails, new (UIDVALIDITY, UID) places
    assert count(repo) == 4
    changed = [e for e in logs if e["event"] == "uidvalidity_changed"]
    assert len(changed) == 1
    assert changed[0]["old"] != changed[0]["new"]
    with repo.session() as s:
        per_message = (
            s.execute(select(func.count()).select_from(m.Provenance).group_by(m.Provenance.message_pk))
            .scalars()
            .all()
        )
    assert sorted(per_message) == [1, 2, 2, 2]  # old and new UIDVALIDITY copies both recorded


@pytest.mark.both_dbs
def test_mail_deleted_on_the_server_stays_archived(dovecot, imap_user, synced, repo, pipeline):
    _, _, run = synced
    uids = dovecot.append_many(imap_user.name, "INBOX", [mail("keep"), mail("delete me")])
    run()
    with dovecot.client(imap_user.name) as client:
        client.select_folder("INBOX")
        client.delete_messages([uids[1]])
        client.expunge()
    results = run()
    assert results["INBOX"].gone == 1
    with repo.session() as s:
        gone = s.execute(
            select(m.Provenance.uid, m.Message.status, m.Message.blob_sha256)
            .join(m.Message)
            .where(m.Provenance.gone_at.is_not(None))
        ).all()
    assert [(uid, status) for uid, status, _ in gone] == [(uids[1], "parsed")]
    assert pipeline.archive.get(gone[0][2])
    assert count(repo) == 2


@pytest.mark.both_dbs
def test_outage_mid_sync_resumes_with_nothing_lost_or_duplicated(
    dovecot_factory, tmp_path, monkeypatch, repo, pipeline
):
    server = dovecot_factory(users={"olga": "olgapw"})
    settings = load_settings(imap_config(tmp_path, server, "olga", "olgapw", monkeypatch, folders=["INBOX"]))
    mailbox = settings.mailbox("imap")
    # Enough mail that the outage comes before its end: capture looks a batch or two ahead of the
    # batch it commits (fetcher.py, staging.py), so a short folder may be all fetched by then.
    total = 30
    server.append_many("olga", "INBOX", [mail(f"outage {i}") for i in range(total)])
    seen = []

    def stop_after_five(folder, total):
        def advance():
            seen.append(1)
            if len(seen) == 5:
                server.stop()

        return advance

    with pytest.raises(SourceUnavailable), ImapSource(mailbox, batch_size=2) as source:
        sync_mailbox(mailbox, pipeline, source, progress=stop_after_five)
    assert 4 <= count(repo) < total
    server.start()
    with ImapSource(mailbox) as source:
        sync_mailbox(mailbox, pipeline, source)
    assert count(repo) == total
    with repo.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Provenance)) == total


def test_cli_sync_once_wrong_password_is_one_clear_error_and_others_carry_on(
    dovecot, imap_user, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TEST_BAD_PW", "not-the-password")
    broken = imap_mailbox(
        dovecot,
        imap_user.name,
        password_env="TEST_BAD_PW",
        name="broken",
        owner="sam@northwind.example",
        folders=None,
    )
    config = imap_config(
        tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"], extra=broken
    )
    dovecot.append_many(imap_user.name, "INBOX", [mail("cli one"), mail("cli two")])
    assert main(["-c", str(config), "db", "upgrade"]) == 0
    code = main(["-c", str(config), "sync", "--once"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "broken:" in err
    assert "not-the-password" not in err + out
    assert [line for line in err.splitlines() if line.startswith("broken:")]
    assert "imap" in out
    assert "INBOX" in out
    assert main(["-c", str(config), "status"]) == 0
    status = capsys.readouterr().out
    assert "IMAP folders" in status
    assert "INBOX" in status
    dovecot.append_many(imap_user.name, "INBOX", [mail("cli three")])
    assert main(["-c", str(config), "sync", "--once", "--mailbox", "imap", "--capture-only"]) == 0
    assert "1 messages wait for processing" in capsys.readouterr().out


@pytest.mark.slow
def test_a_folder_of_2000_messages(dovecot, imap_user, synced, repo):
    _, _, run = synced
    dovecot.append_many(
        imap_user.name, "INBOX", [mail(f"bulk {i}", "Weekly numbers attached.") for i in range(2000)]
    )
    results = run()
    assert results["INBOX"].fetched == 2000
    assert count(repo) == 2000
    assert run()["INBOX"].fetched == 0
