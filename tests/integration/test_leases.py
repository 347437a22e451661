"""Several daemons on one PostgreSQL: mailbox leases with fencing, single-run jobs, a safe `db upgrade`."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from bench.mailsync_runs import log_events
from config.errors import LeaseLost
from mailsync.pipeline.capture import CursorAt
from mailsync.pipeline.ingest import Pipeline
from mailsync.pipeline.sync_state import Cursor, load_cursor
from storage import mailstore
from storage import models as m
from storage.archive import Archive
from storage.leases import Leases, claim_run, holding, take, verify_lease
from storage.records import Provenance, RawMessage
from storage.repo import Repo, shipped_head
from tests.conftest import write_config
from tests.support.config import PASSWORD_ENV, imap_mailbox
from tests.support.mail import plain_mail

SHORT = 0.6  # seconds: a lease in the two-session tests
RENEWED = 30.0  # seconds: a lease that a slow machine cannot outlast within a test


@pytest.fixture
def two(pg_fresh_url):
    """Two processes' database handles on one PostgreSQL database."""
    repos = Repo(pg_fresh_url), Repo(pg_fresh_url)
    yield repos
    for repo in repos:
        repo.dispose()


def raw(uid: int, mailbox: str = "dana") -> RawMessage:
    data = plain_mail(f"lease {uid}", id_prefix="lease").replace(b"\n", b"\r\n")
    return RawMessage(data, Provenance(mailbox, folder="INBOX", uidvalidity=7, uid=uid))


def counts(repo: Repo) -> tuple[int, int]:
    with repo.session() as s:
        messages = s.scalar(select(func.count()).select_from(m.Message))
        copies = s.scalar(select(func.count()).select_from(m.Provenance))
    return messages, copies


def expire(repo: Repo, name: str = "mailbox:dana") -> None:
    """The lease runs out now, as if its time had passed: no sleep that a slow machine could outlast."""
    with repo.session() as s:
        s.execute(
            text("UPDATE lease SET expires_at = now() - interval '1 second' WHERE name = :name"),
            {"name": name},
        )


def test_a_lease_is_one_holders_until_it_expires_then_another_takes_it_with_a_new_token(two):
    a, b = (Leases(repo, RENEWED, 1, holder=h) for repo, h in zip(two, "ab", strict=True))
    first = a.mailbox("dana")
    assert first is not None
    assert b.mailbox("dana") is None  # running: not b's
    assert a.mailbox("dana") == first  # a renews it: same token
    expire(two[0])
    second = b.mailbox("dana")
    assert second is not None
    assert second.token == first.token + 1
    assert a.mailbox("dana") is None
    b.release_all()  # a clean stop: a takes over at once, not after the lease
    assert a.mailbox("dana").token == second.token + 1


def test_a_batch_whose_lease_expired_commits_nothing_and_moves_no_cursor(two, settings, parse_worker):
    """A process paused past its lease (SIGSTOP) wakes mid-batch: its capture must fail whole, whether
    another process took the mailbox over meanwhile or not (nobody can know it will not)."""
    repo_a, repo_b = two
    pipeline = Pipeline(settings, repo_a, Archive(settings.archive_dir), parse_worker)
    with repo_a.session() as s:
        mailstore.ensure_mailbox(s, "dana", "dana@northwind.example")
    a = Leases(repo_a, SHORT, 1, holder="a")
    lease = a.mailbox("dana")
    with holding(lease):
        pipeline.capture([raw(1)], "dana@northwind.example", CursorAt("dana", "INBOX", Cursor(7, 1)))
        assert counts(repo_a) == (1, 1)
        time.sleep(SHORT + 0.2)  # expired, nobody took it yet
        with pytest.raises(LeaseLost):
            pipeline.capture([raw(2)], "dana@northwind.example", CursorAt("dana", "INBOX", Cursor(7, 2)))
        assert Leases(repo_b, SHORT, 1, holder="b").mailbox("dana").token == lease.token + 1
        with pytest.raises(LeaseLost):
            pipeline.capture([raw(3)], "dana@northwind.example", CursorAt("dana", "INBOX", Cursor(7, 3)))
    assert counts(repo_a) == (1, 1)
    with repo_a.session() as s:
        assert load_cursor(s, "dana", "INBOX") == Cursor(7, 1)


def test_a_takeover_waits_for_the_batch_that_verified_the_lease(two):
    """verify_lease locks the lease row until the batch commits: a takeover racing it waits, then finds
    the lease renewed; there is no moment when both may write."""
    repo_a, repo_b = two
    lease = Leases(repo_a, RENEWED, 1, holder="a").mailbox("dana")
    with repo_a.session() as s:  # about to run out; each renewal then lasts RENEWED, far past this test
        s.execute(
            text("UPDATE lease SET expires_at = now() + interval '0.2 seconds' WHERE name = 'mailbox:dana'")
        )
    outcome = []
    with holding(lease), repo_a.session() as batch:
        verify_lease(batch, "dana")  # renewed for RENEWED, row locked until this commits
        time.sleep(0.3)  # past the lease as it was before the renewal
        racer = threading.Thread(
            target=lambda: outcome.append(Leases(repo_b, SHORT, 1, holder="b").mailbox("dana"))
        )
        racer.start()
        racer.join(0.3)
        assert racer.is_alive(), "the takeover did not wait for the batch holding the lease"
    racer.join(10)
    assert outcome == [None]


def test_processes_share_the_mailboxes_and_one_alone_takes_them_all(two):
    names = [f"m{i:02}" for i in range(30)]
    processes = [Leases(two[i % 2], 5.0, len(names), holder=f"p{i}") for i in range(3)]
    for process in processes:
        process.heartbeat()
    held: dict[str, str] = {}
    for _ in range(3):  # three rounds of polls: each process asks for every mailbox
        for process in processes:
            for name in names:
                lease = process.mailbox(name)
                if lease is not None:
                    held[name] = process.holder
    assert sorted(held) == names
    per_process = defaultdict(int)
    for holder in held.values():
        per_process[holder] += 1
    assert sorted(per_process.values()) == [10, 10, 10]


def test_on_sqlite_the_one_process_gets_every_lease(repo, settings, parse_worker):
    leases = Leases(repo, 60.0, 4)
    leases.heartbeat()
    got = [leases.mailbox(name) for name in ("a", "b", "c", "dana")]
    assert all(got)
    with repo.session() as s:
        mailstore.ensure_mailbox(s, "dana", "dana@northwind.example")
    pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)
    with holding(got[-1]):
        pipeline.capture([raw(1)], "dana@northwind.example", CursorAt("dana", "INBOX", Cursor(7, 1)))
    assert counts(repo) == (1, 1)


def test_a_daily_job_runs_once_per_period_across_processes(two):
    def claim(repo, holder, period):
        with repo.session() as s:
            return claim_run(s, "no-reply", period, holder)

    assert [claim(two[0], "a", "2026-11-30"), claim(two[1], "b", "2026-11-30")] == [True, False]
    assert claim(two[1], "b", "2026-12-01")


def test_the_digest_job_and_each_digest_belong_to_one_process(two):
    """The digest job runs where its lease is; and whatever runs, (rep, kind, period) is sent once."""
    with two[0].session() as s:
        assert take(s, "job:digests", "a", 300) is not None
    with two[1].session() as s:
        assert take(s, "job:digests", "b", 300) is None

    def sending(repo, token):
        with repo.session() as s:
            s.add(m.DigestSend(token=token, rep="dana@northwind.example", kind="rep", period="2026-11-30",
                               message_id=f"<{token}@x>", status="sending", items=[]))  # fmt: skip

    sending(two[0], "t1")
    with pytest.raises(IntegrityError):
        sending(two[1], "t2")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_db_upgrade_run_by_several_processes_at_once(backend, tmp_path, pg_cluster):
    url = pg_cluster.url(pg_cluster.create()) if backend == "postgresql" else "sqlite:///var/mailsync.db"
    config = write_config(tmp_path)
    env = {**os.environ, "MAILSYNC_DATABASE_URL": url}
    mailsync = [sys.executable, "-c", "from mailsync.cli import run; run()", "-c", str(config)]
    procs = [
        subprocess.Popen(
            [*mailsync, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert sum("schema upgraded" in out for out in outputs) == 1, outputs
    repo = Repo(url if backend == "postgresql" else f"sqlite:///{tmp_path}/var/mailsync.db")
    try:
        assert repo.schema_revisions()[0] == shipped_head()
    finally:
        repo.dispose()


# --- three real daemons ------------------------------------------------------------------------------

MAILBOXES = 30


def _wait(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class CursorWatch(threading.Thread):
    """Reads every folder cursor ten times a second; records any that moved backwards."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.repo = Repo(url)
        self.seen: dict[str, int] = {}
        self.backwards: list[tuple[str, int, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        query = text("SELECT mb.name, f.last_uid FROM folder_state f JOIN mailbox mb ON mb.id = f.mailbox_id")
        while not self.done.wait(0.1):
            with self.repo.engine.connect() as conn:
                for name, last_uid in conn.execute(query):
                    if last_uid < self.seen.get(name, 0):
                        self.backwards.append((name, self.seen[name], last_uid))
                    self.seen[name] = max(self.seen.get(name, 0), last_uid)

    def stop(self) -> None:
        self.done.set()
        self.join(10)
        self.repo.dispose()


class Daemons:
    """Three `mailsync run` processes on one PostgreSQL, syncing MAILBOXES Dovecot accounts."""

    def __init__(self, tmp_path, dovecot, url: str) -> None:
        self.dovecot = dovecot
        self.run = secrets.token_hex(3)
        self.users = [f"lease{self.run}-{i:02}" for i in range(MAILBOXES)]
        password = secrets.token_hex(8)
        for user in self.users:
            dovecot.add_user(user, password)
        mailboxes = "".join(
            imap_mailbox(dovecot, user, password_env=PASSWORD_ENV, name=f"m{i:02}", folders=["INBOX"])
            for i, user in enumerate(self.users)
        )
        daemon = "\n[daemon]\npoll_interval = 1\njitter = 0\nidle = false\nlease_seconds = 3\n"
        config = write_config(tmp_path, mailboxes + daemon + '[web]\nlisten = "127.0.0.1:0"\n')
        env = {**os.environ, PASSWORD_ENV: password, "MAILSYNC_DATABASE_URL": url,
               "MAILSYNC_LOG_FORMAT": "json"}  # fmt: skip
        command = [sys.executable, "-c", "from mailsync.cli import run; run()", "-c", str(config), "run"]
        self.logs = [tmp_path / f"daemon{i}.log" for i in range(3)]
        self.procs = []
        for i, log in enumerate(self.logs):
            # The first one kills itself (SIGKILL) in its 4th batch: blobs archived, nothing committed.
            fault = {"MAILSYNC_TEST_FAULT": "before_cursor:4"} if i == 0 else {}
            with log.open("wb") as stderr:
                self.procs.append(subprocess.Popen(command, env={**env, **fault}, stderr=stderr))
        self.repo = Repo(url)
        self.ids: list[str] = []

    def started(self) -> None:
        for log in self.logs:
            _wait(
                lambda log=log: any(e["event"] == "daemon_started" for e in log_events(log)),
                60,
                "daemon_started",
            )
        self.ids = [
            next(e["holder"] for e in log_events(log) if e["event"] == "daemon_started") for log in self.logs
        ]

    def holders(self) -> dict[str, str]:
        """mailbox lease -> its holder, for the leases running now."""
        with self.repo.session() as s:
            running = m.Lease.expires_at > func.timezone("UTC", func.now())
            rows = s.execute(
                select(m.Lease.name, m.Lease.holder).where(m.Lease.name.startswith("mailbox:"), running)
            )
            return dict(rows.all())

    def deliver(self, n: int) -> None:
        for user in self.users:
            self.dovecot.append_many(
                user, "INBOX", [plain_mail(f"{user} {k}", id_prefix=self.run) for k in range(n)]
            )

    def captured(self) -> int:
        return counts(self.repo)[0]

    def stop(self) -> list[int]:
        """SIGTERM the live ones (woken first); their exit codes."""
        codes = []
        for proc in self.procs[1:]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        if self.procs[0].poll() is None:
            self.procs[0].kill()
            self.procs[0].wait()
        return codes


@pytest.mark.slow
def test_three_daemons_share_thirty_mailboxes_through_a_kill_and_a_pause(tmp_path, dovecot, pg_fresh_url):
    """Every message once, no cursor backwards, every mailbox synced: while one daemon is SIGKILLed in the
    middle of a batch and another is SIGSTOPped past its lease and then woken up."""
    daemons = Daemons(tmp_path, dovecot, pg_fresh_url)
    watch = CursorWatch(pg_fresh_url)
    first, paused, _ = daemons.procs
    try:
        daemons.started()
        watch.start()
        shared = lambda: (h := daemons.holders()) and len(h) == MAILBOXES and len(set(h.values())) == 3  # noqa: E731
        _wait(shared, 30, "every mailbox held, each daemon holding its share")
        daemons.deliver(3)
        _wait(lambda: first.poll() is not None, 60, "the first daemon to kill itself mid-batch")
        assert first.returncode == -signal.SIGKILL
        _wait(lambda: daemons.captured() == 3 * MAILBOXES, 60, "the first mail, the dead daemon's included")
        _wait(lambda: daemons.ids[0] not in daemons.holders().values(), 30, "the dead daemon's leases taken")

        paused.send_signal(signal.SIGSTOP)  # wherever it is: mid-poll most likely
        paused_at = time.monotonic()
        daemons.deliver(2)
        _wait(
            lambda: set(daemons.holders().values()) == {daemons.ids[2]},
            30,
            "the paused daemon's leases taken",
        )
        # Up to 30 s of it: the paused daemon's open transaction holds the new messages' keys until the
        # server ends its idle session (idle_in_transaction_session_timeout, storage/repo.py).
        _wait(lambda: daemons.captured() == 5 * MAILBOXES, 120, "the second mail, by the one daemon left")
        assert time.monotonic() - paused_at > 3  # past its lease
        paused.send_signal(signal.SIGCONT)
        _wait(lambda: len(set(daemons.holders().values())) == 2, 30, "the woken daemon to get a share back")
        daemons.deliver(1)
        _wait(lambda: daemons.captured() == 6 * MAILBOXES, 60, "the third mail")
        _wait(lambda: all(watch.seen.get(f"m{i:02}") == 6 for i in range(MAILBOXES)), 30, "every cursor at 6")
    finally:
        codes = daemons.stop()
        watch.stop()
    with daemons.repo.session() as s:
        distinct = s.scalar(select(func.count(func.distinct(m.Message.message_id))))
        per_mailbox = dict(
            s.execute(select(m.Provenance.mailbox, func.count()).group_by(m.Provenance.mailbox)).all()
        )
    messages, copies = counts(daemons.repo)
    daemons.repo.dispose()
    assert codes == [0, 0], [log_events(log)[-3:] for log in daemons.logs[1:]]
    assert (messages, copies, distinct) == (6 * MAILBOXES, 6 * MAILBOXES, 6 * MAILBOXES)
    assert per_mailbox == {f"m{i:02}": 6 for i in range(MAILBOXES)}
    assert watch.backwards == []
    woken = [e.get("mailbox") for e in log_events(daemons.logs[1]) if e["event"] == "lease_lost"]
    print(f"the woken daemon found {len(woken)} lease(s) lost mid-poll: {woken}")


def test_after_a_drain_that_outlasted_it_the_lease_is_taken_again_unless_another_has_it(two):
    """The drain that ends a pass is not covered by the mailbox lease (storage/leases.py): after it the
    poller takes the lease again: the same token when nobody took it, none while another process holds
    it, a new one once that process let it go."""
    repo_a, repo_b = two
    a, b = Leases(repo_a, SHORT, 1, holder="a"), Leases(repo_b, SHORT, 1, holder="b")
    lease = a.mailbox("dana")
    with holding(lease):
        time.sleep(SHORT + 0.2)  # a long drain: expired, nobody took it
        assert a.renew()
        with repo_a.session() as s:
            verify_lease(s, "dana")  # the same token: a capture batch goes on
        time.sleep(SHORT + 0.2)
        assert b.mailbox("dana").token == lease.token + 1  # another process took it meanwhile
        assert not a.renew()
        with pytest.raises(LeaseLost), repo_a.session() as s:
            verify_lease(s, "dana")
        b.release_all()
        assert a.renew()
        with repo_a.session() as s:
            verify_lease(s, "dana")  # under the newer token
    assert a.mailbox("dana").token == lease.token + 2
