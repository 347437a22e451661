"""The capture bench's result as tables (rich), BENCHMARKS.md and a PNG chart (matplotlib)."""

from __future__ import annotations

import io
import os
import platform
import pstats
import shutil
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

CONTESTANTS = {  # name in the result -> (chart label, what it is, whether it is a peer)
    "mbsync": ("mbsync", "mbsync (isync) → Maildir, default fsync", True),
    "bare fetch": ("bare fetch + syncfs", "imapclient UID FETCH ×500 → files, syncfs per batch", True),
    "sync SQLite": ("mailsync sync, SQLite", "mailsync sync --once, SQLite", False),
    "sync PostgreSQL": ("mailsync sync, PostgreSQL", "mailsync sync --once, PostgreSQL", False),
    "notmuch new": ("notmuch new", "notmuch new over mbsync's Maildir", True),
    "import": ("mailsync import", "mailsync import <Maildir> (full pipeline from local mail)", False),
    "replay": (
        "mailsync replay",
        "mailsync replay --from-stage parse (full pipeline from the archive)",
        False,
    ),
    "parse stage": ("mailsync parse, 1 process", "mailsync parse stage (parse_message, 1 process)", False),
    "parse pool": ("mailsync parse pool", "mailsync parse pool (ParsePool.parse_many, 1 worker/core)", False),
    "mail-parser": ("bare mail-parser", "bare mail-parser parse_from_bytes (1 process)", True),
}


@dataclass(frozen=True, slots=True)
class Row:
    """One compared figure: ours, the peer's, the ratio and the issue's target."""

    figure: str
    ours: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.ours / self.peer_value if self.peer_value else None


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The comparison rows, as dicts (JSON), from a result."""
    rate = result["rates"]
    lat = result["latency"]
    found = []
    for db in ("SQLite", "PostgreSQL"):
        ours = rate[f"sync {db}"]
        found += [
            Row(
                f"capture, sync --once, {db}",
                ours,
                "msg/s",
                "mbsync",
                rate["mbsync"],
                "≥ 1.5× mbsync",
                ours >= 1.5 * rate["mbsync"],
            ),
            Row(
                f"capture, sync --once, {db}",
                ours,
                "msg/s",
                "bare fetch",
                rate["bare fetch"],
                "≥ 0.5× bare fetch",
                ours >= 0.5 * rate["bare fetch"],
            ),
        ]
    found += [
        Row("full pipeline from the archive (replay)", rate["replay"], "msg/s", "notmuch new",
            rate["notmuch new"], "≥ 1× notmuch new", rate["replay"] >= rate["notmuch new"]),
        Row("full pipeline from the archive (replay)", rate["replay"], "msg/s", target="≥ 1,000 msg/s",
            met=rate["replay"] >= 1000),
        Row("import from local mail (capture + pipeline)", rate["import"], "msg/s", "notmuch new",
            rate["notmuch new"]),
        Row("parse stage, 1 process", rate["parse stage"], "msg/s", "mail-parser", rate["mail-parser"]),
        Row("parse stage, pool", rate["parse pool"], "msg/s", "mail-parser", rate["mail-parser"]),
        Row("APPEND → message row, p50 (IDLE)", lat["row_p50_s"], "s"),
        Row("APPEND → message row, p95 (IDLE)", lat["row_p95_s"], "s"),
        Row("APPEND → proposal, p50 (IDLE)", lat["p50_s"], "s"),
        Row("APPEND → proposal, p95 (IDLE)", lat["p95_s"], "s", target="≤ 1 s", met=lat["p95_s"] <= 1.0),
        Row("peak PSS, sync --once tree, 50k-contact CRM", result["pss_mb"], "MB", target="≤ 250 MB",
            met=result["pss_mb"] <= 250),
        Row("peak PSS, mailsync run tree (IDLE)", result["daemon_pss_mb"], "MB", target="≤ 250 MB",
            met=result["daemon_pss_mb"] <= 250),
        Row("archive bytes / raw bytes", result["archive_ratio"], "×", target="≤ 0.5×",
            met=result["archive_ratio"] <= 0.5),
    ]  # fmt: skip
    return [asdict(r) | {"ratio": r.ratio} for r in found]


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "msg/s" or value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _mark(met: bool | None) -> str:
    return "" if met is None else ("✓" if met else "✗")


def contestant_lines(result: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, (_, what, is_peer) in CONTESTANTS.items():
        runs = result["seconds"].get(name, [])
        median = sorted(runs)[len(runs) // 2] if runs else None
        out.append([
            what, "peer" if is_peer else "mailsync", " / ".join(f"{s:.2f}" for s in runs),
            _num(median), _num(result["rates"].get(name), "msg/s"),
        ])  # fmt: skip
    return out


def comparison_lines(result: dict[str, Any]) -> list[list[str]]:
    return [
        [
            r["figure"], f"{_num(r['ours'], r['unit'])} {r['unit']}", r["peer"] or "—",
            _num(r["peer_value"], r["unit"]), f"{r['ratio']:.2f}×" if r["ratio"] else "—",
            r["target"] or "—", _mark(r["met"]),
        ]
        for r in result["rows"]
    ]  # fmt: skip


CONTESTANT_HEADER = ("contestant", "side", "seconds per run", "median s", "msg/s")
COMPARISON_HEADER = ("figure", "mailsync", "peer", "peer's figure", "ratio", "target", "met")


def _title(result: dict[str, Any]) -> str:
    return (
        f"capture: {result['messages']:,} messages ({result['raw_mb']:.0f} MB) from one private Dovecot, "
        f"median of {result['runs']} alternating runs"
    )


def print_tables(result: dict[str, Any], console: Console) -> None:
    for title, header, lines in (
        (_title(result), CONTESTANT_HEADER, contestant_lines(result)),
        ("against the peers and the targets of issue 14", COMPARISON_HEADER, comparison_lines(result)),
    ):
        table = Table(title=title)
        for i, column in enumerate(header):
            table.add_column(
                column, justify="left" if i == 0 or column in {"peer", "side", "target"} else "right"
            )
        for line in lines:
            style = {"✓": "green", "✗": "red"}.get(line[-1])
            table.add_row(*line[:-1], f"[{style}]{line[-1]}[/]" if style else line[-1])
        console.print(table)
    console.print(
        f"APPEND→proposal over {result['latency']['messages']} messages per run; "
        f"wall time of the whole bench {result['wall_s']:,.0f} s",
        style="dim",
    )


def _version(*command: str) -> str:
    if shutil.which(command[0]) is None:
        return "missing"
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kb / 2**20:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "dovecot": _version("dovecot", "--version")
        if shutil.which("dovecot")
        else _version("/usr/sbin/dovecot", "--version"),
        "mbsync": _version("mbsync", "--version"),
        "notmuch": _version("notmuch", "--version"),
        "postgres": _version("psql", "--version"),
    }


def _md_table(header: tuple[str, ...], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(out)


def write_markdown(result: dict[str, Any], path: Path, chart: Path | None) -> None:
    m = result["machine"]
    chart_line = (
        f"\n![capture throughput and targets]({os.path.relpath(chart, path.parent)})\n" if chart else ""
    )
    command = f"make bench   # python -m bench.run --messages {result['messages']} --runs {result['runs']}"
    date = result.get("date") or f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    path.write_text(
        f"""# Benchmarks

Capture side by side (issue 14), {_title(result).removeprefix("capture: ")}. The machine is shared
(other work ran beside the bench): the spread of each contestant's runs is in the first table.

- date: {date}; whole bench {result["wall_s"] / 60:.0f} min
- command: `{command}`
- machine: {m["cpu"]}, {m["memory"]} RAM, {m["os"]}, Python {m["python"]}
- peers: {m["mbsync"]}; {m["notmuch"]}; mail-parser; Dovecot {m["dovecot"].split()[0]}; {m["postgres"]}
- mailbox: {result["messages"]:,} distinct messages ({result["raw_mb"]:.0f} MB) from `bench/mailgen.py`,
  sizes and MIME shapes drawn from ../shared/corpora, people from a CRM of 50,000 contacts,
  10,000 accounts and 5,000 opportunities (every mailsync database starts as a copy of it)
{chart_line}
## Every contestant

{_md_table(CONTESTANT_HEADER, contestant_lines(result))}

## Against the peers and the targets

{_md_table(COMPARISON_HEADER, comparison_lines(result))}

How it is measured: `bench/capture_bench.py`. mailsync runs as its CLI in a subprocess on a fresh
database and archive each time, so its figures include start-up and loading the CRM. A capture run
counts only if it leaves every message in the database. APPEND→proposal: `mailsync run` idles on an
empty INBOX of its own on the same server; {result["latency"]["messages"]} messages from unknown people at
known accounts are appended one at a time and the database polled every 5 ms for the message row, then
the new-contact proposal; p50/p95 per run, median over runs. Peak memory is the sum of PSS over the
process tree (`bench/peak_memory.py`), sampled every 0.2 s. Archive ratio: bytes of the archive
directory after a SQLite sync over the bytes APPENDed.
""",
        encoding="utf-8",
    )


def write_chart(result: dict[str, Any], path: Path) -> None:
    """Throughput per contestant (log scale), and each target's attainment (≥ 1 is met)."""
    import matplotlib as mpl  # noqa: PLC0415 - only when a chart is asked for

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(CONTESTANTS)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    rates = [result["rates"][n] for n in names]
    colors = ["#9e9e9e" if CONTESTANTS[n][2] else "#1f77b4" for n in names]
    left.barh([CONTESTANTS[n][0] for n in names], rates, color=colors)
    left.set_xscale("log")
    left.invert_yaxis()
    left.set_xlabel("messages/s (log scale); grey: peers, blue: mailsync")
    for y, value in enumerate(rates):
        left.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    targets = [r for r in result["rows"] if r["met"] is not None]
    score = []
    for r in targets:
        bound = float(r["target"].split()[1].rstrip("×").replace(",", ""))
        value = r["ratio"] if r["peer_value"] else r["ours"]
        score.append(value / bound if r["target"].startswith("≥") else bound / value)
    labels = [f"{r['figure'].replace('capture, sync --once, ', '')} {r['target']}" for r in targets]
    right.barh(labels, score, color=["#2ca02c" if s >= 1 else "#d62728" for s in score])
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set_xscale("log")
    right.invert_yaxis()
    right.tick_params(axis="y", labelsize=7)
    right.set_xlabel("attainment (≥ 1 meets the target)")
    fig.suptitle(_title(result), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_profile(path: Path, console: Console, top: int = 25) -> None:
    buffer = io.StringIO()
    pstats.Stats(str(path), stream=buffer).strip_dirs().sort_stats("cumulative").print_stats(top)
    console.print(f"[bold]sync --once, top {top} by cumulative time[/] (profile: {path})")
    console.print(buffer.getvalue().split("\n", 4)[-1].strip("\n"), highlight=False, markup=False)
