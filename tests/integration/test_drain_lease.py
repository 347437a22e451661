"""Processing runs in one process at a time (the `job:drain` lease, storage/leases.py): a process that
finds another one draining leaves its captured mail queued, and the drainer processes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from config.settings import load_settings
from mailsync import faults
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import leases, mailstore
from storage import models as m
from storage.archive import Archive
from storage.records import Provenance, RawMessage
from tests.integration.test_daemon import running, wait_for
from tests.support.config import imap_config
from tests.support.mail import plain_mail

pytestmark = pytest.mark.both_dbs

OWNER = "dana@northwind.example"


def raw(n: int, thread: int) -> RawMessage:
    """Message n of a 4-message conversation `thread`: replies name the first, so they share a thread."""
    refs = f"References: <t{thread}-0@acme.example>\r\n" if n % 4 else ""
    data = (
        f"From: Rachel Kim <rachel@acme.example>\r\nTo: {OWNER}\r\nSubject: Re: pricing {thread}\r\n"
        f"Date: Mon, 04 Mar 2024 10:{n % 60:02d}:00 +0000\r\n"
        f"Message-ID: <t{thread}-{n % 4}@acme.example>\r\n{refs}\r\n"
        f"Could you send pricing for {thread}? ({n})\r\n"
    ).encode()
    return RawMessage(data, Provenance("dana", "INBOX", 1, n + 1))


def statuses(repo) -> dict[str, int]:
    with repo.session() as session:
        return dict(session.execute(select(m.Message.status, func.count()).group_by(m.Message.status)).all())


def test_a_process_that_finds_another_draining_leaves_its_mail_queued(pipeline, repo):
    pipeline.capture([raw(n, n // 4) for n in range(8)], OWNER)
    with repo.session() as session:
        assert leases.take(session, leases.DRAIN, "other-host:1:abc", 60) is not None
    assert pipeline.drain() == {}  # the other process drains: nothing here
    assert statuses(repo) == {"pending": 8}
    with repo.session() as session:
        leases.release(session, leases.DRAIN, "other-host:1:abc")
    done = pipeline.drain()
    assert sorted(done.values()) == ["new"] * 8
    assert statuses(repo) == {"parsed": 8}
    with repo.session() as session:  # given back: the next process takes it at once
        assert leases.take(session, leases.DRAIN, "other-host:1:abc", 60) is not None


def test_a_drainer_killed_on_this_host_holds_nothing(pipeline, repo):
    # A finished child's pid: on this host, and no process has it any more (kill -9 leaves the lease).
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead = f"{socket.gethostname()}:{int(child.stdout)}:abc"
    alive = f"{socket.gethostname()}:{os.getpid()}:abc"
    assert not leases.holder_alive(dead)
    assert leases.holder_alive(alive)
    assert leases.holder_alive(f"another-host:{int(child.stdout)}:abc")  # can't tell: its lease runs out
    pipeline.capture([raw(n, n // 4) for n in range(4)], OWNER)
    with repo.session() as session:
        assert leases.take(session, leases.DRAIN, dead, 600) is not None
    assert sorted(pipeline.drain().values()) == ["new"] * 4  # taken over at once, not in ten minutes


def test_two_processes_draining_one_queue_process_each_message_once(settings, repo, parse_worker):
    # Two pipelines with their own holders stand for two processes on one database.
    first, second = (Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker) for _ in "ab")
    assert first.holder != second.holder
    first.capture([raw(n, n // 4) for n in range(120)], OWNER)
    results: list[dict[int, str]] = []
    start = threading.Barrier(2)

    def run(pipeline: Pipeline) -> None:
        start.wait()
        results.append(pipeline.drain())

    workers = [threading.Thread(target=run, args=(p,)) for p in (first, second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert len(results) == 2
    assert not set(results[0]) & set(results[1])  # no message processed twice
    assert statuses(repo) == {"parsed": 120}  # none quarantined, none left behind
    with repo.session() as session:
        assert mailstore.backlog(session) == 0
        assert session.scalar(select(func.count()).select_from(m.Thread)) == 30


def test_a_drain_longer_than_the_mailbox_lease_loses_nothing_and_keeps_the_mailbox(
    tmp_path, dovecot, imap_user, monkeypatch, pipeline, repo
):
    """The drain after a pass runs past the mailbox's lease (1 s; each processing commit takes 1.5 s
    here) and nothing renews the lease meanwhile: with no other process about, the poller takes it
    again and goes on (the next mail is captured without waiting for the next poll), logs no
    lease_lost, and processes each message once. A clean stop gives the mailbox back at once."""
    dovecot.append_many(imap_user.name, "INBOX", [plain_mail(f"backlog {k}") for k in range(4)])
    matched: list[int] = []
    daemon = _daemon(tmp_path, dovecot, imap_user, monkeypatch, pipeline)
    with (
        faults.on("during_match", lambda: matched.append(1)),
        faults.on("after_commit", lambda: time.sleep(1.5)),
        capture_logs() as logs,
        running(daemon),
    ):
        assert wait_for(lambda: len(matched) == 4 and not _backlog(repo), 30), "backlog not processed"
        # Committed; the drain ends 1.5 s later, past the lease. Only a poller that goes on captures this.
        dovecot.append(imap_user.name, "INBOX", plain_mail("after the long drain"))
        assert wait_for(lambda: len(matched) == 5 and not _backlog(repo), 15), "mail after it not processed"
    assert [e for e in logs if e["event"] == "lease_lost"] == []
    assert len(matched) == 5  # each message processed once
    with repo.session() as session:
        assert session.scalar(select(func.count()).select_from(m.Message)) == 5
        # Given back on the clean stop: another process takes it at once, not after it expires.
        assert leases.take(session, "mailbox:imap", "other-host:1:abc", 600) is not None


@pytest.mark.usefixtures("debug_logging")
def test_a_poller_whose_mailbox_was_taken_during_its_drain_leaves_it_to_the_other_process(
    tmp_path, dovecot, imap_user, monkeypatch, pipeline, repo
):
    """Another process takes the mailbox while this one's drain outlasts the lease: this one lets it
    go quietly (no lease_lost: nothing was being written) and stops polling it."""
    dovecot.append_many(imap_user.name, "INBOX", [plain_mail(f"backlog {k}") for k in range(2)])
    other = "other-host:1:abc"

    def taken_over() -> None:
        time.sleep(1.5)  # past this process's lease
        with repo.session() as session:
            assert leases.take(session, "mailbox:imap", other, 600) is not None

    daemon = _daemon(tmp_path, dovecot, imap_user, monkeypatch, pipeline)
    with faults.on("after_commit", taken_over), capture_logs() as logs, running(daemon):
        assert wait_for(lambda: any(e["event"] == "lease_handed_over" for e in logs), 30), logs
    assert [e for e in logs if e["event"] == "lease_lost"] == []
    assert statuses(repo) == {"parsed": 2}
    with repo.session() as session:
        assert leases.holder_of(session, "mailbox:imap") == other


def _daemon(tmp_path, dovecot, imap_user, monkeypatch, pipeline) -> Daemon:
    """A daemon on the user's INBOX with the shortest lease (1 s) and no poll but the first for 10 min."""
    extra = '\n[daemon]\npoll_interval = 600\njitter = 0\nlease_seconds = 1\n[web]\nlisten = "127.0.0.1:0"\n'
    config = imap_config(
        tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"], extra=extra
    )
    return Daemon(load_settings(config), pipeline, Metrics(["imap"]))


def _backlog(repo) -> int:
    with repo.session() as session:
        return mailstore.backlog(session)


def test_a_drainer_whose_lease_was_taken_stops_after_its_batch(pipeline, repo, monkeypatch):
    # Paused past its lease mid-chunk (here: the lease handed to another process after the first batch),
    # a drainer must not go on with the next batch beside the process that drains now.
    from mailsync.pipeline import process  # noqa: PLC0415

    monkeypatch.setattr(process, "BATCH", 4)
    pipeline.capture([raw(n, n // 4) for n in range(8)], OWNER)
    other = "other-host:1:abc"

    def handed_over() -> None:
        with repo.session() as session:
            session.execute(update(m.Lease).where(m.Lease.name == leases.DRAIN).values(holder=other))

    monkeypatch.setattr(faults, "point", lambda name: handed_over() if name == "after_commit" else None)
    done = pipeline.drain()
    assert sorted(done.values()) == ["new"] * 4  # the batch it had committed, not the next
    assert statuses(repo) == {"parsed": 4, "pending": 4}
    with repo.session() as session:
        assert leases.holder_of(session, leases.DRAIN) == other  # not taken back, not released


def test_one_drain_gives_the_lease_back_between_chunks_and_stops_when_asked(pipeline, repo, monkeypatch):
    # One drain runs the whole queue (batches parsed ahead), giving `job:drain` back every DRAIN_CHUNK
    # messages; a stop set meanwhile ends it after the batch in hand, batches parsed ahead left queued.
    from mailsync.pipeline import process  # noqa: PLC0415

    monkeypatch.setattr(process, "BATCH", 4)
    monkeypatch.setattr(process, "DRAIN_CHUNK", 8)
    pipeline.capture([raw(n, n // 4) for n in range(40)], OWNER)
    given_back: list[int] = []
    release = leases.release

    def counted(session, name, holder):
        given_back.append(statuses(repo).get("parsed", 0))
        release(session, name, holder)

    monkeypatch.setattr(leases, "release", counted)
    stop = threading.Event()
    commits = iter(range(1, 100))
    monkeypatch.setattr(
        faults, "point", lambda name: stop.set() if name == "after_commit" and next(commits) == 6 else None
    )
    done = pipeline.drain(stop=stop)
    assert sorted(done.values()) == ["new"] * 24  # six batches of four: the sixth committed, then stopped
    assert statuses(repo) == {"parsed": 24, "pending": 16}
    assert given_back == [8, 16, 24]  # after each chunk of 8, and when the drain ended
    with repo.session() as session:
        assert leases.holder_of(session, leases.DRAIN) is None
