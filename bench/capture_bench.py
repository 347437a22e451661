"""Capture side by side, in one run, on one private Dovecot mailbox (issue 14, item 3).

    python -m bench.capture_bench [--messages 10000] [--runs 3] [--json PATH]
                                  [--markdown BENCHMARKS.md] [--chart docs/bench/capture.png] [--profile]

Starts a private Dovecot (tests.support.dovecot), APPENDs N distinct messages made by bench/mailgen.py
(the corpora's size and MIME mix) to INBOX, builds the synthetic CRM (50k contacts, 10k accounts, 5k
opportunities) once as a SQLite template and once as a PostgreSQL template database, then runs every
contestant `--runs` times, alternating (one round runs each once; odd rounds swap the pairs):

  mbsync -> Maildir | bare imapclient fetch + syncfs per batch | `mailsync sync --once` on SQLite
  (peak PSS of its process tree, archive bytes / raw bytes) | the same on PostgreSQL | `notmuch new`
  over mbsync's Maildir | `mailsync import` of that Maildir (capture + pipeline from local mail), then
  `mailsync replay --from-stage parse` of what it archived (the full pipeline from the archive) |
  mailsync's parse stage | bare mail-parser | APPEND -> message row -> proposal with `mailsync run` in
  IDLE on an empty folder of the same server (min(100, N/30) messages, at least 10).

Every figure is the median over the runs. Each capture run must leave N message rows (N files for
the peers), or the bench fails. Reports, never gates on a target.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in {None, ""}:  # `python bench/capture_bench.py`; tests.support lives at the root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from bench import mailsync_runs as ms
from bench import peers, report
from bench.crm_db import build_crm_database
from bench.mailgen import generate
from tests.support.dovecot import DovecotServer, missing_requirement
from tests.support.postgres import PostgresCluster

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "bob", "bobpw"
FOLDER = "INBOX"


class Bench:
    """One side-by-side run: the server, the mailbox, the templates and every measurement."""

    def __init__(self, server: DovecotServer, base: Path, data: list[bytes], pg: PostgresCluster) -> None:
        self.server, self.base, self.data, self.pg = server, base, data, pg
        self.n = len(data)
        self.raw_bytes = sum(map(len, data))
        self.seconds: dict[str, list[float]] = {}
        self.extra: dict[str, list[float]] = {}
        self.latency_row: list[float] = []
        self.latency_proposal: list[float] = []
        self.template = base / "crm-template.db"
        build_crm_database(f"sqlite:///{self.template}")
        self.pg_template = pg.create()
        build_crm_database(pg.url(self.pg_template))

    def record(self, name: str, seconds: float) -> None:
        self.seconds.setdefault(name, []).append(seconds)

    def note(self, name: str, value: float) -> None:
        self.extra.setdefault(name, []).append(value)

    def expect(self, name: str, found: int) -> None:
        if found != self.n:
            raise RuntimeError(f"{name}: {found:,} messages captured, expected {self.n:,}")

    # -- one round ------------------------------------------------------------------------------

    def round(self, r: int, latency_count: int) -> None:
        work = self.base / f"run{r}"
        maildir = work / "mbsync"
        swap = r % 2 == 1
        for step in self._pair(swap, lambda: self._mbsync(maildir), lambda: self._fetch(work / "fetch")):
            step()
        for step in self._pair(
            swap, lambda: self._sync_sqlite(work / "sqlite"), lambda: self._sync_pg(work / "pg")
        ):
            step()
        for step in self._pair(
            swap,
            lambda: self._sync_sqlite(work / "sqlite", capture_only=True),
            lambda: self._sync_pg(work / "pg", capture_only=True),
        ):
            step()
        for step in self._pair(
            swap, lambda: self._notmuch(maildir), lambda: self._import(work / "import", maildir)
        ):
            step()
        for step in self._pair(
            swap,
            lambda: self.record("parse stage", ms.parse_stage(self.data)),
            lambda: self.record("mail-parser", peers.bare_mailparser(self.data)),
        ):
            step()
        self.record("parse pool", ms.parse_pool(self.data))
        self._latency(work / "latency", r, latency_count)
        shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _pair(
        swap: bool, first: Callable[[], None], second: Callable[[], None]
    ) -> Iterator[Callable[[], None]]:
        for step in (second, first) if swap else (first, second):
            os.sync()  # each starts with no one else's dirty pages to flush (mbsync fsyncs every message)
            yield step

    def _mbsync(self, maildir: Path) -> None:
        self.record("mbsync", peers.mbsync(self.server, USER, PASSWORD, FOLDER, maildir))
        self.expect("mbsync", peers.count_maildir(maildir / "INBOX"))

    def _fetch(self, out: Path) -> None:
        self.record("bare fetch", peers.bare_fetch(self.server, USER, PASSWORD, FOLDER, out))
        self.expect("bare fetch", sum(1 for _ in out.iterdir()))
        shutil.rmtree(out)

    def _sync_sqlite(self, directory: Path, *, capture_only: bool = False) -> None:
        space = ms.sqlite_workspace(directory, self.template, PASSWORD).write(self.server, USER, FOLDER)
        only = ("--capture-only",) if capture_only else ()
        seconds, peak = space.run("sync", "--once", *only, sampler=not capture_only)
        self.record("capture SQLite" if capture_only else "sync SQLite", seconds)
        self.expect(f"mailsync sync --once {' '.join(only)} (SQLite)", space.count())
        if not capture_only:
            self.note("pss_mb", peak)
            self.note("archive_ratio", space.archive_bytes() / self.raw_bytes)
        shutil.rmtree(directory)

    def _sync_pg(self, directory: Path, *, capture_only: bool = False) -> None:
        name = self.pg.create(template=self.pg_template)
        only = ("--capture-only",) if capture_only else ()
        try:
            space = ms.Workspace(directory, self.pg.url(name), PASSWORD).write(self.server, USER, FOLDER)
            seconds, _ = space.run("sync", "--once", *only)
            self.record("capture PostgreSQL" if capture_only else "sync PostgreSQL", seconds)
            self.expect(f"mailsync sync --once {' '.join(only)} (PostgreSQL)", space.count())
        finally:
            self.pg.drop(name)
        shutil.rmtree(directory)

    def _notmuch(self, maildir: Path) -> None:
        self.record("notmuch new", peers.notmuch_new(maildir / "INBOX"))

    def _import(self, directory: Path, maildir: Path) -> None:
        space = ms.sqlite_workspace(directory, self.template, PASSWORD).write(self.server, USER, FOLDER)
        self.record("import", space.run("import", str(maildir / "INBOX"), "--mailbox", ms.MAILBOX)[0])
        self.expect("mailsync import", space.count())
        # The same messages again, from the archive the import wrote: parse, match, thread, propose.
        self.record("replay", space.run("replay", "--from-stage", "parse")[0])
        self.expect("mailsync replay", space.count())
        shutil.rmtree(directory)

    def _latency(self, directory: Path, r: int, count: int) -> None:
        # The daemon IDLEs on INBOX: a user of its own on the same server gives it an empty one.
        user = f"idle{r}"
        self.server.add_user(user, PASSWORD)
        space = ms.sqlite_workspace(directory, self.template, PASSWORD).write(
            self.server, user, FOLDER, ms.DAEMON
        )
        to_row, to_proposal, peak = ms.latency(space, self.server, user, FOLDER, count=count, seed=1000 + r)
        self.latency_row.append(statistics.median(to_row))
        self.latency_proposal.append(statistics.median(to_proposal))
        self.note("latency_p95", _p95(to_proposal))
        self.note("row_p95", _p95(to_row))
        self.note("daemon_pss_mb", peak)
        self.note("latency_timeouts", sum(s >= ms.LATENCY_TIMEOUT for s in to_proposal))

    # -- the result ------------------------------------------------------------------------------

    def result(self, wall: float, load_s: float) -> dict[str, Any]:
        med = {k: statistics.median(v) for k, v in self.seconds.items()}
        return {
            "messages": self.n,
            "runs": len(self.seconds["mbsync"]),
            "raw_mb": self.raw_bytes / 1e6,
            "append_s": load_s,
            "wall_s": wall,
            "seconds": self.seconds,
            "rates": {k: self.n / s for k, s in med.items()},
            "latency": {
                "row_p50_s": statistics.median(self.latency_row),
                "row_p95_s": statistics.median(self.extra["row_p95"]),
                "p50_s": statistics.median(self.latency_proposal),
                "p95_s": statistics.median(self.extra["latency_p95"]),
                "timeouts": sum(self.extra["latency_timeouts"]),
            },
            "pss_mb": statistics.median(self.extra["pss_mb"]),
            "daemon_pss_mb": statistics.median(self.extra["daemon_pss_mb"]),
            "archive_ratio": statistics.median(self.extra["archive_ratio"]),
            "extra": self.extra,
        }


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def missing_peer() -> str | None:
    """Why a peer or server cannot run here, or None."""
    for program in ("mbsync", "notmuch"):
        if shutil.which(program) is None:
            return f"{program} is not installed: run scripts/install-system-deps.sh"
    return missing_requirement() or PostgresCluster().unavailable()


def _profile(bench: Bench, console: Console) -> None:
    """One more `sync --once` on SQLite under cProfile (the main process; parse workers are not in it)."""
    space = ms.sqlite_workspace(bench.base / "profiled", bench.template, PASSWORD).write(
        bench.server, USER, FOLDER
    )
    out = bench.base / "sync.prof"
    code = (
        "import cProfile, sys; from mailsync.cli import run; p = cProfile.Profile()\n"
        f"sys.argv = ['mailsync', '-c', {str(space.config)!r}, 'sync', '--once']\n"
        f"try:\n    p.runcall(run)\nexcept SystemExit:\n    pass\nfinally:\n    p.dump_stats({str(out)!r})\n"
    )
    env = {**os.environ, ms.ENV_VAR: PASSWORD}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    report.print_profile(out, console)


def run(
    messages: int = 10_000,
    runs: int = 3,
    console: Console | None = None,
    *,
    json_path: Path | None = None,
    markdown: Path | None = None,
    chart: Path | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Run the bench, print its tables, write the report files asked for; returns the result."""
    console = console or Console()
    reason = missing_peer()
    if reason is not None:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"capture bench cannot run: {reason}")
        console.print(f"[yellow]capture bench skipped:[/] {reason}")
        return {}
    logging.getLogger("mailparser").setLevel(logging.CRITICAL)  # it logs every part it does not handle
    began = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="mailsync-bench-", dir="/tmp"))
    base.chmod(0o755)  # Dovecot's users must reach their mail below it
    pg = PostgresCluster()
    try:
        with DovecotServer(users={USER: PASSWORD}, base_dir=base / "dovecot") as server:
            data = list(generate(messages))
            loaded = time.perf_counter()
            server.append_many(USER, FOLDER, data, batch=200)
            load_s = time.perf_counter() - loaded
            bench = Bench(server, base, data, pg)
            latency_count = max(10, min(100, messages // 30))
            for r in range(runs):
                bench.round(r, latency_count)
                console.print(
                    f"round {r + 1}/{runs} done at {time.perf_counter() - began:,.0f} s", style="dim"
                )
            result = bench.result(time.perf_counter() - began, load_s)
            result["latency"]["messages"] = latency_count
            if profile:
                _profile(bench, console)
    finally:
        pg.drop_all()
        shutil.rmtree(base, ignore_errors=True)
    result["machine"] = report.machine()
    result["date"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    result["rows"] = report.rows(result)
    report.print_tables(result, console)
    if json_path:
        json_path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if chart:
        report.write_chart(result, chart)
    if markdown:
        report.write_markdown(result, markdown, chart)
    return result


def _path(text: str) -> Path | None:
    return Path(text) if text else None  # "" for none: Path("") would be the current directory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=10_000, help="messages in the mailbox")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds; figures are medians")
    parser.add_argument("--json", type=_path, help="write the result as JSON here")
    parser.add_argument("--markdown", type=_path, help="write the report here (e.g. BENCHMARKS.md)")
    parser.add_argument("--chart", type=_path, help="write the PNG chart here (e.g. docs/bench/capture.png)")
    parser.add_argument("--profile", action="store_true", help="also profile one sync --once (cProfile)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(
        args.messages,
        args.runs,
        json_path=args.json,
        markdown=args.markdown,
        chart=args.chart,
        profile=args.profile,
    )
    return 0  # reports, never gates


if __name__ == "__main__":
    sys.exit(main())
