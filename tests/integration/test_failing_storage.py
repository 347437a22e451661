"""Failing storage under a running daemon: the archive's disk fills up, the database is locked.

Real faults, not fakes: the archive lives on a 1 MB tmpfs that the mail outgrows (on SQLite and on
PostgreSQL), and another connection holds SQLite's write lock past the busy timeout. In both cases
the daemon logs the fault once, keeps the cursor behind what is committed, retries with backoff, and
captures everything exactly once when the fault clears (tmpfs remounted bigger, lock released).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import subprocess
import threading
from datetime import datetime

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from config.errors import ArchiveError
from config.settings import load_settings
from mailsync.pipeline.capture import capture
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import models as m
from storage.archive import Archive
from storage.journal import RESERVE, CursorMoved, Journal
from storage.records import Provenance, RawMessage
from storage.repo import Repo
from tests.integration.test_daemon import daemon_config, wait_for
from tests.support.database import use_database
from tests.support.mail import plain_mail as mail

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("debug_logging")]


def _bulky(n: int) -> bytes:
    """A mail of ~200 KB that barely compresses (random base64), so a few fill a 1 MB disk."""
    return mail(f"scan {n}", base64.encodebytes(os.urandom(150_000)).decode())


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs for the archive; needs root (mount) like the CI machine gives."""
    mount = tmp_path / "archive"
    mount.mkdir()
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _state(repo: Repo) -> tuple[list[tuple[int, str]], int | None]:
    """(uid, blob) of every message in the database, and the INBOX cursor."""
    with repo.session() as session:
        rows = session.execute(
            select(m.Provenance.uid, m.Message.blob_sha256).join(
                m.Message, m.Provenance.message_pk == m.Message.id
            )
        ).all()
        cursor = session.scalar(select(m.FolderState.last_uid).where(m.FolderState.name == "INBOX"))
    return sorted((int(uid), sha) for uid, sha in rows), cursor


def _run(daemon: Daemon) -> threading.Thread:
    runner = threading.Thread(target=daemon.run)
    runner.start()
    return runner


def _stop(daemon: Daemon, runner: threading.Thread) -> None:
    daemon.request_stop()
    runner.join(30)
    assert not runner.is_alive()


def _events(logs: list[dict], name: str, level: str | None = None) -> list[dict]:
    return [e for e in logs if e["event"] == name and (level is None or e["log_level"] == level)]


@pytest.mark.both_dbs
def test_archive_disk_full_pauses_capture_and_recovers_when_space_returns(
    tmp_path, dovecot, imap_user, monkeypatch, parse_worker, small_disk, db_url, request
):
    use_database(monkeypatch, db_url)
    config = daemon_config(tmp_path, dovecot, imap_user, monkeypatch)
    settings = load_settings(config).model_copy(update={"archive_dir": small_disk})
    repo = Repo(settings.database_url)
    request.addfinalizer(repo.dispose)  # also when an assertion fails: no connection left to the next test
    repo.upgrade()
    uids = dovecot.append_many(imap_user.name, "INBOX", [_bulky(n) for n in range(10)])
    archive = Archive(settings.archive_dir)
    daemon = Daemon(settings, Pipeline(settings, repo, archive, parse_worker), Metrics(["imap"]))
    with capture_logs() as logs:
        runner = _run(daemon)
        try:
            assert wait_for(lambda: _events(logs, "archive_unavailable", "debug"), 30), "no retry seen"
            stored, cursor = _state(repo)
            seen = [(e["event"], e["log_level"], e.get("error")) for e in logs if e["log_level"] != "info"]
            assert 0 < len(stored) < len(uids), f"the disk should have filled part-way; logged: {seen}"
            assert [uid for uid, _ in stored] == uids[: len(stored)]
            assert cursor is None or cursor <= stored[-1][0], "cursor ran ahead of committed mail"
            for _uid, sha in stored:
                archive.get(sha)  # everything the database knows is whole in the archive
            (first,) = _events(logs, "archive_unavailable", "error")  # one clear line, not one per retry
            assert "No space left on device" in first["error"]
            assert first["fix"]

            subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
            assert wait_for(lambda: len(_state(repo)[0]) == len(uids), 90), "not recovered"
        finally:
            _stop(daemon, runner)
    stored, cursor = _state(repo)
    assert [uid for uid, _ in stored] == uids  # each exactly once
    assert cursor == uids[-1]
    for _uid, sha in stored:
        archive.get(sha)
    assert _events(logs, "mailbox_recovered"), [(e["event"], e["log_level"]) for e in logs]
    assert not list(settings.archive_dir.rglob(".tmp-*")), "a partial blob was left behind"


def test_journal_takes_the_lines_of_written_blobs_on_a_full_disk(small_disk):
    """Blobs a batch wrote fill the disk (two writers: one fails, the other's blob fits in the room it
    freed). Their journal lines must still fit, or nothing commits and every retry needs room again:
    the journal gives up the reserve it keeps for this, and makes it again once there is room."""
    journal = Journal.beside(small_disk)
    at = datetime(2026, 1, 1)  # noqa: DTZ001 - naive UTC, as the journal keeps it
    journal.keep_reserve()  # as capture does before a batch's blobs: a new archive has no journal yet
    reserve = journal.directory / RESERVE
    assert reserve.stat().st_size > 0
    journal.append([CursorMoved("dana", "INBOX", 7, 0, at)])
    with pytest.raises(OSError, match="No space left"):
        _fill(small_disk / "blobs")
    batch = [CursorMoved("dana", "INBOX", 7, uid, at) for uid in range(1, 60)]  # more than a page
    journal.append(batch)
    assert [e.last_uid for e in journal if isinstance(e, CursorMoved)] == list(range(60))
    assert not reserve.exists()  # the disk is still full: not made again
    (small_disk / "blobs").unlink()
    journal.append([CursorMoved("dana", "INBOX", 7, 60, at)])
    assert reserve.stat().st_size > 0


def test_blobs_a_batch_left_uncommitted_are_named_on_a_full_disk_not_written_again(small_disk, tmp_path):
    """A batch staged its blobs and then did not commit (its database refused, the process died): they
    fill the disk. The retry must name them as they are; writing them again would need room."""
    archive, journal = Archive(small_disk), Journal.beside(small_disk)
    repo = Repo(f"sqlite:///{tmp_path / 'mailsync.db'}")
    repo.upgrade()
    raws = [RawMessage(_bulky(n), Provenance("dana", "INBOX", 7, n + 1)) for n in range(10)]
    staged = _stage_until_full(archive, raws)  # the batch that never committed
    assert 0 < staged < len(raws)
    captured = capture(repo, archive, journal, raws[:staged], "dana")
    assert [c.outcome for c in captured] == ["new"] * staged
    for raw in raws[:staged]:
        assert archive.get(hashlib.sha256(raw.data).hexdigest()) == raw.data
    repo.dispose()


def _stage_until_full(archive: Archive, raws: list[RawMessage]) -> int:
    for count, raw in enumerate(raws):
        try:
            archive.stage(raw.data, hashlib.sha256(raw.data).hexdigest())
        except ArchiveError:
            return count
    return len(raws)


def _fill(path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, os.urandom(4096))
    finally:
        os.close(fd)


def test_locked_database_pauses_capture_and_recovers_when_released(
    tmp_path, dovecot, imap_user, monkeypatch, parse_worker
):
    settings = load_settings(daemon_config(tmp_path, dovecot, imap_user, monkeypatch))
    repo = Repo(settings.database_url)
    repo.upgrade()
    uids = dovecot.append_many(imap_user.name, "INBOX", [mail(f"locked {n}") for n in range(3)])
    # Another program holds the write lock for longer than the busy timeout.
    blocker = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    daemon = Daemon(
        settings, Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker), Metrics(["imap"])
    )
    with capture_logs() as logs:
        runner = _run(daemon)
        try:
            assert wait_for(lambda: _events(logs, "database_unavailable"), 40), "lock not reported"
            (first,) = _events(logs, "database_unavailable", "error")
            assert "locked" in first["error"]
            assert _state(repo) == ([], None)  # nothing half-written, the cursor untouched
            blocker.execute("ROLLBACK")
            blocker.close()
            assert wait_for(lambda: len(_state(repo)[0]) == len(uids), 60), "not recovered"
        finally:
            _stop(daemon, runner)
    stored, cursor = _state(repo)
    assert [uid for uid, _ in stored] == uids
    assert cursor == uids[-1]
    assert _events(logs, "mailbox_recovered")
    with repo.session() as session:
        assert session.scalar(select(func.count()).select_from(m.Message)) == len(uids)
    repo.dispose()
