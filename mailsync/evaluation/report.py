"""The evaluation's output: the score tables against the targets, every miss, the JSON, the command line."""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import mailsync.evaluation
from config.errors import CaptureError
from mailsync.evaluation.corpus import link_reliability, run_corpus, wilson
from mailsync.evaluation.labels import LANGUAGES
from mailsync.evaluation.runner import run_evaluation
from mailsync.evaluation.scoring import METRICS, meets
from mailsync.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mailsync.evaluation.scoring import Evaluation, Score

DEFAULT_SET = Path(__file__).resolve().parents[2] / "fixtures" / "eval"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _target_cell(result: Score, precision: float | None, recall: float | None) -> Text:
    ok = meets(result, precision, recall)
    if ok is None or result.tp + result.fp + result.fn == 0:
        return Text("—")  # no target, or nothing labelled and nothing claimed: no verdict either way
    cell = Text(f"P≥{precision:.2f} R≥{recall:.2f} ".replace("0.", "."))
    cell.append("✓" if ok else "✗", "green" if ok else "red")
    return cell


def render(evaluation: Evaluation, console: Console) -> None:
    """The score table, the per-language rows for de and es, field accuracies, then every miss."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"mailsync matching quality ({evaluation.coverage['messages_scored']} messages, "
        f"{evaluation.coverage['threads_scored']} threads)",
    )
    for column in ("metric", "lang", "P", "R", "F1", "tp/fp/fn", "target"):
        left = column in {"metric", "target"}
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for language, style in ((None, ""), ("de", "dim"), ("es", "dim")):
        for metric, (label, precision, recall) in METRICS.items():
            result = evaluation.score(metric, language)
            table.add_row(
                label,
                language or "all",
                _pct(result.precision),
                _pct(result.recall),
                _pct(result.f1),
                f"{result.tp}/{result.fp}/{result.fn}",
                _target_cell(result, precision, recall),
                style=style,
            )
        table.add_section()
    console.print(table)
    fields = Table(box=box.SIMPLE_HEAD, title="new-opportunity fields (over true positives)")
    for column in ("field", "correct", "share"):
        fields.add_column(column)
    for name, acc in evaluation.fields.items():
        fields.add_row(name, f"{acc.correct}/{acc.total}", _pct(acc.share))
    console.print(fields)
    threading = evaluation.threading
    console.print(
        Text(
            f"threading: {evaluation.coverage['threads_labelled']} labelled threads -> "
            f"{threading['product_threads']} product threads; merged: {', '.join(threading['merged']) or '-'}"
        )
    )
    for slug, parts in threading["split"].items():
        console.print(Text(f"  split {slug}: " + " | ".join(parts)))
    _render_misses(evaluation, console)
    for problem in evaluation.problems:
        console.print(Text(f"label/harness mismatch: {problem}", "yellow"))
    ingest = ", ".join(f"{k} {v}" for k, v in sorted(evaluation.ingest.items()))
    console.print(Text(f"ingest: {ingest}; {evaluation.seconds:.1f} s"))


def _interval(successes: int, total: int) -> str:
    if total == 0:
        return "—"
    interval = wilson(successes, total)
    return f"{interval.low:.2f}–{interval.high:.2f}".replace("0.", ".")


def render_parts(parts: dict[str, Evaluation], console: Console) -> None:
    """Dev and holdout side by side: P and R with Wilson 95 % intervals and counts, overall then per
    language; the target is judged on the holdout. Only the dev part's misses are listed: the holdout's
    messages stay unread so that nothing is tuned on them."""
    sizes = ", ".join(
        f"{part} {e.coverage['messages_scored']} messages / {e.coverage['threads_scored']} threads"
        for part, e in parts.items()
    )
    table = Table(box=box.SIMPLE_HEAD, title=f"mailsync matching quality ({sizes})")
    table.add_column("metric", no_wrap=True)
    table.add_column("lang", no_wrap=True)
    for part in parts:
        for column in ("P", "95% CI", "R", "95% CI", "tp/fp/fn"):
            table.add_column(
                f"{part} {column}" if column in {"P", "R"} else column, justify="right", no_wrap=True
            )
    table.add_column("target (holdout)", no_wrap=True)
    for language in (None, *LANGUAGES):
        for metric, (label, precision, recall) in METRICS.items():
            if metric == "threading" or (language is not None and precision is None):
                continue
            row = [label, language or "all"]
            for evaluation in parts.values():
                r = evaluation.score(metric, language)
                row += [
                    _pct(r.precision) if r.tp + r.fp else "—",
                    _interval(r.tp, r.tp + r.fp),
                    _pct(r.recall) if r.tp + r.fn else "—",
                    _interval(r.tp, r.tp + r.fn),
                    f"{r.tp}/{r.fp}/{r.fn}",
                ]
            holdout = parts.get("holdout")
            target = (
                _target_cell(holdout.score(metric, language), precision, recall) if holdout else Text("—")
            )
            table.add_row(*row, target, style="" if language is None else "dim")
        table.add_section()
    console.print(table)
    if "dev" in parts:
        _render_link_reliability(parts["dev"], console)
        _render_misses(parts["dev"], console)
    if "holdout" in parts:
        counts = Counter(f"{m['metric']} {m['miss']}" for m in misses(parts["holdout"]))
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        console.print(Text(f"holdout misses (counts only; the holdout is not read): {summary}"))
    for part, evaluation in parts.items():
        if part == "holdout" and evaluation.problems:  # they name holdout threads: a count only
            console.print(Text(f"holdout: {len(evaluation.problems)} label/harness mismatches", "yellow"))
            continue
        for problem in evaluation.problems:
            console.print(Text(f"{part}: label/harness mismatch: {problem}", "yellow"))


def _render_link_reliability(dev: Evaluation, console: Console) -> None:
    gold = sum(1 for i in dev.items if i.metric == "links" and not i.fp_only and i.gold)
    table = Table(box=box.SIMPLE_HEAD, title="dev: best link score vs precision (threshold calibration)")
    for column in ("score ≥", "threads", "precision", "recall"):
        table.add_column(column, justify="right")
    for row in link_reliability(dev, gold):
        table.add_row(f"{row['threshold']:.2f}", str(row["n"]), _pct(row["precision"]), _pct(row["recall"]))
    console.print(table)


def misses(evaluation: Evaluation) -> list[dict[str, str]]:
    """Every false positive and negative, as (metric, unit, FP/FN, what, product's side)."""
    found = []
    for item in evaluation.items:
        if item.metric == "threading":
            continue
        for kind, values in (
            ("FN", [] if item.fp_only else item.gold - item.predicted),
            ("FP", item.predicted - item.gold),
        ):
            found += [
                {"metric": item.metric, "unit": item.unit, "miss": kind, "what": v, "why": item.why}
                for v in sorted(values)
            ]
    rank = {metric: index for index, metric in enumerate(METRICS)}
    found.sort(key=lambda f: (rank[f["metric"]], f["miss"], f["unit"]))
    for name, acc in evaluation.fields.items():
        found += [
            {"metric": f"field:{name}", "unit": u, "miss": "wrong", "what": d, "why": ""}
            for u, d in acc.misses
        ]
    return found


def _render_misses(evaluation: Evaluation, console: Console) -> None:
    found = misses(evaluation)
    console.print(
        Text(f"misses: {len(found)} (FN: labelled, not predicted; FP: predicted, not labelled)", "bold")
    )
    for miss in found:
        line = Text(f"  {miss['metric']:<17} {miss['miss']:<5} {miss['unit']}: ")
        line.append(miss["what"], "bold")
        if miss["why"]:
            line.append(f"  ({miss['why']})", "dim")
        console.print(line)


def as_json(evaluation: Evaluation, *, reveal: bool = True) -> dict[str, Any]:
    """All numbers: every metric overall and per language, field accuracies, coverage, misses."""
    metrics = {}
    for metric, (_, precision, recall) in METRICS.items():
        overall = evaluation.score(metric)
        metrics[metric] = {
            **overall.as_dict(),
            "target": None if precision is None else {"precision": precision, "recall": recall},
            "meets_target": meets(overall, precision, recall),
            "by_language": {lang: evaluation.score(metric, lang).as_dict() for lang in LANGUAGES},
        }
    return {
        "metrics": metrics,
        "new_opportunity_fields": {
            name: {"correct": a.correct, "total": a.total, "share": None if math.isnan(a.share) else a.share}
            for name, a in evaluation.fields.items()
        },
        "threading": evaluation.threading
        if reveal
        else {"product_threads": evaluation.threading["product_threads"]},
        "coverage": evaluation.coverage,
        "ingest": evaluation.ingest,
        "runtime_seconds": round(evaluation.seconds, 2),
        "problems": evaluation.problems if reveal else len(evaluation.problems),
        "misses": misses(evaluation) if reveal else [],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: run, print, optionally write JSON. 0 when the run completes, 2 on an error."""
    description = (mailsync.evaluation.__doc__ or "").partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m mailsync.evaluation", description=description)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="labelled set directory")
    parser.add_argument(
        "--corpus",
        type=Path,
        help="a corpus with dev/ and holdout/ sets: scored side by side (replaces --set)",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--order", choices=("slug", "date"), default="slug", help="import order")
    args = parser.parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a file or a pipe gets whole rows, whatever the terminal
    configure_logging(json=False, level="warning")
    try:
        if args.corpus is not None:
            with console.status("scoring") as status:
                parts = run_corpus(args.corpus, lambda name: status.update(f"scoring {name}"))
            render_parts(parts, console)
            result = {part: as_json(e, reveal=part != "holdout") for part, e in parts.items()}
        else:
            evaluation = run_evaluation(args.set, args.order)
            render(evaluation, console)
            result = as_json(evaluation)
    except CaptureError as exc:
        Console(stderr=True, soft_wrap=True).print(
            Text(f"evaluation failed: {exc}\nfix: {exc.fix or '-'}", "red")
        )
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0
