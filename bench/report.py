"""The capture bench's result as tables (rich), BENCHMARKS.md and a PNG chart (matplotlib)."""

from __future__ import annotations

import io
import os
import platform
import pstats
import shutil
import statistics
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
    "capture SQLite": ("mailsync capture, SQLite", "mailsync sync --once --capture-only, SQLite", False),
    "capture PostgreSQL": (
        "mailsync capture, PostgreSQL",
        "mailsync sync --once --capture-only, PostgreSQL",
        False,
    ),
    "sync SQLite": ("mailsync sync, SQLite", "mailsync sync --once (capture + processing), SQLite", False),
    "sync PostgreSQL": (
        "mailsync sync, PostgreSQL",
        "mailsync sync --once (capture + processing), PostgreSQL",
        False,
    ),
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
    for db in ("SQLite", "PostgreSQL"):  # capture as issue 14 defines it: archived, recorded, cursor moved
        ours = rate[f"capture {db}"]
        found += [
            Row(
                f"capture, sync --once --capture-only, {db}",
                ours,
                "msg/s",
                "mbsync",
                rate["mbsync"],
                "≥ 1.5× mbsync",
                ours >= 1.5 * rate["mbsync"],
            ),
            Row(
                f"capture, sync --once --capture-only, {db}",
                ours,
                "msg/s",
                "bare fetch",
                rate["bare fetch"],
                "≥ 0.5× bare fetch",
                ours >= 0.5 * rate["bare fetch"],
            ),
            Row(
                f"capture + processing, sync --once, {db}",
                rate[f"sync {db}"],
                "msg/s",
                "mbsync",
                rate["mbsync"],
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


def md_table(header: tuple[str, ...], lines: list[list[str]]) -> str:
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
    capture = f"""# Benchmarks

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

{md_table(CONTESTANT_HEADER, contestant_lines(result))}

## Against the peers and the targets

{md_table(COMPARISON_HEADER, comparison_lines(result))}

How it is measured: `bench/capture_bench.py`. mailsync runs as its CLI in a subprocess on a fresh
database and archive each time, so its figures include start-up and loading the CRM. A capture run
counts only if it leaves every message in the database. APPEND→proposal: `mailsync run` idles on an
empty INBOX of its own on the same server; {result["latency"]["messages"]} messages from unknown people at
known accounts are appended one at a time and the database polled every 5 ms for the message row, then
the new-contact proposal; p50/p95 per run, median over runs. Peak memory is the sum of PSS over the
process tree (`bench/peak_memory.py`), sampled every 0.2 s. Archive ratio: bytes of the archive
directory after a SQLite sync over the bytes APPENDed.
"""
    put_sections(path, capture)


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
    ticks = [t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 5) if min(score) / 2 <= t <= max(score) * 2]
    right.set_xticks(ticks, labels=[f"{t:g}" for t in ticks])
    right.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())  # log-scale minor labels overlap
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


# -- scale-out (issue 16): several `mailsync run` on one PostgreSQL against one on SQLite ---------------

SCALEOUT_HEADER = (
    "setup", "processes", "captured, s per run", "capture msg/s", "× SQLite×1", "processed, s per run",
    "processed msg/s", "× SQLite×1", "CPU s mailsync/pg/dovecot/other", "cores busy",
    "messages per daemon", "handoffs/lost",
)  # fmt: skip


def _as_list(value: int | list[int]) -> list[int]:
    return value if isinstance(value, list) else [value]  # one figure in results of before 2026-11-30


def _other(cpu: dict[str, float]) -> float:
    """The machine's busy CPU seconds not spent by the daemons, their PostgreSQL backends or Dovecot."""
    return max(0.0, cpu["machine"] - cpu["mailsync"] - cpu["postgres"] - cpu["dovecot"])


def _per_daemon(runs: list[list[int]]) -> str:
    """What each daemon fetched, per run ("+" between daemons, "·" between runs), once if every run
    gave the same."""
    shown = ["+".join(str(n) for n in run) for run in runs]
    return f"{shown[0]}, every run" if len(set(shown)) == 1 else " · ".join(shown)


def _cores(row: dict[str, Any]) -> float:
    cpu = row["cpu"]
    return cpu["machine"] / cpu["wall"] if cpu["wall"] else 0.0


def scaleout_lines(result: dict[str, Any]) -> list[list[str]]:
    out = []
    for row in result["rows"]:
        cpu = row["cpu"]
        out.append([
            row["setup"], str(row["processes"]),
            " / ".join(f"{s:.1f}" for s in row["capture_s"]), _num(row["capture_rate"], "msg/s"),
            f"{row['capture_ratio']:.2f}×" if row["capture_ratio"] else "—",
            " / ".join(f"{s:.1f}" for s in row["processed_s"]), _num(row["processed_rate"], "msg/s"),
            f"{row['processed_ratio']:.2f}×" if row["processed_ratio"] else "—",
            " / ".join(f"{v:.0f}" for v in (cpu["mailsync"], cpu["postgres"], cpu["dovecot"], _other(cpu))),
            f"{_cores(row):.2f} of {os.cpu_count()}",
            _per_daemon(row["per_daemon"]),
            f"{row['handoffs']} / {row['lost']}",
        ])  # fmt: skip
    return out


def _scaleout_title(result: dict[str, Any]) -> str:
    return (
        f"scale-out: {result['messages']:,} messages ({result['raw_mb']:.0f} MB) in {result['mailboxes']} "
        f"mailboxes, `mailsync run` × N, parse_workers = 1, median of {result['runs']} alternating runs"
    )


def print_scaleout(result: dict[str, Any], console: Console) -> None:
    table = Table(title=_scaleout_title(result))
    for i, column in enumerate(SCALEOUT_HEADER):
        table.add_column(column, justify="left" if i == 0 else "right")
    for line in scaleout_lines(result):
        table.add_row(*line)
    console.print(table)
    console.print(where_the_time_goes(result), style="dim")


def where_the_time_goes(result: dict[str, Any]) -> str:
    """The paragraph under the table, every figure from the result."""
    n = result["messages"]
    parts = []
    for row in result["rows"]:
        cpu = row["cpu"]
        total = cpu["machine"] or 1.0
        parts.append(
            f"{row['setup']}×{row['processes']}: {cpu['wall']:.0f} s from release to processed, the cores "
            f"{_cores(row) / (os.cpu_count() or 1):.0%} busy ({cpu['machine']:.0f} CPU s); mailsync "
            f"{cpu['mailsync'] / total:.0%} ({1000 * cpu['mailsync'] / n:.1f} ms of CPU per message), "
            f"PostgreSQL backends {cpu['postgres'] / total:.0%}, Dovecot {cpu['dovecot'] / total:.0%}, "
            f"everything else on the machine {_other(cpu) / total:.0%}"
        )
    pg = {r["processes"]: r for r in result["rows"] if r["setup"] == "PostgreSQL"}
    one = result["rows"][0]
    captured, processed = statistics.median(one["capture_s"]), statistics.median(one["processed_s"])
    summary = (
        f" With {one['setup']}×{one['processes']} every message was archived and committed after "
        f"{captured:.0f} s of the {processed:.0f} s to processed ({captured / processed:.0%}); the rest is "
        "processing (parse, match, thread, propose), which runs in one daemon at a time (the holder of "
        "the job:drain lease) while every daemon captures."
    )
    if 1 in pg and max(pg) > 1:
        most = pg[max(pg)]
        busy = _cores(pg[1]) / (os.cpu_count() or 1)
        why = (
            "so more processes share the same cores rather than add any"
            if busy >= 0.85  # the cores were full already
            else "so more processes had idle cores to use"
        )
        summary += (
            f" From 1 to {most['processes']} processes on PostgreSQL capture went "
            f"{pg[1]['capture_rate']:,.0f} → {most['capture_rate']:,.0f} msg/s and processing "
            f"{pg[1]['processed_rate']:,.0f} → {most['processed_rate']:,.0f} msg/s; with one process the "
            f"{os.cpu_count()} cores were {busy:.0%} busy already, {why}."
        )
        per_message = most["cpu"]["mailsync"] / max(pg[1]["cpu"]["mailsync"], 1e-9)
        if per_message >= 1.5:  # more CPU for the same messages: work done more than once
            summary += (
                f" mailsync's own CPU for the same {n:,} messages grew {per_message:.1f}× from 1 to "
                f"{most['processes']} processes; a likely reason, from the code: each daemon's drain reads "
                "the oldest pending messages and parses them before its claim (FOR UPDATE SKIP LOCKED) "
                "tells it another process has them, so processes draining at once parse the same "
                "messages (mailsync/pipeline/process.py)."
            )
    return "Where the time goes (CPU seconds, user + sys, from /proc): " + "; ".join(parts) + "." + summary


def write_scaleout_markdown(result: dict[str, Any], path: Path) -> None:
    """Put the "## Scale-out" section in `path` (replacing the one there), the rest of the file kept."""
    m = result["machine"]
    rows = result["rows"]
    checks = (
        f"every run left {result['messages']:,} messages with one provenance each and every mailbox's "
        f"{result['per_mailbox']} copies; {sum(r['shared_mailboxes'] for r in rows)} mailbox(es) had mail "
        f"fetched by two daemons, {sum(r['handoffs'] for r in rows)} lease(s) changed hands and "
        f"{sum(r['lost'] for r in rows)} were lost during the measured windows; every daemon exited 0"
    )
    quarantined = [r for r in rows if sum(_as_list(r["quarantined"]))]
    if quarantined:
        checks += ". Quarantined (messages per run): " + "; ".join(
            f"{r['setup']}×{r['processes']} {' / '.join(map(str, _as_list(r['quarantined'])))}"
            + (f" ({', '.join(r['reasons'])})" if r.get("reasons") else "")
            for r in quarantined
        )
    section = f"""## Scale-out

{_scaleout_title(result).removeprefix("scale-out: ")} (issue 16). On this machine
({m["cpu"]}, shared with Dovecot and PostgreSQL) the figure is reported, not targeted; what must
hold is correct sharing: {checks}.

- date: {result["date"]}; whole section {result["wall_s"] / 60:.0f} min
- command: `make bench   # python -m bench.run --only scaleout --scaleout-mailboxes {result["mailboxes"]} \
--scaleout-per-mailbox {result["per_mailbox"]} --scaleout-runs {result["runs"]}`

{md_table(SCALEOUT_HEADER, scaleout_lines(result))}

{where_the_time_goes(result)}

How it is measured: `bench/scaleout_bench.py`. Each run starts from an empty database (a copy of the
50k-contact CRM) and archive; the N daemons share one config (`[daemon] parse_workers = 1`, a 2 s poll
without IDLE) and are started, and on PostgreSQL their mailbox leases shared out evenly, before the
clock starts. Then every mailbox's mail is COPYed into its INBOX at once. Captured: every message row
and its provenance committed (a batch's cursor moves in the same commit). Processed: no message left
pending (parsed, matched, threaded, proposed). Messages per daemon: what each fetched, one
`+`-separated list per run. Handoffs: mailbox leases whose holder or fencing token changed between the
release and the end (a daemon's other mailboxes wait while it drains, without renewing their leases, so
a drain longer than `lease_seconds` lets them expire and whichever daemon polls first takes them: legal
under fencing, but churn); lost: `lease_lost` events. "Other" is the machine's busy time not spent by the
daemons (with their parse workers), the run's PostgreSQL backends or Dovecot: the bench's own polling,
PostgreSQL's background writers, and other work on the host.
"""
    put_sections(path, section)


def _split(text: str) -> tuple[str, list[str]]:
    """The text before the first "## " heading, and each "## " section (heading line included)."""
    head, *sections = ("\n" + text).split("\n## ")
    return head.removeprefix("\n"), ["## " + section for section in sections]


def _heading(section: str) -> str:
    return section.split("\n", 1)[0]


def put_sections(path: Path, text: str) -> None:
    """Write `text`'s "## " sections into `path`, each in place of the one with its heading (else at
    the end), and its preamble, if any, in place of the file's; the other benches' sections are kept,
    so that `--only X` refreshes X alone."""
    head, sections = _split(path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n")
    new_head, fresh = _split(text)
    for section in fresh:
        at = [i for i, old in enumerate(sections) if _heading(old) == _heading(section)]
        if at:
            sections[at[0]] = section
        else:
            sections.append(section)
    parts = [(new_head if new_head.strip() else head).strip("\n"), *(s.strip("\n") for s in sections)]
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
