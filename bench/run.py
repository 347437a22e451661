"""Run every benchmark and print its table: `python -m bench.run` or `python bench/run.py`.

    python -m bench.run [--messages 5000] [--capture-messages 2000] [--profile]
                        [--only match|capture|model|memory]

Benchmarks report, they never gate: the exit status is 0 even when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in {None, ""}:  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from bench import capture_bench, match_bench, memory_bench, model_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000, help="messages for the match bench")
    parser.add_argument("--repeat", type=int, default=3, help="match bench: best of this many runs")
    parser.add_argument("--capture-messages", type=int, default=2_000, help="messages for the capture bench")
    parser.add_argument("--profile", action="store_true", help="capture bench: also profile mailsync")
    parser.add_argument("--only", choices=("match", "capture", "model", "memory"))
    args = parser.parse_args(argv)
    console = Console()
    if args.only in {None, "match"}:
        match_bench.run(args.messages, args.repeat, console)
    if args.only in {None, "capture"}:
        console.print()
        capture_bench.run(args.capture_messages, args.profile, console)
    if args.only in {None, "model"}:
        console.print()
        model_bench.run(console=console)  # says so and moves on when the optional model is missing
    if args.only in {None, "memory"}:
        console.print()
        memory_bench.run(console=console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
