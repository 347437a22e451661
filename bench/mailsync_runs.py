"""mailsync as the capture bench runs it: its own CLI in a subprocess, a black box, each run on a fresh
database (a copy of the CRM template) and a fresh archive.

- `sync_once`: `mailsync sync --once`, timed, with the peak PSS of its process tree;
- `import_maildir`: `mailsync import <Maildir>` (`mailsync replay` once the tree has it): the full
  pipeline from local mail;
- `latency`: `mailsync run` in IDLE on an empty folder; APPEND one message at a time and time until its
  message row, then its proposal, is in the database;
- `parse_stage`: mailsync's parse function over the messages, in this process, like bare mail-parser;
  `parse_pool`: the same through the pool of worker processes the pipeline parses with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text

from bench.mailgen import OWNER, new_contact_mail
from bench.peak_memory import PeakPss
from tests.support.config import imap_mailbox

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from tests.support.dovecot import DovecotServer

ENV_VAR = "BENCH_IMAP_PW"  # the environment variable mailsync reads the IMAP password from
MAILBOX = "bench"
READY_TIMEOUT = 120.0
LATENCY_TIMEOUT = 20.0  # a message not proposed by then counts as this many seconds


def mailsync_command() -> list[str]:
    """The installed `mailsync` console script beside this Python, else the same entry point by -c."""
    script = Path(sys.executable).with_name("mailsync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from mailsync.cli import run; run()"]


@dataclass(frozen=True, slots=True)
class Workspace:
    """One fresh mailsync: a directory with its config, database and archive."""

    directory: Path
    database_url: str
    password: str

    @property
    def config(self) -> Path:
        return self.directory / "mailsync.toml"

    @property
    def archive(self) -> Path:
        return self.directory / "var" / "archive"

    @property
    def log(self) -> Path:
        return self.directory / "mailsync.log"

    def write(self, server: DovecotServer, user: str, folder: str, extra: str = "") -> Workspace:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'database_url = {json.dumps(self.database_url)}\ninternal_domains = ["northwind.example"]\n'
            + imap_mailbox(server, user, password_env=ENV_VAR, name=MAILBOX, owner=OWNER, folders=[folder])
            + extra,
            encoding="utf-8",
        )
        return self

    def run(self, *args: str, sampler: bool = False) -> tuple[float, float]:
        """Seconds `mailsync ARGS` took (exit 0 or RuntimeError), and its tree's peak PSS in MB."""
        env = {**os.environ, ENV_VAR: self.password}
        began = time.perf_counter()
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [*mailsync_command(), "-c", str(self.config), *args], stdout=log, stderr=log, env=env
            )
            peak = PeakPss(proc.pid) if sampler else None
            code = proc.wait()
        seconds = time.perf_counter() - began
        peak_mb = peak.stop() if peak else 0.0
        if code != 0:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"mailsync {' '.join(args)} exited {code}:\n{tail}")
        return seconds, peak_mb

    def count(self, table: str = "message") -> int:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        finally:
            engine.dispose()

    def archive_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.archive.rglob("*") if p.is_file())


def sqlite_workspace(directory: Path, template: Path, password: str) -> Workspace:
    """A workspace whose SQLite database starts as a copy of the CRM template."""
    (directory / "var").mkdir(parents=True)
    shutil.copyfile(template, directory / "var" / "mailsync.db")
    return Workspace(directory, f"sqlite:///{directory / 'var' / 'mailsync.db'}", password)


def has_command(name: str) -> bool:
    done = subprocess.run([*mailsync_command(), name, "--help"], capture_output=True, check=False)
    return done.returncode == 0


def parse_stage(messages: Sequence[bytes]) -> float:
    """Seconds for mailsync's parse stage (the function its workers run) over every message."""
    from config.settings import ParseLimits  # noqa: PLC0415 - mailsync's code only where it is timed
    from mailsync.mail.parse import parse_message  # noqa: PLC0415

    limits = ParseLimits()
    keys = [hashlib.sha256(raw).hexdigest() for raw in messages]
    began = time.perf_counter()
    for raw, key in zip(messages, keys, strict=True):
        parse_message(raw, fingerprint=key, archive_key=key, limits=limits)
    return time.perf_counter() - began


def parse_pool(messages: Sequence[bytes], batch: int = 200) -> float:
    """Seconds for mailsync's parse pool (warm, one worker per core) over every message, in batches."""
    from config.settings import ParseLimits  # noqa: PLC0415
    from mailsync.mail.parse_worker import ParseJob, ParsePool  # noqa: PLC0415

    jobs = [ParseJob(raw, key, key) for raw in messages for key in (hashlib.sha256(raw).hexdigest(),)]
    with ParsePool(ParseLimits(), size=os.cpu_count()) as pool:
        pool.parse_many(jobs[: len(pool.workers)])  # warm: every worker spawned and importing done
        began = time.perf_counter()
        for start in range(0, len(jobs), batch):
            pool.parse_many(jobs[start : start + batch])
        return time.perf_counter() - began


# -- APPEND -> proposal with the daemon in IDLE -------------------------------------------------

DAEMON = '\n[daemon]\npoll_interval = 600\njitter = 0\n[web]\nlisten = "127.0.0.1:0"\n'


@contextlib.contextmanager
def daemon(space: Workspace) -> Iterator[subprocess.Popen[bytes]]:
    """`mailsync run` until the with-block ends (SIGTERM, then SIGKILL after 30 s)."""
    env = {**os.environ, ENV_VAR: space.password, "MAILSYNC_LOG_FORMAT": "json"}
    with space.log.open("ab") as log:
        proc = subprocess.Popen(
            [*mailsync_command(), "-c", str(space.config), "run"], stdout=log, stderr=log, env=env
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(space: Workspace, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while b'"folder_synced"' not in space.log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mailsync run never synced:\n{space.log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    time.sleep(1.0)  # from its first pass into IDLE


def _found(db: sqlite3.Connection, query: str, *values: str) -> bool:
    try:
        return db.execute(query, values).fetchone() is not None
    except sqlite3.OperationalError:  # locked for a moment by the writer
        return False


def latency(
    space: Workspace, server: DovecotServer, user: str, folder: str, *, count: int, seed: int
) -> tuple[list[float], list[float], float]:
    """APPEND `count` new-contact messages one at a time to the folder the daemon idles on.
    Returns the seconds from APPEND to the message row and to the proposal, and the tree's peak PSS."""
    to_row: list[float] = []
    to_proposal: list[float] = []
    database = space.database_url.removeprefix("sqlite:///")
    with server.client(user) as client, daemon(space) as proc:
        sampler = PeakPss(proc.pid)
        _wait_ready(space, proc)
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, check_same_thread=False)
        try:
            for i in range(count):
                raw, key = new_contact_mail(i, seed)
                message_id = raw.split(b"Message-ID: <", 1)[1].split(b">", 1)[0].decode()
                began = time.perf_counter()
                client.append(folder, raw)
                row = proposal = None
                while proposal is None and time.perf_counter() - began < LATENCY_TIMEOUT:
                    if row is None and _found(
                        db, "SELECT 1 FROM message WHERE message_id IN (?, ?)", message_id, f"<{message_id}>"
                    ):
                        row = time.perf_counter() - began
                    if _found(db, "SELECT 1 FROM suggestion WHERE key = ?", key):
                        proposal = time.perf_counter() - began
                    time.sleep(0.005)
                to_row.append(row or proposal or LATENCY_TIMEOUT)
                to_proposal.append(proposal or LATENCY_TIMEOUT)
                time.sleep(0.05)
        finally:
            db.close()
        peak = sampler.stop()
    return to_row, to_proposal, peak


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON events of a daemon's log (`--log-format json`); a line two threads wrote run together
    yields both, a half-written last line is left out."""
    decoder = json.JSONDecoder()
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        at = 0
        while line.startswith("{", at):
            try:
                event, at = decoder.raw_decode(line, at)
            except json.JSONDecodeError:
                break
            events.append(event)
    return events
