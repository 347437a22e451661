"""kill -9 between "the relay accepted the digest" and "recorded as sent": a real `mailsync digest --send`
process, SIGKILLed at the `after_smtp` fault point, then run again, against a real aiosmtpd.

The side this errs on (mailsync/approval/send.py): the rep may get the digest twice, never zero times,
and both copies carry one Message-ID (and the same bytes: numbers, links), so a reply or a click on
either means the same thing and mail clients that deduplicate by Message-ID show one. On SQLite and on
PostgreSQL (a copy of the demo imported into it once).
"""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

from mailsync.faults import ENV as FAULT_ENV
from storage import models as m
from tests.integration.test_digest_send import DANA, KEY_ENV, demo_setup

RUN_TIMEOUT = 120.0


@pytest.fixture
def setup(tmp_path, smtp_server, monkeypatch, db_backend, request):
    setup = demo_setup(request, tmp_path, smtp_server, monkeypatch, db_backend)
    yield setup
    setup.repo.dispose()


def run(forks, setup, log, fault=None) -> int:
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "MAILSYNC_CONFIG")}
    env |= {KEY_ENV: os.environ[KEY_ENV], "MAILSYNC_LOG_FORMAT": "json"}
    if fault:
        env[FAULT_ENV] = fault
    argv = ["-c", str(setup.config), "digest", "--send", "--rep", DANA]
    return forks.run(argv, env=env, cwd=setup.config.parent, log=log, timeout=RUN_TIMEOUT)


@pytest.mark.both_dbs
def test_sigkill_after_smtp_sends_again_with_the_same_message_id_and_then_never(
    tmp_path, smtp_server, setup, forks
):
    log = tmp_path / "digest.log"
    code = run(forks, setup, log, fault="after_smtp")
    assert code == -signal.SIGKILL, log.read_text(errors="replace")
    [first] = smtp_server.messages  # the relay has it ...
    [row] = setup.rows()
    assert row.status == "sending"  # ... the database does not know
    assert setup.outbox() == [f"{row.token}.eml"]

    for _ in range(2):  # the restart sends it again; after that, never again this period
        assert run(forks, setup, log) == 0, log.read_text(errors="replace")
    received = smtp_server.messages
    assert len(received) == 2
    assert {got.message["Message-ID"] for got in received} == {row.message_id}
    assert received[1].data == first.data  # the kept copy, byte for byte
    [after] = setup.rows()
    assert (after.status, after.token, after.items) == ("sent", row.token, row.items)
    assert setup.outbox() == []
    with setup.repo.session() as s:
        assert s.scalar(select(m.DigestSend.sent_at).where(m.DigestSend.id == row.id)) is not None
