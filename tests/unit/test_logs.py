"""Logging: every line of a JSON log stream is JSON, whoever logged it."""

from __future__ import annotations

import json
import logging
import threading

import pytest
import structlog

from mailsync.logs import configure_logging


@pytest.fixture
def json_logging():
    old = structlog.get_config()
    configure_logging(json=True, level="info")
    yield
    configure_logging(json=False, level="warning")  # as tests/conftest.py leaves it
    structlog.configure(**old)


def test_library_warnings_come_out_as_json_lines_beside_our_events(json_logging, capsys):
    logging.getLogger("apscheduler.scheduler").warning(
        "Run time of job %r was missed by %s", "poll dana", "0:00:03"
    )
    structlog.get_logger().warning("mailbox_failed", mailbox="dana")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade  -> 0001")  # routine: not shown
    lines = capsys.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines]  # fails on any plain-text line
    assert [r["event"] for r in records] == [
        "Run time of job 'poll dana' was missed by 0:00:03",
        "mailbox_failed",
    ]
    assert records[0]["logger"] == "apscheduler.scheduler"
    assert records[0]["level"] == "warning"
    assert all("timestamp" in r for r in records)


def test_mail_parsers_routine_warnings_stay_out_and_its_errors_come_through(json_logging, capsys):
    logging.getLogger("mailparser.core").warning("Email content 'calendar' not handled")
    logging.getLogger("mailparser.core").error("cannot decode the payload")
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [r["event"] for r in records] == ["cannot decode the payload"]


def test_events_and_library_records_from_many_threads_never_share_a_line(json_logging, capsys):
    # The daemon logs from its polls, APScheduler's threads and the web app at once; two writers with
    # locks of their own joined lines now and then (16 of 12,000 here), breaking the JSON stream.
    def ours() -> None:
        for i in range(1500):
            structlog.get_logger().info("poll_step", i=i, pad="x" * 200)

    def library() -> None:
        for i in range(1500):
            logging.getLogger("apscheduler.scheduler").warning("job %s missed %s", i, "y" * 200)

    threads = [threading.Thread(target=work) for work in (ours, library, ours, library)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6000
    assert all(isinstance(json.loads(line), dict) for line in lines)
