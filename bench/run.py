"""Run every benchmark and print its table: `python -m bench.run` or `python bench/run.py` (`make bench`).

    python -m bench.run [--messages 10000] [--runs 3] [--markdown BENCHMARKS.md]
                        [--chart docs/bench/capture.png] [--json PATH] [--profile]
                        [--match-messages 5000] [--repeat 3] [--growth-total 100000] [--growth-step 10000]
                        [--scaleout-mailboxes 8] [--scaleout-per-mailbox 500] [--scaleout-runs 3]
                        [--rebuild-messages 10000] [--rebuild-contacts 50000] [--rebuild-sqlite-only]
                        [--rebuild-runs 3]
                        [--only capture|growth|match|model|memory|scaleout|rebuild]

The capture bench (bench/capture_bench.py) runs first and writes BENCHMARKS.md and its chart unless
--markdown/--chart say elsewhere ("" for neither); the scale-out, growth and rebuild benches put their
sections in the same file, and each bench replaces only its own sections, so `--only X` refreshes X and
keeps the rest. Benchmarks report, they never gate: the exit status is 0 even when a target is missed
(it is not when a contestant fails to capture everything).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in {None, ""}:  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from bench import (
    capture_bench,
    growth_bench,
    match_bench,
    memory_bench,
    model_bench,
    rebuild_bench,
    scaleout_bench,
)

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    capture_bench.add_arguments(parser)
    parser.set_defaults(markdown=ROOT / "BENCHMARKS.md", chart=ROOT / "docs" / "bench" / "capture.png")
    parser.add_argument("--match-messages", type=int, default=5_000, help="messages for the match bench")
    parser.add_argument("--repeat", type=int, default=3, help="match bench: best of this many runs")
    growth_bench.add_arguments(parser)
    scaleout_bench.add_arguments(parser, prefix="scaleout-")
    rebuild_bench.add_arguments(parser)
    parser.add_argument(
        "--only", choices=("capture", "growth", "match", "model", "memory", "scaleout", "rebuild")
    )
    args = parser.parse_args(argv)
    console = Console()
    if args.only in {None, "capture"}:
        capture_bench.run(
            args.messages,
            args.runs,
            console,
            json_path=args.json,
            markdown=args.markdown,
            chart=args.chart,
            profile=args.profile,
        )
    if args.only in {None, "scaleout"}:
        console.print()
        scaleout_bench.run(
            args.scaleout_mailboxes,
            args.scaleout_per_mailbox,
            args.scaleout_runs,
            console,
            markdown=args.markdown,
        )
    if args.only in {None, "growth"}:
        console.print()
        growth_bench.run(
            args.growth_total,
            args.growth_step,
            console,
            ROOT / "docs" / "bench" / "growth.png",
            markdown=args.markdown or None,
        )
    if args.only in {None, "match"}:
        console.print()
        match_bench.run(args.match_messages, args.repeat, console)
    if args.only in {None, "model"}:
        console.print()
        model_bench.run(console=console)  # says so and moves on when the optional model is missing
    if args.only in {None, "memory"}:
        console.print()
        memory_bench.run(console=console)
    if args.only in {None, "rebuild"}:
        console.print()
        rebuild_bench.run(
            args.rebuild_messages,
            console,
            contacts=args.rebuild_contacts,
            postgres=not args.rebuild_sqlite_only,
            runs=args.rebuild_runs,
            markdown=args.markdown or None,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
