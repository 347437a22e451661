"""Capture with 1, 2 and 4 `mailsync run` processes on one PostgreSQL against 1 on SQLite (issue 16, item 4).

    python -m bench.scaleout_bench [--mailboxes 8] [--per-mailbox 500] [--runs 3] [--markdown BENCHMARKS.md]

One private Dovecot with `--mailboxes` users; each user's share of `bench/mailgen.py`'s distinct messages
waits in a folder of its own (Staging). For each setup, in alternating order round after round:

1. an empty database (a copy of the 50k-contact CRM template, SQLite or PostgreSQL) and an empty archive;
2. N `mailsync run` daemons on one config (every mailbox, leases on, `[daemon] parse_workers = 1`,
   polling every 2 s without IDLE); wait until every mailbox's INBOX is synced (empty) and, on
   PostgreSQL, the mailbox leases are shared out evenly;
3. the clock starts; every user's mail is COPYed from Staging to INBOX at once (Dovecot hardlinks it);
4. captured: every message row and provenance committed (the cursor moves in the same commit);
   processed: no message left pending (parsed, matched, threaded, proposed);
5. the sharing is checked (every message once, each copy once, each mailbox synced by one daemon, no
   lease changing hands, no lease lost) and the daemons stopped with SIGTERM (exit 0 expected).

CPU seconds (user + sys, from /proc) over the window from the release to "processed", split between the
daemons (with their parse workers), the PostgreSQL backends of the run's database, Dovecot, and the
rest of the machine. Figures are medians over the runs. Reports, never gates on a figure; it fails when
the sharing is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in {None, ""}:  # `python bench/scaleout_bench.py`; tests.support lives at the root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from sqlalchemy import create_engine, text

from bench import report
from bench.crm_db import build_crm_database
from bench.mailgen import OWNER, generate
from bench.mailsync_runs import ENV_VAR, log_events, mailsync_command
from tests.support.config import imap_mailbox
from tests.support.dovecot import DovecotServer, missing_requirement
from tests.support.postgres import PostgresCluster

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy import Engine

PASSWORD = "scalepw"  # noqa: S105 - a throwaway Dovecot user's
STAGING = "Staging"
SETUPS = (("SQLite", 1), ("PostgreSQL", 1), ("PostgreSQL", 2), ("PostgreSQL", 4))
DAEMON = (  # a 2 s poll without IDLE: a mailbox's lease is looked at often, so the share settles fast
    "\n[daemon]\npoll_interval = 2\njitter = 0\nidle = false\nparse_workers = 1\n"
    '[web]\nlisten = "127.0.0.1:0"\n'
)
READY_TIMEOUT = 180.0
DONE_TIMEOUT = 1800.0
TICK = os.sysconf("SC_CLK_TCK")


# -- CPU seconds by who used them ---------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, user+sys ticks, start time in ticks since boot), for every process now."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        found[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]))
    return found


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot (every core)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK  # less idle and iowait


class CpuSplit(threading.Thread):
    """Samples /proc every 0.25 s from start() to stop(): CPU seconds per group of processes (a
    process that ends between two samples loses at most a quarter second)."""

    def __init__(self, roots: dict[str, list[int]], postgres: Engine | None, database: str) -> None:
        super().__init__(daemon=True)
        self.roots, self.postgres, self.database = roots, postgres, database
        self.first: dict[tuple[int, int], int] = {}
        self.last: dict[tuple[int, int], tuple[str, int]] = {}
        self.done = threading.Event()
        self.began_ticks = float(Path("/proc/uptime").read_text().split()[0]) * TICK
        self.busy0 = _machine_busy()
        self.wall0 = time.perf_counter()
        self.busy = self.wall = 0.0

    def _backends(self) -> set[int]:
        if self.postgres is None:
            return set()
        with self.postgres.connect() as conn:
            query = text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()")
            return {int(p) for p in conn.execute(query, {"d": self.database}).scalars()}

    def sample(self) -> None:
        procs = _processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        groups = {name: self._tree(roots, children) for name, roots in self.roots.items()}
        groups["postgres"] = self._backends()
        groups["bench"] = {os.getpid()}
        for name, pids in groups.items():
            for pid in pids & procs.keys():
                _, ticks, started = procs[pid]
                key = (pid, started)
                if key not in self.first:  # started in the window: all its CPU counts
                    self.first[key] = ticks if started < self.began_ticks else 0
                self.last[key] = (name, ticks)

    @staticmethod
    def _tree(roots: Iterable[int], children: dict[int, list[int]]) -> set[int]:
        found, stack = set(), list(roots)
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.add(pid)
                stack.extend(children.get(pid, ()))
        return found

    def run(self) -> None:
        while not self.done.wait(0.25):
            self.sample()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group, `machine` (every core busy) and `other` (the rest of the machine, this
        process's polling included; `bench` says how much that was)."""
        self.done.set()
        self.join(10)
        self.sample()
        self.busy = _machine_busy() - self.busy0
        self.wall = time.perf_counter() - self.wall0
        split: dict[str, float] = {}
        for key, (name, ticks) in self.last.items():
            split[name] = split.get(name, 0.0) + (ticks - self.first[key]) / TICK
        split["machine"] = self.busy
        ours = ("mailsync", "postgres", "dovecot")
        split["other"] = max(0.0, self.busy - sum(split.get(k, 0.0) for k in ours))  # the bench's own too
        split["wall"] = self.wall
        return split


# -- one trial ------------------------------------------------------------------------------------------


@dataclass
class Trial:
    setup: str
    processes: int
    capture_s: float = 0.0
    processed_s: float = 0.0
    ready_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    per_daemon: list[int] = field(default_factory=list)  # messages each daemon fetched
    handoffs: int = 0  # leases that changed hands between the release and the end
    lost: int = 0  # lease_lost events
    shared_mailboxes: int = 0  # mailboxes whose mail more than one daemon fetched
    quarantined: int = 0
    reasons: list[str] = field(default_factory=list)  # why, for each message quarantined
    exit_codes: list[int] = field(default_factory=list)


class ScaleOut:
    def __init__(self, server: DovecotServer, base: Path, users: list[str], per_mailbox: int) -> None:
        self.server, self.base, self.users, self.per_mailbox = server, base, users, per_mailbox
        self.total = per_mailbox * len(users)
        assert server.base_dir is not None  # noqa: S101 - a running server has one
        self.dovecot_pid = int((server.base_dir / "run" / "master.pid").read_text().split()[0])
        self.pg = PostgresCluster()
        self.template = base / "crm-template.db"
        build_crm_database(f"sqlite:///{self.template}")
        self.pg_template = self.pg.create()
        build_crm_database(self.pg.url(self.pg_template))

    def close(self) -> None:
        self.pg.drop_all()

    def _config(self, directory: Path, url: str) -> Path:
        mailboxes = "".join(
            imap_mailbox(self.server, user, password_env=ENV_VAR, name=f"m{i:02}", owner=OWNER)
            for i, user in enumerate(self.users)
        )
        path = directory / "mailsync.toml"
        head = f'database_url = {json.dumps(url)}\ninternal_domains = ["northwind.example"]\n'
        path.write_text(head + mailboxes + DAEMON, encoding="utf-8")
        return path

    def trial(self, setup: str, processes: int, r: int) -> Trial:
        directory = self.base / f"run{r}-{setup}-{processes}"
        (directory / "var").mkdir(parents=True)
        pg_name = None
        if setup == "SQLite":
            shutil.copyfile(self.template, directory / "var" / "mailsync.db")
            url = f"sqlite:///{directory / 'var' / 'mailsync.db'}"
        else:
            pg_name = self.pg.create(template=self.pg_template)
            url = self.pg.url(pg_name)
        engine = create_engine(url)
        admin = create_engine(self.pg.url("postgres")) if pg_name else None
        config = self._config(directory, url)
        env = {**os.environ, ENV_VAR: PASSWORD, "MAILSYNC_LOG_FORMAT": "json"}
        logs = [directory / f"daemon{i}.log" for i in range(processes)]
        procs: list[subprocess.Popen[bytes]] = []
        result = Trial(setup, processes)
        ran = False
        try:
            began = time.perf_counter()
            for log in logs:
                with log.open("wb") as out:
                    command = [*mailsync_command(), "-c", str(config), "run"]
                    procs.append(subprocess.Popen(command, stdout=out, stderr=out, env=env))
            self._wait_ready(engine, procs, logs, processes)
            result.ready_s = time.perf_counter() - began
            tokens = self._tokens(engine)
            roots = {"mailsync": [p.pid for p in procs], "dovecot": [self.dovecot_pid]}
            cpu = CpuSplit(roots, admin, pg_name or "")
            cpu.start()
            t0 = time.perf_counter()
            self._release()
            result.capture_s, result.processed_s = self._until_done(engine, procs, t0, f"{setup}×{processes}")
            result.cpu = cpu.stop()
            result.handoffs = sum(
                1 for name, token in self._tokens(engine).items() if tokens.get(name) != token
            )
            ran = True
        finally:
            result.exit_codes = self._stop(procs)
            try:
                if ran:
                    self._check(engine, logs, result)
            finally:
                engine.dispose()
                if admin is not None:
                    admin.dispose()
                if pg_name:
                    self.pg.drop(pg_name)
                self._empty_inboxes()
        shutil.rmtree(directory, ignore_errors=True)
        return result

    def _until_done(
        self, engine: Engine, procs: list[subprocess.Popen[bytes]], t0: float, name: str
    ) -> tuple[float, float]:
        """Seconds from t0 until every message was captured, and until none was left pending."""
        captured = None
        while True:
            messages, copies, pending = self._counts(engine)
            now = time.perf_counter()
            if captured is None and messages == copies == self.total:
                captured = now - t0
            if captured is not None and pending == 0:
                return captured, now - t0
            if now > t0 + DONE_TIMEOUT or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{name}: {messages}/{self.total} captured, {pending} pending")
            time.sleep(0.2)

    def _wait_ready(
        self, engine: Engine, procs: list[subprocess.Popen[bytes]], logs: list[Path], processes: int
    ) -> None:
        """Every INBOX synced once (empty) and, with several daemons, the leases shared out evenly."""
        share = -(-len(self.users) // processes)
        deadline = time.monotonic() + READY_TIMEOUT
        query = text(
            "SELECT count(*) FROM folder_state f JOIN mailbox mb ON mb.id = f.mailbox_id "
            "WHERE f.name = 'INBOX' AND f.uidvalidity IS NOT NULL"
        )
        holders = text(
            "SELECT holder, count(*) FROM lease WHERE name LIKE 'mailbox:%' AND expires_at > :now "
            "GROUP BY holder"
        )
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            try:
                with engine.connect() as conn:
                    synced = conn.execute(query).scalar_one()
                    held: dict[str, int] = dict(
                        conn.execute(holders, {"now": datetime.now(UTC).replace(tzinfo=None)}).all()
                    )
            except Exception:  # noqa: BLE001 - tables not there yet, or locked for a moment
                synced, held = 0, {}
            even = processes == 1 or (len(held) == processes and max(held.values()) <= share)
            if synced == len(self.users) and even and sum(held.values()) == len(self.users):
                time.sleep(2.0)  # past the parse worker's start-up (warmed at start) and the first passes
                return
            time.sleep(0.25)
        tails = "\n".join(log.read_text(errors="replace")[-1500:] for log in logs)
        raise RuntimeError(f"daemons not ready (synced and shared) in {READY_TIMEOUT:.0f} s:\n{tails}")

    @staticmethod
    def _tokens(engine: Engine) -> dict[str, tuple[str, int]]:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, holder, token FROM lease WHERE name LIKE 'mailbox:%'"))
            return {name: (holder, int(token)) for name, holder, token in rows}

    def _release(self) -> None:
        """Every user's mail from Staging into INBOX at once, one connection per user."""

        def copy(user: str) -> None:
            with self.server.client(user) as client:
                client.select_folder(STAGING, readonly=True)
                client.copy(client.search("ALL"), "INBOX")

        with ThreadPoolExecutor(len(self.users)) as pool:
            list(pool.map(copy, self.users))

    def _empty_inboxes(self) -> None:
        for user in self.users:
            with self.server.client(user) as client:
                client.select_folder("INBOX")
                uids = client.search("ALL")
                if uids:
                    client.delete_messages(uids)
                    client.expunge()

    @staticmethod
    def _counts(engine: Engine) -> tuple[int, int, int]:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM message), (SELECT count(*) FROM provenance), "
                    "(SELECT count(*) FROM message WHERE status = 'pending')"
                )
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    def _check(self, engine: Engine, logs: list[Path], result: Trial) -> None:
        """Every message once, every copy once, each mailbox's mail fetched by one daemon."""
        with engine.connect() as conn:
            messages, copies, _ = self._counts(engine)
            places = conn.execute(
                text("SELECT count(*) FROM (SELECT DISTINCT mailbox, folder, uid FROM provenance) p")
            ).scalar_one()
            per_mailbox: dict[str, int] = dict(
                conn.execute(text("SELECT mailbox, count(*) FROM provenance GROUP BY mailbox")).all()
            )
            result.quarantined = int(
                conn.execute(text("SELECT count(*) FROM message WHERE status = 'quarantined'")).scalar_one()
            )
            result.reasons = [
                str(r)[:160] for r in conn.execute(text("SELECT reason FROM quarantine")).scalars()
            ]
        fetchers: dict[str, set[int]] = {}
        for i, log in enumerate(logs):
            events = log_events(log)
            fetched = [e for e in events if e.get("event") == "folder_synced" and e.get("fetched")]
            result.per_daemon.append(sum(int(e["fetched"]) for e in fetched))
            for e in fetched:
                fetchers.setdefault(e["mailbox"], set()).add(i)
            result.lost += sum(1 for e in events if e.get("event") == "lease_lost")
        result.shared_mailboxes = sum(1 for who in fetchers.values() if len(who) > 1)
        wrong = []
        if not messages == copies == places == self.total:
            wrong.append(f"{messages} messages, {copies} copies, {places} places; {self.total} expected")
        if set(per_mailbox.values()) != {self.per_mailbox} or len(per_mailbox) != len(self.users):
            wrong.append(f"copies per mailbox {per_mailbox}")
        if sum(result.per_daemon) != self.total:
            wrong.append(f"the daemons fetched {result.per_daemon} (sum ≠ {self.total}): some mail twice")
        if result.exit_codes != [0] * len(logs):
            wrong.append(f"exit codes {result.exit_codes}")
        if wrong:
            raise RuntimeError(f"{result.setup}×{result.processes}: " + "; ".join(wrong))

    @staticmethod
    def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int]:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                codes.append(proc.wait(60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes


# -- the result -----------------------------------------------------------------------------------------


def summarise(trials: list[Trial], per_mailbox: int, mailboxes: int, raw_mb: float) -> dict[str, Any]:
    total = per_mailbox * mailboxes
    rows: list[dict[str, Any]] = []
    for setup, processes in SETUPS:
        mine = [t for t in trials if (t.setup, t.processes) == (setup, processes)]
        if not mine:
            continue
        med = statistics.median
        cpu_keys = ("mailsync", "postgres", "dovecot", "bench", "other", "machine", "wall")
        rows.append({
            "setup": setup, "processes": processes, "runs": len(mine),
            "capture_s": [t.capture_s for t in mine], "processed_s": [t.processed_s for t in mine],
            "capture_rate": total / med([t.capture_s for t in mine]),
            "processed_rate": total / med([t.processed_s for t in mine]),
            "ready_s": med([t.ready_s for t in mine]),
            "cpu": {k: med([t.cpu.get(k, 0.0) for t in mine]) for k in cpu_keys},
            "per_daemon": [t.per_daemon for t in mine],
            "handoffs": sum(t.handoffs for t in mine), "lost": sum(t.lost for t in mine),
            "shared_mailboxes": sum(t.shared_mailboxes for t in mine),
            "quarantined": [t.quarantined for t in mine],
            "reasons": sorted({reason for t in mine for reason in t.reasons}),
        })  # fmt: skip
    base = next((r for r in rows if (r["setup"], r["processes"]) == ("SQLite", 1)), None)
    for row in rows:
        row["capture_ratio"] = row["capture_rate"] / base["capture_rate"] if base else None
        row["processed_ratio"] = row["processed_rate"] / base["processed_rate"] if base else None
    return {
        "mailboxes": mailboxes, "per_mailbox": per_mailbox, "messages": total, "raw_mb": raw_mb,
        "runs": min((r["runs"] for r in rows), default=0), "rows": rows,
        "machine": report.machine(), "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
    }  # fmt: skip


def run(
    mailboxes: int = 8,
    per_mailbox: int = 500,
    runs: int = 3,
    console: Console | None = None,
    *,
    markdown: Path | None = None,
    json_path: Path | None = None,
) -> dict[str, Any]:
    """Run the bench, print its table, write the Scale-out section of `markdown`; returns the result."""
    console = console or Console()
    reason = missing_requirement() or PostgresCluster().unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"scale-out bench cannot run: {reason}")
        console.print(f"[yellow]scale-out bench skipped:[/] {reason}")
        return {}
    began = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="mailsync-scaleout-", dir="/tmp"))
    base.chmod(0o755)  # Dovecot's users must reach their mail below it
    users = [f"scale{i:02}" for i in range(mailboxes)]
    bench = None
    trials: list[Trial] = []
    try:
        with DovecotServer(users=dict.fromkeys(users, PASSWORD), base_dir=base / "dovecot") as server:
            data = list(generate(per_mailbox * mailboxes, seed=16))
            for i, user in enumerate(users):
                server.create_folder(user, STAGING)
                server.append_many(user, STAGING, data[i * per_mailbox : (i + 1) * per_mailbox])
            raw_mb = sum(map(len, data)) / 1e6
            del data
            bench = ScaleOut(server, base, users, per_mailbox)
            for r in range(runs):
                order = SETUPS if r % 2 == 0 else SETUPS[::-1]
                for setup, processes in order:
                    trial = bench.trial(setup, processes, r)
                    trials.append(trial)
                    console.print(
                        f"round {r + 1}/{runs}: {setup}×{processes} captured in {trial.capture_s:.1f} s, "
                        f"processed in {trial.processed_s:.1f} s ({time.perf_counter() - began:,.0f} s in)",
                        style="dim",
                    )
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(base, ignore_errors=True)
    result = summarise(trials, per_mailbox, mailboxes, raw_mb)
    result["wall_s"] = time.perf_counter() - began
    report.print_scaleout(result, console)
    if json_path:
        json_path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if markdown:
        report.write_scaleout_markdown(result, markdown)
    return result


def _path(text: str) -> Path | None:
    return Path(text) if text else None


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    parser.add_argument(
        f"--{prefix}mailboxes", type=int, default=8, help="scale-out: Dovecot users (mailboxes)"
    )
    parser.add_argument(
        f"--{prefix}per-mailbox", type=int, default=500, help="scale-out: messages per mailbox"
    )
    parser.add_argument(
        f"--{prefix}runs", type=int, default=3, help="scale-out: alternating rounds (medians)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument(
        "--markdown", type=_path, help="write the Scale-out section here (e.g. BENCHMARKS.md)"
    )
    parser.add_argument("--json", type=_path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    run(args.mailboxes, args.per_mailbox, args.runs, markdown=args.markdown, json_path=args.json)
    return 0  # reports, never gates on a figure


if __name__ == "__main__":
    sys.exit(main())
