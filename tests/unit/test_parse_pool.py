"""The parse pool: a batch over several killable workers, results in order, a hanging parse killed alone."""

from __future__ import annotations

import multiprocessing

from config.errors import ParseError
from config.settings import ParseLimits
from mailsync.mail.parse_worker import ParseJob, ParsePool

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
    before = {p.pid for p in multiprocessing.active_children()}
    with ParsePool(LIMITS, size=2) as pool:
        pool.warm()  # returns at once: the workers import in the background
        started = [p for p in multiprocessing.active_children() if p.pid not in before]
        assert len([p for p in started if p.name == "mailsync-parse"]) == 2
        assert pool.parse(b"From: a@x.example\n\nhi\n", fingerprint="f", archive_key="k").fingerprint == "f"
