"""The evaluation's output: the score tables against the targets, every miss, the JSON, the command line."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import mailsync.evaluation
from config.errors import CaptureError
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
    if ok is None:
        return Text("—")
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


def as_json(evaluation: Evaluation) -> dict[str, Any]:
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
        "threading": evaluation.threading,
        "coverage": evaluation.coverage,
        "ingest": evaluation.ingest,
        "runtime_seconds": round(evaluation.seconds, 2),
        "problems": evaluation.problems,
        "misses": misses(evaluation),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: run, print, optionally write JSON. 0 when the run completes, 2 on an error."""
    description = (mailsync.evaluation.__doc__ or "").partition("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m mailsync.evaluation", description=description)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="labelled set directory")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--order", choices=("slug", "date"), default="slug", help="import order")
    args = parser.parse_args(argv)
    console = Console()
    configure_logging(json=False, level="warning")
    try:
        evaluation = run_evaluation(args.set, args.order)
    except CaptureError as exc:
        Console(stderr=True).print(Text(f"evaluation failed: {exc}\nfix: {exc.fix or '-'}", "red"))
        return 2
    render(evaluation, console)
    if args.json is not None:
        args.json.write_text(
            json.dumps(as_json(evaluation), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return 0
