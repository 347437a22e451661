"""Crash safety: a real `mailsync sync --once` process SIGKILLed at every point, against a real Dovecot.

Each test runs the CLI in a process of its own on a fresh IMAP user and a fresh database, kills it
(with a fault point from mailsync/faults.py, or from outside at a random moment), runs it again until
it finishes, and checks the invariant: every message exactly once, every blob the database knows is
in the archive, no blob the database does not know, the cursor at the folder's last UID. Every fault
point is tried on SQLite, and those at the edges of the two transactions (capture's, processing's) on
PostgreSQL too; the random kills (slow) run on SQLite.

The processes are forks of one that has imported mailsync already (tests/support/forkserver.py):
each is still a separate `mailsync` process killed by a real SIGKILL, but a restart costs a fork
instead of ~3 s of imports.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.faults import ENV as FAULT_ENV
from mailsync.pipeline.staging import POOL_FROM
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import write_config
from tests.support.config import imap_mailbox
from tests.support.mail import plain_mail

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.forkserver import ForkedProcess, ForkServer

RUN_TIMEOUT = 120.0
PASSWORD_ENV = "TEST_CRASH_IMAP_PW"

# (point, N): fire the Nth time the point is reached. The 30-message folder is one capture batch (blobs,
# messages and cursor in one commit; before_cursor fires just before it) and one processing batch
# (before_commit and after_commit fire once), so a capture point kills with nothing of the folder
# committed, and a processing point with all 30 captured and waiting, cursor at the end.
POINTS = [
    ("after_fetch", 7),
    ("after_archive", 7),
    ("before_cursor", 1),
    ("during_match", 7),
    ("during_thread", 7),
    ("before_commit", 1),
    ("after_commit", 1),
]
CAPTURE_POINTS = {"after_fetch", "after_archive", "before_cursor"}
# On PostgreSQL too: killed inside capture's transaction, inside processing's, and just after its commit
# (each point costs a few seconds a database; the others differ from these only in what is in memory).
POSTGRESQL_POINTS = {"before_cursor", "before_commit", "after_commit"}
# (db_backend, point, N, folder size): the db_backend fixture (tests/conftest.py) by hand, as both_dbs
# would for all. A folder of STAGED messages is one batch large enough for the stage workers
# (mailsync/pipeline/staging.py), which write its blobs a batch ahead: killed at each capture point there.
STAGED = POOL_FROM + 6
KILLS_AT = (
    [("sqlite", point, nth, 30) for point, nth in POINTS]
    + [("postgresql", point, nth, 30) for point, nth in POINTS if point in POSTGRESQL_POINTS]
    + [
        ("sqlite", point, STAGED // 2 if nth > 1 else 1, STAGED)
        for point, nth in POINTS
        if point in CAPTURE_POINTS
    ]
)


def mail(tag: str, i: int) -> bytes:
    return plain_mail(
        f"crash {tag} {i}", f"Can you send the pricing for {i} seats?", id_prefix=f"crash-{tag}-{i}"
    )


class Setup:
    """A config for one IMAP user, and the ways to run the CLI on it and inspect what it left."""

    def __init__(
        self, tmp_path: Path, server, user, forks: ForkServer, database_url: str | None = None
    ) -> None:
        self.tmp_path = tmp_path
        self.user = user
        self.forks = forks
        mailbox = imap_mailbox(server, user.name, password_env=PASSWORD_ENV)
        self.config = write_config(tmp_path, mailbox, database_url=database_url)
        settings = load_settings(self.config)
        self.database_url = settings.database_url
        self.archive = Archive(settings.archive_dir)
        self.log = tmp_path / "sync.log"
        self.runs = 0
        self.run_offset = 0

    def env(self, fault: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "MAILSYNC_CONFIG")}
        env[PASSWORD_ENV] = self.user.password
        env["MAILSYNC_LOG_FORMAT"] = "json"
        env["MAILSYNC_LOG_LEVEL"] = "debug"  # message_ingested marks each message committed
        if fault:
            env[FAULT_ENV] = fault
        return env

    def upgrade(self) -> None:
        log = self.tmp_path / "upgrade.log"
        code = self.forks.run(
            ["-c", str(self.config), "db", "upgrade"],
            env=self.env(),
            cwd=self.tmp_path,
            log=log,
            timeout=RUN_TIMEOUT,
        )
        assert code == 0, log.read_text(errors="replace")

    def start(self, fault: str | None = None) -> ForkedProcess:
        self.runs += 1
        with self.log.open("ab") as log:
            log.write(f"--- run {self.runs} fault={fault} ---\n".encode())
            self.run_offset = log.tell()  # where this run's output begins
        return self.forks.start(
            ["-c", str(self.config), "sync", "--once"], env=self.env(fault), cwd=self.tmp_path, log=self.log
        )

    def run(self, fault: str | None = None) -> int:
        proc = self.start(fault)
        try:
            return proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def run_until_clean(self, tries: int = 3) -> None:
        for _ in range(tries):
            if self.run() == 0:
                return
        pytest.fail(f"sync --once did not exit 0 in {tries} clean runs; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def state(self) -> dict[str, object]:
        repo = Repo(self.database_url)
        try:
            with repo.session() as s:
                messages = s.execute(select(m.Message.message_id, m.Message.fingerprint)).all()
                blobs = set(s.scalars(select(m.Blob.sha256)))
                referenced = set(s.scalars(select(m.Message.blob_sha256))) | set(
                    s.scalars(select(m.Provenance.blob_sha256))
                )
                provenance = s.scalar(select(func.count()).select_from(m.Provenance))
                cursor = s.scalar(select(m.FolderState.last_uid).where(m.FolderState.name == "INBOX"))
        finally:
            repo.dispose()
        on_disk = set(self.archive.keys())
        return {
            "message_ids": [mid for mid, _ in messages],
            "fingerprints": [fp for _, fp in messages],
            "blobs": blobs,
            "referenced": referenced,
            "provenance": provenance,
            "cursor": cursor,
            "on_disk": on_disk,
            "orphans": on_disk - blobs,
            "partial": sorted(self.archive.blobs.glob("*/*/.tmp-*")) if self.archive.blobs.exists() else [],
        }

    def assert_consistent(self, expected_ids: set[str], last_uid: int) -> None:
        state = self.state()
        ids = state["message_ids"]
        assert len(ids) == len(expected_ids), f"{len(ids)} messages in the database, {len(expected_ids)} sent"
        assert set(ids) == expected_ids, "a message is missing"
        assert len(set(state["fingerprints"])) == len(ids), "duplicate fingerprints"
        assert state["provenance"] == len(expected_ids), "one provenance per (blob, UID) expected"
        missing = [key for key in state["referenced"] | state["blobs"] if not _readable(self.archive, key)]
        assert missing == [], f"blobs known to the database but not in the archive: {missing}"
        assert state["orphans"] == set(), f"blobs in the archive unknown to the database: {state['orphans']}"
        assert state["cursor"] == last_uid, f"cursor {state['cursor']} != highest UID {last_uid}"


def _readable(archive: Archive, key: str) -> bool:
    try:
        archive.get(key)
    except Exception:  # noqa: BLE001 - any failure means the blob is not there intact
        return False
    return True


def _message_ids(raws: list[bytes]) -> set[str]:
    out = set()
    for raw in raws:
        line = next(x for x in raw.decode().splitlines() if x.startswith("Message-ID:"))
        out.add(line.split(":", 1)[1].strip().strip("<>"))
    return out


@pytest.fixture
def crash_setup(tmp_path, dovecot, imap_user, forks, db_url):
    setup = Setup(tmp_path, dovecot, imap_user, forks, db_url)
    setup.upgrade()
    return setup


@pytest.mark.parametrize(
    ("db_backend", "point", "nth", "size"),
    KILLS_AT,
    ids=[f"{db}-{p}" + ("-staged" if size == STAGED else "") for db, p, _, size in KILLS_AT],
    indirect=["db_backend"],
)
def test_sigkill_at_a_fault_point_loses_and_duplicates_nothing(
    point, nth, size, crash_setup, dovecot, imap_user
):
    raws = [mail(point, i) for i in range(size)]
    uids = dovecot.append_many(imap_user.name, "INBOX", raws)
    expected = _message_ids(raws)

    code = crash_setup.run(f"{point}:{nth}")
    assert code == -signal.SIGKILL, f"exit {code}, expected death by SIGKILL:\n{crash_setup.log_tail()}"
    crashed = crash_setup.state()
    captured = point not in CAPTURE_POINTS
    assert len(crashed["message_ids"]) == (size if captured else 0)
    # Blobs staged for the batch whose commit never came are unknown to the database (never more).
    assert len(crashed["orphans"]) <= (0 if captured else size)
    if captured:
        assert crashed["cursor"] == max(uids), "the cursor did not move with its batch"
    else:
        assert crashed["cursor"] in (None, 0), "the cursor moved although its batch was not committed"

    crash_setup.run_until_clean()
    crash_setup.assert_consistent(expected, max(uids))


# The random test: this many SIGKILLs while syncing a folder of this many messages. Each run is killed
# while it ingests its k-th new message, k uniform in 1..MAX_STEP: every run makes progress, and the
# kills spread over the whole folder (mean 17.5 a run: 50 kills cover ~90% of it, the clean run the rest).
KILLS, FOLDER, MAX_STEP = 50, 1000, 34
KILL_JITTER = 0.03  # seconds after the k-th message's commit: ~1-2 messages' processing, anywhere in it
TOP_UP = 300


@pytest.mark.slow
def test_random_sigkills_during_sync_lose_and_duplicate_nothing(crash_setup, dovecot, imap_user):
    seed = int(os.environ.get("MAILSYNC_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"random SIGKILL test seed: {seed} (rerun with MAILSYNC_CRASH_SEED={seed})")
    rng = random.Random(seed)  # noqa: S311 - reproducible kill points, not secrets
    raws = [mail(f"bulk{seed}", i) for i in range(FOLDER)]
    uids = dovecot.append_many(imap_user.name, "INBOX", raws)
    kills = finished_early = 0
    began = time.monotonic()
    while kills < KILLS:
        proc = crash_setup.start()
        # Only new messages count: start-up and the re-fetch of messages it already has (after the
        # saved cursor) log none, and a kill there would not advance the folder.
        if _wait_for_ingested(proc, crash_setup.log, crash_setup.run_offset, rng.randint(1, MAX_STEP)):
            time.sleep(rng.uniform(0, KILL_JITTER))
        if proc.poll() is None:
            proc.kill()
            code = proc.wait(timeout=RUN_TIMEOUT)
            if code == -signal.SIGKILL:
                kills += 1
                continue
        else:
            code = proc.wait()
        assert code == 0, f"sync exited {code}:\n{crash_setup.log_tail()}"
        # Finished by itself before all the kills: give it more mail so the kills can go on.
        finished_early += 1
        more = [mail(f"bulk{seed}-more{finished_early}", i) for i in range(TOP_UP)]
        uids += dovecot.append_many(imap_user.name, "INBOX", more)
        raws += more
    crash_setup.run_until_clean()
    elapsed = time.monotonic() - began
    state = crash_setup.state()
    print(
        f"{kills} kills, {finished_early} early finishes, {len(raws)} messages, {crash_setup.runs} runs, "
        f"{len(state['partial'])} leftover .tmp files, {elapsed:.0f} s"
    )
    crash_setup.assert_consistent(_message_ids(raws), max(uids))


def _wait_for_ingested(
    proc: ForkedProcess, log: Path, offset: int, count: int, timeout: float = 60.0
) -> bool:
    """Wait until the run writing `log` from `offset` on has logged `count` ingested (new, committed)
    messages; False if it exited first."""
    deadline = time.monotonic() + timeout
    seen = 0
    with log.open("rb") as handle:
        handle.seek(offset)
        pending = b""
        while time.monotonic() < deadline and proc.poll() is None:
            lines = (pending + handle.read()).split(b"\n")
            pending = lines.pop()  # an unfinished line waits for its end
            seen += sum(b'"message_ingested"' in line for line in lines)
            if seen >= count:
                return True
            time.sleep(0.005)
    return False
