"""Crash safety: a real `mailsync sync --once` process SIGKILLed at every point, against a real Dovecot.

Each test runs the CLI in a subprocess on a fresh IMAP user and a fresh SQLite database, kills it
(with a fault point from mailsync/faults.py, or from outside after a random delay), runs it again
until it finishes, and checks the invariant: every message exactly once, every blob the database
knows is in the archive, no blob the database does not know, the cursor at the folder's last UID.
"""

from __future__ import annotations

import email.utils
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.faults import ENV as FAULT_ENV
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import ROOT, write_config

CLI = [sys.executable, "-c", "from mailsync.cli import run; run()"]
RUN_TIMEOUT = 120.0
_numbers = itertools.count(1)

# (point, N): fire the Nth time the point is reached. A 30-message folder saves its cursor once
# (sync.CURSOR_EVERY is 100), so before_cursor fires on its first save: all committed, cursor not.
POINTS = [
    ("after_fetch", 7),
    ("after_archive", 7),
    ("during_match", 7),
    ("during_thread", 7),
    ("before_commit", 7),
    ("after_commit", 7),
    ("before_cursor", 1),
]
# Messages committed when the crashed run died (message 7 is committed only after its commit).
COMMITTED_AT_CRASH = {"after_commit": 7, "before_cursor": 30}


def mail(tag: str, i: int) -> bytes:
    n = next(_numbers)
    return (
        f"From: Rachel Kim <rachel@acme.example>\nTo: dana@northwind.example\n"
        f"Subject: crash {tag} {i}\nDate: {email.utils.format_datetime(email.utils.localtime())}\n"
        f"Message-ID: <crash-{tag}-{i}-{n}@acme.example>\n\nCan you send the pricing for {i} seats?\n"
    ).encode()


class Setup:
    """A config for one IMAP user, and the ways to run the CLI on it and inspect what it left."""

    def __init__(self, tmp_path: Path, server, user) -> None:
        self.tmp_path = tmp_path
        self.user = user
        self.config = write_config(
            tmp_path,
            f"""
            [[mailboxes]]
            name = "imap"
            owner = "dana@northwind.example"
            host = "{server.host}"
            port = {server.port}
            security = "plain"
            username = "{user.name}"
            password_env = "TEST_CRASH_IMAP_PW"
            folders = ["INBOX"]
            """,
        )
        settings = load_settings(self.config)
        self.database_url = settings.database_url
        self.archive = Archive(settings.archive_dir)
        self.log = tmp_path / "sync.log"
        self.runs = 0

    def env(self, fault: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, "MAILSYNC_CONFIG")}
        env["TEST_CRASH_IMAP_PW"] = self.user.password
        env["MAILSYNC_LOG_FORMAT"] = "json"
        env["MAILSYNC_LOG_LEVEL"] = "debug"  # message_ingested marks a run that is ingesting
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        if fault:
            env[FAULT_ENV] = fault
        return env

    def command(self, *args: str) -> list[str]:
        return [*CLI, "-c", str(self.config), *args]

    def upgrade(self) -> None:
        done = subprocess.run(
            self.command("db", "upgrade"), env=self.env(), cwd=self.tmp_path, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")

    def start(self, fault: str | None = None) -> subprocess.Popen[bytes]:
        self.runs += 1
        with self.log.open("ab") as log:
            log.write(f"--- run {self.runs} fault={fault} ---\n".encode())
            return subprocess.Popen(
                self.command("sync", "--once"),
                env=self.env(fault),
                cwd=self.tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
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
def crash_setup(tmp_path, dovecot, imap_user):
    setup = Setup(tmp_path, dovecot, imap_user)
    setup.upgrade()
    return setup


@pytest.mark.parametrize(("point", "nth"), POINTS, ids=[p for p, _ in POINTS])
def test_sigkill_at_a_fault_point_loses_and_duplicates_nothing(point, nth, crash_setup, dovecot, imap_user):
    raws = [mail(point, i) for i in range(30)]
    uids = dovecot.append_many(imap_user.name, "INBOX", raws)
    expected = _message_ids(raws)

    code = crash_setup.run(f"{point}:{nth}")
    assert code == -signal.SIGKILL, f"exit {code}, expected death by SIGKILL:\n{crash_setup.log_tail()}"
    crashed = crash_setup.state()
    assert len(crashed["message_ids"]) == COMMITTED_AT_CRASH.get(point, nth - 1)
    # At most the blob of the one message whose transaction was killed is not yet known to the database.
    assert len(crashed["orphans"]) <= (1 if point in {"after_archive", "during_match", "during_thread",
                                                      "before_commit"} else 0)  # fmt: skip
    if point == "before_cursor":
        assert crashed["cursor"] in (None, 0), "the cursor moved although the process died before saving it"

    crash_setup.run_until_clean()
    crash_setup.assert_consistent(expected, max(uids))


@pytest.mark.slow
def test_random_sigkills_during_sync_lose_and_duplicate_nothing(crash_setup, dovecot, imap_user):
    seed = int(os.environ.get("MAILSYNC_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"random SIGKILL test seed: {seed} (rerun with MAILSYNC_CRASH_SEED={seed})")
    rng = random.Random(seed)  # noqa: S311 - reproducible kill times, not secrets
    raws = [mail(f"bulk{seed}", i) for i in range(1000)]
    uids = dovecot.append_many(imap_user.name, "INBOX", raws)
    kills = finished_early = 0
    began = time.monotonic()
    while kills < 50:
        proc = crash_setup.start()
        delay = rng.uniform(0.05, 1.5)
        # Start the clock when the process is ingesting: the ~3 s of interpreter and spaCy start-up
        # would otherwise eat most delays and the folder would never advance.
        if _wait_for_ingest(proc, crash_setup.log) and proc.poll() is None:
            time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=RUN_TIMEOUT)
            if code == -signal.SIGKILL:
                kills += 1
                continue
        else:
            code = proc.wait()
        assert code == 0, f"sync exited {code}:\n{crash_setup.log_tail()}"
        # Finished by itself before 50 kills: give it more mail so the kills can go on.
        finished_early += 1
        more = [mail(f"bulk{seed}-more{finished_early}", i) for i in range(300)]
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


def _wait_for_ingest(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> bool:
    """Wait until this run logs its first ingested message (or exits); True when it did."""
    start = log.stat().st_size
    deadline = time.monotonic() + timeout
    with log.open("rb") as handle:
        handle.seek(start)
        seen = b""
        while time.monotonic() < deadline and proc.poll() is None:
            seen = seen[-200:] + handle.read()
            if b'"message_ingested"' in seen:
                return True
            time.sleep(0.01)
    return False
