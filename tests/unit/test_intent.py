"""The learned intent classifier: how its training examples are derived, that training is deterministic,
that its hits only add to the rules, and that the shipped model loads with calibrated thresholds."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from config.errors import ConfigError
from mailsync.evaluation.corpus import pooled, wilson
from mailsync.evaluation.scoring import Evaluation, Item, Score
from mailsync.evaluation.train import Sample, bank_samples, out_of_fold, samples, sentence_samples, train
from nlp.intent import CALIBRATION, LABELS, MODEL_DIR, IntentModel, prepared, shipped, using
from nlp.propose import signals
from storage.records import Address, Match, Participant

ROOT = Path(__file__).resolve().parents[2]
EVAL_SET = ROOT / "fixtures" / "eval"

# Made-up words: no phrase rule knows them, so whatever is found here was learned.
_TEXTS = {
    "won": ["the flurbo is gronked", "our flurbo got gronked today"],
    "lost": ["the flurbo is wibbled", "our flurbo got wibbled today"],
    "intent": ["could a flurbo be quibbed", "we would quib a flurbo"],
    "neutral": ["the weather is grey", "the car park is full"],
}


def _tiny() -> list[Sample]:
    return 10 * [
        Sample("g", f"{label}-{i}", text, label)
        for label, texts in _TEXTS.items()
        for i, text in enumerate(texts)
    ]


def _model(tmp_path: Path, threshold: float) -> IntentModel:
    nlp = train(_tiny())
    nlp.to_disk(tmp_path / "m")
    (tmp_path / "m" / CALIBRATION).write_text(
        json.dumps({"thresholds": dict.fromkeys(("intent", "won", "lost"), threshold)})
    )
    return IntentModel(tmp_path / "m")


def _match(text: str, sender: str) -> Match:
    internal = sender.endswith("@us.example")
    person = Participant(
        address=Address(name="", email=sender),
        role="from",
        contact=None,
        account=None,
        internal=internal,
        free_mail=False,
    )
    return Match(
        fingerprint="f",
        sent_at=datetime(2026, 3, 1, tzinfo=UTC),
        subject="s",
        text=text,
        participants=(person,),
        automated=None,
    )


def test_wilson_interval_is_the_textbook_one():
    assert wilson(0, 0).low == 0.0
    assert wilson(0, 0).high == 1.0
    interval = wilson(8, 10)
    assert round(interval.low, 3) == 0.490
    assert round(interval.high, 3) == 0.943
    assert wilson(10, 10).high == pytest.approx(1.0)


def test_pooled_sets_sum_counts_and_keep_units_apart():
    one = Evaluation(
        [Item("won", "t", "en", frozenset({"won"}), frozenset({"won"}))],
        {},
        {"product_threads": 1, "split": {}, "merged": []},
        {"files": 2},
        [],
    )
    two = Evaluation(
        [Item("won", "t", "de", frozenset({"won"}), frozenset())],
        {},
        {"product_threads": 3, "split": {}, "merged": []},
        {"files": 5},
        ["x"],
    )
    both = pooled([("a", one), ("b", two)])
    assert both.score("won") == Score(tp=1, fn=1)
    assert {i.unit for i in both.items} == {"a/t", "b/t"}
    assert both.coverage == {"files": 7}
    assert both.threading["product_threads"] == 4
    assert both.problems == ["b: x"]


def test_training_examples_come_from_customer_mail_with_classes_derived_from_the_thread_labels():
    found = samples(EVAL_SET)
    labels = json.loads((EVAL_SET / "labels.json").read_text(encoding="utf-8"))["threads"]
    assert found
    assert {s.label for s in found} <= set(LABELS)
    by_thread: dict[str, list[Sample]] = {}
    for s in found:
        by_thread.setdefault(s.unit.split("/")[0], []).append(s)
    for slug, taken in by_thread.items():
        label = labels[slug]
        if label["kind"] in {"noise", "internal", "other"}:
            assert {s.label for s in taken} == {"neutral"}, slug
        elif label["signal"]:
            assert taken[-1].label == label["signal"], slug  # the last customer message carries it
            assert all(s.label in {"intent", "neutral"} for s in taken[:-1]), slug
    assert not any(s.unit.startswith("internal-") for s in found)  # our own mail is never an example


def test_training_is_deterministic():
    first, second = train(_tiny()), train(_tiny())
    text = prepared("we signed the order form")
    assert first(text).cats == second(text).cats


def test_learned_hits_add_to_the_rules_on_customer_mail_only(tmp_path):
    model = _model(tmp_path, threshold=0.3)
    outside = _match("Hello Ana. Sadly the flurbo is wibbled.", "ana@customer.example")
    assert not [h for h in signals(outside) if h.kind == "lost"]  # no rule reads it
    learned = [h for h in signals(outside, model) if h.learned]
    assert [h.kind for h in learned] == ["lost"]
    assert learned[0].sentence == "Sadly the flurbo is wibbled."  # the sentence that says it
    ours = _match("Sadly the flurbo is wibbled.", "rep@us.example")
    assert not [h for h in signals(ours, model) if h.learned]  # the classifier reads customers only
    both = _match(
        "The flurbo is wibbled. We decided to stay with our current supplier.", "ana@customer.example"
    )
    assert {h.kind for h in signals(both) if not h.learned} & {"lost"}
    assert not [h for h in signals(both, model) if h.learned]  # the rules read the outcome: they are evidence


def test_a_class_reads_when_its_probability_reaches_its_threshold_even_if_another_is_likelier(tmp_path):
    model = _model(tmp_path, threshold=0.5)
    mixed = "the flurbo is wibbled and the weather is grey and the car park is full"
    verdict = model.classify(mixed)
    assert verdict.label != "lost"
    lost = verdict.scores["lost"]
    assert 0.05 < lost < verdict.probability  # neither nothing nor the likeliest class
    model.thresholds = {"intent": 1.01, "won": 1.01, "lost": lost - 0.01}
    assert model.find(mixed) == ("lost", mixed)
    model.thresholds["lost"] = lost + 0.01
    assert model.find(mixed) is None


def test_a_threshold_above_one_switches_a_class_off(tmp_path):
    model = _model(tmp_path, threshold=1.01)
    outside = _match("Sadly the flurbo is wibbled.", "ana@customer.example")
    assert not [h for h in signals(outside, model) if h.learned]


def test_the_shipped_model_loads_with_calibrated_thresholds_and_is_small():
    model = shipped()
    if model is None:
        pytest.fail(f"no classifier in {MODEL_DIR}: run `make train`")
    assert set(model.thresholds) == {"intent", "won", "lost"}
    assert all(0.0 < t <= 1.01 for t in model.thresholds.values())
    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert size < 3 * 1024 * 1024
    assert set(model.classify("could you send us a quote?").scores) == set(LABELS)


def test_a_model_that_does_not_load_turns_classification_off(tmp_path):
    broken = tmp_path / "intent"
    broken.mkdir()
    (broken / CALIBRATION).write_text(json.dumps({"thresholds": {"won": 0.5}}))
    (broken / "config.cfg").write_text("[nlp]\nlang = ???\n")
    with using(broken):
        assert shipped() is None
    assert shipped() is not None  # the shipped one is back outside the block


def test_labelled_sentences_are_the_examples_where_a_set_has_them(tmp_path):
    (tmp_path / "sentences.tsv").write_text(
        "unit\tindex\tclass\tsentence\nt/01.eml\t0\tlost\tWe chose another vendor.\nt/01.eml\t1\tneutral\tThanks!\n",
        encoding="utf-8",
    )
    found = sentence_samples(tmp_path)
    assert [(s.unit, s.label, s.text) for s in found] == [
        ("t/01.eml#0", "lost", "We chose another vendor."),
        ("t/01.eml#1", "neutral", "Thanks!"),
    ]
    (tmp_path / "sentences.tsv").write_text("unit\tindex\tclass\tsentence\nt/01.eml\t0\tmaybe\tHm.\n")
    with pytest.raises(ConfigError, match=r"sentences.tsv:2"):
        sentence_samples(tmp_path)


def test_the_sentence_bank_is_trained_on_and_never_scored(tmp_path):
    for writer in ("w1", "w2"):
        (tmp_path / writer).mkdir()
        (tmp_path / writer / "sentences.tsv").write_text(
            f"unit\tindex\tclass\tsentence\n{writer}-001\t0\tlost\tthe flurbo is wibbled\n", encoding="utf-8"
        )
    bank = bank_samples(tmp_path)
    assert [(s.group, s.unit, s.label) for s in bank] == [
        ("w1", "w1-001#0", "lost"),
        ("w2", "w2-001#0", "lost"),
    ]
    sellers = [Sample(g, f"{g}-{s.unit}", s.text, s.label) for g in ("a", "b") for s in _tiny()]
    predictions = out_of_fold(sellers, bank)
    assert {sample.group for sample, _ in predictions} == {"a", "b"}  # the bank is no calibration fold
    assert len(predictions) == len(sellers)
    assert bank_samples(tmp_path / "absent") == []


def test_read_ahead_gives_find_the_answers_it_would_find_alone_with_no_pass_of_its_own(monkeypatch):
    bodies = [
        part.get_payload(decode=True).decode("utf-8", "replace")
        for path in sorted((ROOT / "fixtures" / "demo" / "Maildir").glob("**/cur/*"))
        for part in email.message_from_bytes(path.read_bytes(), policy=policy.default).walk()
        if part.get_content_type() == "text/plain"
    ]
    assert len(bodies) > 20
    alone = IntentModel(MODEL_DIR)
    expected = [alone.find(body) for body in bodies]
    assert any(expected)  # the demo's customers ask and decide: something is found
    ahead = IntentModel(MODEL_DIR)
    ahead.read_ahead([*bodies, bodies[0]])  # a text twice is read once
    monkeypatch.setattr(ahead, "classify_many", lambda _texts: pytest.fail("find classified again"))
    assert [ahead.find(body) for body in bodies] == expected
