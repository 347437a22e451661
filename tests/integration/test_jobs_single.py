"""Jobs stay single across processes: three real OS processes at once, on SQLite and on PostgreSQL.

Digests: three `mailsync digest --send` processes (forks of one server that imported the CLI, so each is
a real process with its own connections) send to a real aiosmtpd that holds every DATA until each
process has either reached DATA or exited: nothing is recorded `sent` while they race, so a second
process that would resend a digest reaches the relay too and is counted. The relay must get exactly one
digest per (rep, kind, period), a `sending` row left by a SIGKILL after SMTP (the `after_smtp` fault
point) must be resent by exactly one of them, and the others say "being sent by another mailsync process".

Daily jobs: three processes build the real daemon and run its no-reply and retention jobs at once (a
start file releases them together): each job runs once for its period, one `job_run` row, one effect.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, text, update

from bench.mailsync_runs import log_events
from config.settings import load_settings
from mailsync.approval.send import Recipient, slot
from mailsync.faults import ENV as FAULT_ENV
from storage import models as m
from storage.eventlog import EventLog
from storage.models import db_time
from storage.repo import Repo
from tests.conftest import ROOT, pg_copy_url, write_config
from tests.integration.test_digest_send import DANA, KEY_ENV, MIA, SAM, Setup, demo_setup
from tests.support.smtp import HOST, SmtpServer, _Handler

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from tests.support.forkserver import ForkedProcess

PROCESSES = 3
SETTLE_TIMEOUT = 120.0  # seconds: a guard against a hang, never a measure
IN_PROGRESS = "being sent by another mailsync process"


@dataclass
class _Held(_Handler):
    """Answers DATA only once the gate is open; counts the DATA commands that arrived meanwhile."""

    gate: threading.Event = field(default_factory=threading.Event)
    arrived: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            self.arrived += 1
        await asyncio.get_running_loop().run_in_executor(None, self.gate.wait)
        return await super().handle_DATA(server, session, envelope)


class HeldSmtp(SmtpServer):
    """The test SMTP server (tests/support/smtp.py), plain, whose answer to DATA waits, after `hold()`,
    until `release_when_settled()` opens the gate. Senders wait up to two minutes (`[smtp] timeout`)."""

    def __init__(self) -> None:
        super().__init__()
        self._controller.loop.close()  # the plain server's, never started: replaced by the held one
        self._handler = self._held = _Held(users={})
        self.open()
        self._controller = Controller(self._held, hostname=HOST, port=self.port, server_hostname="localhost")

    def smtp_toml(self, **kwargs: object) -> str:
        return super().smtp_toml(**kwargs).replace("timeout = 10", "timeout = 120")  # type: ignore[arg-type]

    def hold(self) -> None:
        with self._held.lock:
            self._held.arrived = 0
        self._held.gate.clear()

    def release_when_settled(self, procs: list[ForkedProcess]) -> None:
        """Open the gate once every process is held at DATA or has exited: from then on nothing can
        change until the relay answers, so each that would send a digest has shown it."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            with self._held.lock:
                arrived = self._held.arrived
            if arrived + sum(p.poll() is not None for p in procs) >= len(procs):
                break
            if time.monotonic() > deadline:
                self.open()
                pytest.fail(f"after {SETTLE_TIMEOUT} s: {arrived} process(es) at DATA of {len(procs)}")
            time.sleep(0.02)
        self.open()

    def open(self) -> None:
        self._held.gate.set()


@pytest.fixture
def held_smtp():
    with HeldSmtp() as server:
        yield server


@pytest.fixture
def setup(tmp_path, held_smtp, monkeypatch, db_backend, request):
    """A copy of the demo on the test's database, every rep due all day (send_at 00:00)."""
    setup = demo_setup(request, tmp_path, held_smtp, monkeypatch, db_backend)
    setup.config.write_text(setup.config.read_text().replace('send_at = "07:30"', 'send_at = "00:00"'))
    setup.settings = load_settings(setup.config)
    yield setup
    setup.repo.dispose()


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "MAILSYNC_CONFIG")}
    env |= {KEY_ENV: os.environ[KEY_ENV], "MAILSYNC_LOG_FORMAT": "json"}
    if fault:
        env[FAULT_ENV] = fault
    return env


def send_at_once(forks, setup, tmp_path, *rep: str) -> list[tuple[int, Path]]:
    """PROCESSES `mailsync digest --send [--rep R]` at once, the relay held until each reached DATA or
    exited; (exit code, log) of each."""
    argv = ["-c", str(setup.config), "digest", "--send", *(["--rep", *rep] if rep else [])]
    logs = [tmp_path / f"digest-{i}.log" for i in range(PROCESSES)]
    setup.server.hold()
    procs = [forks.start(argv, env=_env(), cwd=setup.config.parent, log=log) for log in logs]
    try:
        setup.server.release_when_settled(procs)
        codes = [p.wait(SETTLE_TIMEOUT) for p in procs]
    finally:
        setup.server.open()  # never leave a sender hanging on a failed test
    return list(zip(codes, logs, strict=True))


def per_digest(setup, received) -> Counter[tuple[str, str, str]]:
    """How many copies of each (kind, rep, period) digest the relay got, by its X-Mailsync-Digest token."""
    with setup.repo.session() as s:
        rows = {r.token: (r.kind, r.rep, r.period) for r in s.scalars(select(m.DigestSend))}
    return Counter(rows[got.message["X-Mailsync-Digest"]] for got in received)


def senders_of(outputs, rep: str) -> list[int]:
    """Which processes said they sent a digest to `rep` (mia: her manager digest; her own has nothing)."""
    return [i for i, out in enumerate(texts(outputs)) if f"\n{rep}: sent, " in f"\n{out}"]


def texts(outputs) -> list[str]:
    return [log.read_text(errors="replace") for _, log in outputs]


@pytest.mark.both_dbs
def test_three_senders_at_once_send_each_rep_one_digest_a_period(setup, forks, tmp_path):
    outputs = send_at_once(forks, setup, tmp_path)
    assert [code for code, _ in outputs] == [0] * PROCESSES, texts(outputs)
    got = per_digest(setup, setup.server.messages)
    assert set(got.values()) == {1}, got
    assert {(kind, rep) for kind, rep, _ in got} == {("rep", DANA), ("rep", SAM), ("manager", MIA)}
    for rep in (DANA, SAM, MIA):
        assert len(senders_of(outputs, rep)) == 1, (rep, texts(outputs))
    assert all(r.status == "sent" for rep in (DANA, SAM, MIA) for r in setup.rows(rep))
    assert setup.outbox() == []


@pytest.mark.both_dbs
def test_a_digest_left_sending_by_a_crash_is_resent_by_exactly_one_of_three_processes(setup, forks, tmp_path):
    crashed = tmp_path / "crashed.log"
    argv = ["-c", str(setup.config), "digest", "--send", "--rep", DANA]
    code = forks.run(
        argv, env=_env("after_smtp"), cwd=setup.config.parent, log=crashed, timeout=SETTLE_TIMEOUT
    )
    assert code < 0, crashed.read_text(errors="replace")  # SIGKILLed after the relay accepted it
    [first] = setup.server.messages
    [row] = setup.rows()
    assert row.status == "sending"

    outputs = send_at_once(forks, setup, tmp_path)
    assert [code for code, _ in outputs] == [0] * PROCESSES, texts(outputs)
    after = setup.server.messages[1:]
    got = per_digest(setup, after)
    assert set(got.values()) == {1}, got  # dana's left-over digest once, sam's and mia's once
    assert {(kind, rep) for kind, rep, _ in got} == {("rep", DANA), ("rep", SAM), ("manager", MIA)}
    [resent] = [g for g in after if g.rcpt_tos == (DANA,)]
    assert resent.data == first.data  # the kept copy, byte for byte
    assert len(senders_of(outputs, DANA)) == 1, texts(outputs)
    [done] = setup.rows()
    assert (done.status, done.token) == ("sent", row.token)
    assert setup.outbox() == []


@pytest.mark.both_dbs
def test_the_others_report_in_progress_while_one_process_sends_a_reps_digest(setup, forks, tmp_path):
    outputs = send_at_once(forks, setup, tmp_path, DANA)
    assert [code for code, _ in outputs] == [0] * PROCESSES, texts(outputs)
    assert [got.rcpt_tos for got in setup.server.messages] == [(DANA,)]
    said = [next(line for line in out.splitlines() if line.startswith(f"{DANA}:")) for out in texts(outputs)]
    assert sorted(line.split(": ", 1)[1].split(",")[0] for line in said) == [IN_PROGRESS, IN_PROGRESS, "sent"]
    [row] = setup.rows()
    assert row.status == "sent"


def test_a_row_claimed_by_a_sender_without_the_lease_gives_in_progress_not_a_second_digest(
    tmp_path, held_smtp, monkeypatch, request
):
    """The database's own guard under the lease (storage/models.py: one row per rep, kind and period), on
    PostgreSQL where it can be seen to wait: another sender's row, not yet committed when this sender
    looked, makes this one's INSERT wait for it, fail, and report in_progress; it sends nothing."""
    var, url = request.getfixturevalue("demo_pg")
    setup = Setup(tmp_path, held_smtp, var, monkeypatch, pg_copy_url(request, url))
    now = datetime(2031, 3, 4, 8, tzinfo=UTC)
    period, _ = slot(Recipient.outside(DANA), setup.settings.digest, now)  # dana has the [digest] defaults
    outcome = []
    try:
        with setup.repo.session() as rival:  # committed when the block ends
            rival.add(m.DigestSend(token="rival", rep=DANA, kind="rep", period=period,
                                   message_id="<digest.rival@northwind.example>", status="sending", items=[]))  # fmt: skip
            rival.flush()  # the row is written, its unique key locked, nothing committed
            sender = setup.sender()
            worker = threading.Thread(target=lambda: outcome.append(sender.send_now(DANA, now)))
            worker.start()
            _wait_for_lock_wait(setup.repo)  # the sender's INSERT waits for the rival's transaction
        worker.join(SETTLE_TIMEOUT)
        [result] = outcome
        assert (result.status, result.reason) == ("skipped", "in_progress")
        assert held_smtp.messages == []
        assert [(r.token, r.status) for r in setup.rows()] == [("rival", "sending")]
    finally:
        setup.repo.dispose()


def _wait_for_lock_wait(repo: Repo) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while True:
        with repo.engine.connect() as conn:
            if conn.execute(query).scalar():
                return
        if time.monotonic() > deadline:
            pytest.fail("the sender never waited on the rival's row")
        time.sleep(0.02)


# --- the daily jobs ----------------------------------------------------------------------------------

JOBS = """
import sys, time
from pathlib import Path
from config.settings import load_settings
from mailsync.logs import configure_logging
from mailsync.mail.parse_worker import configured_pool
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage.archive import open_store
from storage.repo import Repo

configure_logging(json=True, level="info")
config, ready, go = (Path(arg) for arg in sys.argv[1:])
settings = load_settings(config)
pipeline = Pipeline(settings, Repo(settings.database_url), open_store(settings), configured_pool(settings))
daemon = Daemon(settings, pipeline, Metrics([]))  # the daemon `mailsync run` builds, not started
print(daemon.leases.holder, flush=True)
ready.touch()
while not go.exists():
    time.sleep(0.005)
daemon.no_reply_job()
daemon.retention_job()
pipeline.repo.dispose()
"""


@pytest.fixture
def jobs_config(tmp_path, db_backend, request):
    """A copy of the demo, one of its messages dated 2001 (older than any cutoff), keep_years = 1."""
    if db_backend == "postgresql":
        var, url = request.getfixturevalue("demo_pg")
        database_url = pg_copy_url(request, url)
    else:
        var, database_url = request.getfixturevalue("demo_var"), None
    shutil.copytree(var, tmp_path / "var")
    config = write_config(tmp_path, "\n[retention]\nkeep_years = 1\n", database_url=database_url)
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as s:
            oldest = s.scalar(select(m.Message.id).order_by(m.Message.id).limit(1))
            s.execute(
                update(m.Message)
                .where(m.Message.id == oldest)
                .values(sent_at=db_time(datetime(2001, 1, 2, tzinfo=UTC)))
            )
    finally:
        repo.dispose()
    return config, oldest


@pytest.mark.both_dbs
def test_three_processes_run_the_no_reply_and_retention_jobs_once(jobs_config, tmp_path):
    config, oldest = jobs_config
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(PROCESSES)]
    logs = [tmp_path / f"jobs-{i}.log" for i in range(PROCESSES)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    try:
        for flag, log in zip(ready, logs, strict=True):
            with log.open("wb") as out:
                command = [sys.executable, "-c", JOBS, str(config), str(flag), str(go)]
                procs.append(subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out, stderr=out))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not all(flag.exists() for flag in ready):  # each built its daemon: now all at once
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            assert time.monotonic() < deadline, "the job processes never got ready"
            time.sleep(0.02)
        go.touch()
        codes = [p.wait(SETTLE_TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * PROCESSES, [log.read_text() for log in logs]
    holders = [log.read_text().splitlines()[0] for log in logs]
    events = [[e["event"] for e in log_events(log)] for log in logs]
    ran = Counter(e for got in events for e in got)
    assert (ran["no_reply_job_done"], ran["no_reply_job_skipped"]) == (1, PROCESSES - 1), events
    assert (ran["retention_job_done"], ran["retention_applied"]) == (1, 1), events
    settings = load_settings(config)
    retention = [e for e in EventLog(settings.events_dir) if e.kind == "retention_applied"]
    assert len(retention) == 1
    assert retention[0].payload["messages"] >= 1
    repo = Repo(settings.database_url)
    try:
        with repo.session() as s:
            runs = s.execute(select(m.JobRun.job, m.JobRun.holder, m.JobRun.finished_at)).all()
            assert s.get(m.Message, oldest) is None  # retention's effect
    finally:
        repo.dispose()
    assert sorted(job for job, _, _ in runs) == ["no-reply", "retention"]
    assert all(holder in holders and finished is not None for _, holder, finished in runs), runs
