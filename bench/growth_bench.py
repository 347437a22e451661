"""Does the full pipeline slow down as the database grows? `mailsync import` of `--growth-step` new
messages at a time into ONE database until it holds `--growth-total`; each step's rate against the
first's.

    python -m bench.growth_bench [--growth-total 100000] [--growth-step 10000] [--chart docs/bench/growth.png]

Every step's messages are new (bench/mailgen.py with the step's own seed: distinct bytes and
Message-IDs, replies within the step), so each step does the same work on a bigger database: a rate that
falls shows a cost that grows with the table sizes (a scan, a missing index, a cache that stops fitting).
Issue 14's target: the rate at 100,000 messages within 10 % of the rate at 1,000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import mailsync_runs as ms
from bench import report
from bench.crm_db import build_crm_database
from bench.mailgen import OWNER, write_eml

TARGET = 0.10  # the last step's rate may be at most this much below the first's


def _workspace(directory: Path) -> ms.Workspace:
    (directory / "var").mkdir(parents=True)
    database = directory / "var" / "mailsync.db"
    build_crm_database(f"sqlite:///{database}")
    space = ms.Workspace(directory, f"sqlite:///{database}", password="")
    space.config.write_text(
        f'database_url = "sqlite:///{database}"\ninternal_domains = ["northwind.example"]\n\n'
        f'[[mailboxes]]\nname = "{ms.MAILBOX}"\nowner = "{OWNER}"\n',
        encoding="utf-8",
    )
    return space


def run(
    total: int, step: int, console: Console, chart: Path | None = None, markdown: Path | None = None
) -> list[tuple[int, float]]:
    """(messages in the database before the step, the step's msg/s), one per step; prints the table,
    draws the chart and writes the "## Growth" section of `markdown` when asked."""
    began = time.perf_counter()
    curve: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="mailsync-growth-") as tmp:
        space = _workspace(Path(tmp) / "ws")
        for index in range(max(1, total // step)):
            mail = write_eml(Path(tmp) / f"step{index}", step, seed=500 + index)
            before = space.count()
            seconds, _ = space.run("import", str(mail), "--mailbox", ms.MAILBOX)
            shutil.rmtree(mail)
            curve.append((before, step / seconds))
            console.print(f"  {before:>9,} in the database: {step / seconds:8.1f} msg/s", highlight=False)
    _print(curve, console)
    if chart is not None:
        _chart(curve, chart)
    if markdown is not None:
        _markdown(curve, step, time.perf_counter() - began, markdown, chart)
    return curve


def _verdict(curve: list[tuple[int, float]]) -> str:
    first, last = curve[0][1], curve[-1][1]
    met = last >= first * (1 - TARGET)
    return (
        f"Last step {last:.1f} msg/s vs first {first:.1f}: {last / first:.2f}× "
        f"(target ≥ {1 - TARGET:.2f}×) {'✓' if met else '✗'}"
    )


def _markdown(
    curve: list[tuple[int, float]], step: int, seconds: float, path: Path, chart: Path | None
) -> None:
    first = curve[0][1]
    total = curve[-1][0] + step
    lines = [[f"{before:,}", f"{rate:.1f}", f"{rate / first:.2f}×"] for before, rate in curve]
    picture = (
        f"\n![full pipeline rate as the database grows]({os.path.relpath(chart, path.parent)})\n"
        if chart
        else ""
    )
    report.put_sections(
        path,
        f"""## Growth

The full pipeline (`mailsync import` of {step:,} new messages at a time) into one SQLite database
that starts as the 50k-contact CRM and grows to {total:,} messages (issue 14, item 5). {_verdict(curve)}.

- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; whole section {seconds / 60:.0f} min
- command: `make bench   # python -m bench.run --only growth --growth-total {total} --growth-step {step}`
{picture}
{report.md_table(("messages before the step", "msg/s", "vs first step"), lines)}

How it is measured: `bench/growth_bench.py`. Every step's messages are new (`bench/mailgen.py` with
the step's own seed), so each step does the same work on a bigger database; each step is one
`mailsync import` subprocess, its start-up and CRM load included.
""",
    )


def _print(curve: list[tuple[int, float]], console: Console) -> None:
    first = curve[0][1]
    table = Table(title="full pipeline (`mailsync import`) as the database grows, SQLite")
    for column in ("messages before the step", "msg/s", "vs first step"):
        table.add_column(column, justify="right")
    for before, rate in curve:
        table.add_row(f"{before:,}", f"{rate:.1f}", f"{rate / first:.2f}×")
    console.print(table)
    console.print(_verdict(curve), highlight=False)


def _chart(curve: list[tuple[int, float]], path: Path) -> None:
    import matplotlib as mpl  # noqa: PLC0415 - only when a chart is asked for

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.plot([b for b, _ in curve], [r for _, r in curve], marker="o")
    axes.set_xlabel("messages in the database before the step")
    axes.set_ylabel("msg/s (mailsync import)")
    axes.set_ylim(bottom=0)
    axes.set_title("full pipeline rate as the database grows")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--growth-total", type=int, default=100_000, help="messages in the database at the end"
    )
    parser.add_argument("--growth-step", type=int, default=10_000, help="messages imported per step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--chart", type=Path, help="write the curve as a PNG here")
    parser.add_argument("--markdown", type=Path, help="write the Growth section here (e.g. BENCHMARKS.md)")
    args = parser.parse_args(argv)
    run(args.growth_total, args.growth_step, Console(), args.chart, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
