"""The parse pool: a batch over several killable workers, results in order, a hanging parse killed alone."""

from __future__ import annotations

import os
import signal

import pytest
import zstandard

from config.errors import ParseError
from config.settings import ParseLimits
from mailsync.mail.parse_worker import ParseJob, ParsePool
from nlp.clean import read_body
from storage.archive import Archive

LIMITS = ParseLimits()
# Takes far longer than the timeout below to parse: a stand-in for a parser spinning on hostile mail.
SLOW = b"From: a@x.example\nSubject: slow\nContent-Type: text/plain\n\n" + b"line of text\n" * 2_000_000


def job(subject: str) -> ParseJob:
    return ParseJob(f"From: a@x.example\nSubject: {subject}\n\nbody\n".encode(), subject, "k")


def test_a_batch_is_parsed_in_order_with_failures_in_their_places():
    with ParsePool(LIMITS, size=2) as pool:
        results = pool.parse_many([job("one"), ParseJob(b"", "empty", "k"), job("three")])
    assert [r.subject if not isinstance(r, ParseError) else "error" for r in results] == [
        "one",
        "error",
        "three",
    ]
    assert "empty message" in str(results[1])


def test_the_worker_reads_the_body_as_matching_would():
    """Matching's reading of a body (the sender's text, the signature) comes back with the parse, as
    nlp.clean.read_body gives it, so that the processing thread need not do it."""
    raw = (
        b"From: Ann <ann@x.example>\nSubject: price\n\nThe price is fine.\n\n-- \nAnn Lee\nBuyer, X Ltd\n\n"
        b"On Monday Bob wrote:\n> the old text\n"
    )
    with ParsePool(LIMITS, size=1) as pool:
        parsed = pool.parse(raw, fingerprint="f", archive_key="k")
    assert parsed.reading == read_body(parsed.body_text)
    assert parsed.reading == ("The price is fine.", ("Ann Lee", "Buyer, X Ltd"))


def test_a_hanging_parse_is_killed_and_its_neighbours_are_parsed():
    with ParsePool(LIMITS, size=2) as pool:
        pool.parse_many([job("warm a"), job("warm b")])  # both started: start-up is not timed
        pool.timeout = 0.05
        results = pool.parse_many([job("before"), ParseJob(SLOW, "slow", "k"), job("after")])
        assert isinstance(results[1], ParseError)
        assert "timed out" in str(results[1])
        assert [results[0].subject, results[2].subject] == ["before", "after"]
        pool.timeout = 30
        assert pool.parse_many([job("again")])[0].subject == "again"  # the killed worker was replaced


def test_warm_starts_every_worker_without_waiting_for_it():
    with ParsePool(LIMITS, size=2) as pool:
        pool.warm()  # returns at once: the workers import in the background
        started = [worker._process for worker in pool.workers]
        assert all(process is not None and process.poll() is None for process in started)
        assert all(worker._conn is None for worker in pool.workers)  # none waited for its "ready"
        assert pool.parse(b"From: a@x.example\n\nhi\n", fingerprint="f", archive_key="k").fingerprint == "f"


def test_a_hanging_message_among_those_sent_ahead_is_killed_alone():
    # One worker, so that the messages after the slow one wait in its pipe when it is killed: they go
    # again to the replacement, each parsed once, in its place.
    with ParsePool(LIMITS, size=1) as pool:
        pool.parse_many([job("warm")])
        pool.timeout = 0.05
        names = ["a", "b", "c", "slow", "d", "e", "f", "g", "h"]
        results = pool.parse_many([ParseJob(SLOW, "slow", "k") if n == "slow" else job(n) for n in names])
        pool.timeout = 30
    assert "timed out" in str(results[3])
    assert [r.subject for r in results if not isinstance(r, ParseError)] == [n for n in names if n != "slow"]


@pytest.mark.timeout(60)
def test_results_larger_than_a_pipe_come_back_while_messages_wait_ahead():
    # Each body parses to ~200 KB of text, more than a pipe holds: the worker must be able to send it
    # while this process still has messages to send (a send ahead that blocked would never return).
    big = "word " * 40_000
    jobs = [
        ParseJob(f"From: a@x.example\nSubject: {n}\n\n{big}\n".encode(), str(n), "k")
        if n % 3 == 0
        else job(str(n))
        for n in range(12)
    ]
    with ParsePool(LIMITS, size=1) as pool:
        results = pool.parse_many(jobs)
    assert [r.subject for r in results] == [str(n) for n in range(12)]
    assert all(len(r.body_text) > 150_000 for r in results[::3])


def test_a_worker_killed_between_batches_costs_no_message():
    # Killed from outside while idle (the kernel's OOM killer, an admin): the next batch finds its pipe
    # broken on the first send and goes to a new worker, no message blamed for a death it did not cause.
    with ParsePool(LIMITS, size=1) as pool:
        pool.parse_many([job("first")])
        process = pool.workers[0]._process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        results = pool.parse_many([job("b"), job("c"), job("d")])
    assert [r.subject if not isinstance(r, ParseError) else str(r) for r in results] == ["b", "c", "d"]


def test_jobs_naming_archived_blobs_are_read_and_checked_by_the_worker(tmp_path):
    # More jobs than are sent ahead, over two workers; a corrupt and a missing blob fail alone, with the
    # archive's own error, and the worker goes on.
    archive = Archive(tmp_path / "archive")
    keys = [archive.put(job(str(n)).raw) for n in range(40)]
    archive.path_for(keys[5]).write_bytes(zstandard.ZstdCompressor().compress(b"other bytes"))
    spec = archive.spec()
    jobs = [ParseJob(None, str(n), key, spec) for n, key in enumerate(keys)]
    jobs.append(ParseJob(None, "missing", "0" * 64, spec))
    with ParsePool(LIMITS, size=2) as pool:
        results = pool.parse_many(jobs)
    assert str(results[5]).startswith("archive: ")
    assert "corrupt" in str(results[5])
    assert str(results[-1]).startswith("archive: ")
    assert "missing" in str(results[-1])
    parsed = [(r.subject, r.fingerprint, r.archive_key) for n, r in enumerate(results[:-1]) if n != 5]
    assert parsed == [(str(n), str(n), keys[n]) for n in range(40) if n != 5]
