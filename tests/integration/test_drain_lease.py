"""Processing runs in one process at a time (the `job:drain` lease, storage/leases.py): a process that
finds another one draining leaves its captured mail queued, and the drainer processes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest
from sqlalchemy import func, select

from mailsync.pipeline.ingest import Pipeline
from storage import leases, mailstore
from storage import models as m
from storage.archive import Archive
from storage.records import Provenance, RawMessage

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
