"""A corpus of labelled sets, scored as two parts: dev (rules and model are tuned on it) and holdout.

    fixtures/corpus/dev/<seller>/       labelled sets the rules, the classifier and thresholds may see
    fixtures/corpus/holdout/<seller>/   a locked holdout: written by other helpers, never tuned on

Every set is run on its own (its own CRM, mailbox owner and internal domains, runner.py), then each
part's items are pooled: a part's scores are micro-averaged over all its threads and messages, with a
Wilson 95 % interval, because 30 threads of one kind give a precision that can move by ±0.1.
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import ConfigError
from mailsync.evaluation.runner import run_evaluation
from mailsync.evaluation.scoring import Accuracy, Evaluation
from mailsync.evaluation.train import bank_samples, default_sets, save, sentence_samples, train
from nlp.intent import shipped, using

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

PARTS = ("dev", "holdout")
_Z95 = 1.959964


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float


def wilson(successes: int, total: int) -> Interval:
    """The Wilson score interval (95 %) of a proportion; [0, 1] when there is nothing to count."""
    if total == 0:
        return Interval(0.0, 1.0)
    p = successes / total
    denominator = 1 + _Z95**2 / total
    centre = (p + _Z95**2 / (2 * total)) / denominator
    half = _Z95 * math.sqrt(p * (1 - p) / total + _Z95**2 / (4 * total**2)) / denominator
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def set_dirs(corpus: Path, part: str) -> list[Path]:
    """The labelled sets of one part, by name; a ConfigError when the part has none."""
    found = sorted(p.parent for p in (corpus / part).glob("*/labels.json"))
    if not found:
        raise ConfigError(
            f"{corpus / part}: no labelled set (a directory with labels.json)",
            fix="point --corpus at a directory with dev/<set>/labels.json and holdout/<set>/labels.json",
        )
    return found


def pooled(named: Sequence[tuple[str, Evaluation]]) -> Evaluation:
    """One evaluation of several sets: units prefixed with the set's name, counts summed."""
    items = []
    fields: dict[str, Accuracy] = {}
    coverage: Counter[str] = Counter()
    ingest: Counter[str] = Counter()
    product_threads = 0
    split: dict[str, object] = {}
    merged: list[str] = []
    problems = []
    link_scores = []
    seconds = 0.0
    for name, evaluation in named:
        items += [replace(i, unit=f"{name}/{i.unit}") for i in evaluation.items]
        for field_name, acc in evaluation.fields.items():
            total = fields.setdefault(field_name, Accuracy())
            total.correct += acc.correct
            total.total += acc.total
            total.misses += [(f"{name}/{unit}", detail) for unit, detail in acc.misses]
        coverage.update(evaluation.coverage)
        ingest.update(evaluation.ingest)
        product_threads += evaluation.threading["product_threads"]
        split.update({f"{name}/{k}": v for k, v in evaluation.threading["split"].items()})
        merged += [f"{name}: {m}" for m in evaluation.threading["merged"]]
        problems += [f"{name}: {p}" for p in evaluation.problems]
        seconds += evaluation.seconds
        link_scores += evaluation.link_scores
    threading = {"product_threads": product_threads, "split": split, "merged": merged}
    return Evaluation(items, fields, threading, dict(coverage), problems, dict(ingest), seconds, link_scores)


def link_reliability(evaluation: Evaluation, gold_links: int) -> list[dict[str, float | int]]:
    """For each candidate threshold: the links that would be made or listed at or above it, their
    precision, and the recall over the labelled links (the calibration of the link thresholds)."""
    rows = []
    for step in range(4, 19):
        t = step / 20
        made = [right for score, right in evaluation.link_scores if score >= t]
        rows.append(
            {
                "threshold": t,
                "n": len(made),
                "precision": sum(made) / len(made) if made else math.nan,
                "recall": sum(made) / gold_links if gold_links else math.nan,
            }
        )
    return rows


def run_corpus(corpus: Path, progress: Callable[[str], None] | None = None) -> dict[str, Evaluation]:
    """Each part of the corpus, every set run through the real pipeline and pooled.

    A dev set is scored with a classifier trained on the other dev sets (leave one seller out), the
    way the holdout meets the shipped one: what a seller's own mail taught the model never flatters
    that seller's score. The shipped thresholds apply throughout.
    """
    model = shipped()
    results = {}
    for part in PARTS:
        named = []
        for directory in set_dirs(corpus, part):
            if progress is not None:
                progress(f"{part}/{directory.name}")
            if part == "dev" and model is not None:
                named.append((directory.name, _without_itself(directory, corpus, model.thresholds)))
            else:
                named.append((directory.name, run_evaluation(directory)))
        results[part] = pooled(named)
    return results


def _without_itself(directory: Path, corpus: Path, thresholds: dict[str, float]) -> Evaluation:
    own = (directory / "labels.json").read_bytes()  # by content: a copy of the set is the set
    sets = [d for d in default_sets(corpus / "dev") if (d / "labels.json").read_bytes() != own]
    examples = [s for d in sets for s in sentence_samples(d)] + bank_samples(corpus / "bank")
    with tempfile.TemporaryDirectory(prefix="mailsync-cv-") as tmp:
        if examples:  # else no other seller to learn from: the rules alone score this one
            save(train(examples), Path(tmp) / "intent", {"thresholds": thresholds})
        with using(Path(tmp) / "intent"):
            return run_evaluation(directory)
