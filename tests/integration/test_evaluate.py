"""The evaluation harness: scoring on hand-built gold/predicted sets, then one real run on fixtures/eval."""

from __future__ import annotations

import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailsync.evaluation.corpus import link_reliability
from mailsync.evaluation.labels import Labels, MailFile
from mailsync.evaluation.observe import Observed, Suggested
from mailsync.evaluation.report import DEFAULT_SET, main
from mailsync.evaluation.scoring import (
    Evaluation,
    Item,
    Score,
    evaluate_observed,
    fragments,
    map_threads,
    meets,
    pair_items,
    score,
)


def item(gold, predicted, *, metric="links", language="en", fp_only=False):
    return Item(metric, "t", language, frozenset(gold), frozenset(predicted), fp_only=fp_only)


# --- scoring -----------------------------------------------------------------------------------------


def test_perfect_predictions_score_one():
    result = score([item({"OPP-1"}, {"OPP-1"}), item(set(), set()), item({"OPP-2"}, {"OPP-2"})])
    assert result == Score(tp=2, fp=0, fn=0)
    assert (result.precision, result.recall, result.f1) == (1.0, 1.0, 1.0)


def test_one_false_positive_and_one_false_negative():
    result = score(
        [
            item({"OPP-1"}, {"OPP-1"}),
            item({"OPP-2"}, {"OPP-2"}),
            item({"OPP-3"}, set()),  # FN: not found
            item(set(), {"OPP-4"}),  # FP: a link on a thread that has none
        ]
    )
    assert result == Score(tp=2, fp=1, fn=1)
    assert result.precision == pytest.approx(2 / 3)
    assert result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(2 / 3)


def test_a_wrong_link_is_a_false_positive_and_a_false_negative():
    result = score([item({"OPP-1"}, {"OPP-2"}), item({"OPP-3"}, {"OPP-3"})])
    assert result == Score(tp=1, fp=1, fn=1)
    assert (result.precision, result.recall) == (0.5, 0.5)


def test_empty_cases_follow_the_documented_convention():
    # Nothing predicted and nothing to find: nothing was wrong.
    nothing = score([item(set(), set())])
    assert (nothing.precision, nothing.recall, nothing.f1) == (1.0, 1.0, 1.0)
    assert Score().precision == 1.0
    # Nothing predicted but something to find: P is 0.0, not nan.
    silent = score([item({"won"}, set())])
    assert (silent.precision, silent.recall, silent.f1) == (0.0, 0.0, 0.0)
    # Predictions but no gold: every one is a false positive.
    noisy = score([item(set(), {"won"})])
    assert (noisy.precision, noisy.recall, noisy.f1) == (0.0, 0.0, 0.0)
    assert not any(math.isnan(v) for v in (silent.precision, noisy.recall))


def test_a_split_off_fragment_counts_only_false_positives():
    assert score([item({"OPP-1"}, {"OPP-1"}, fp_only=True)]) == Score()
    assert score([item({"OPP-1"}, set(), fp_only=True)]) == Score()
    assert score([item({"OPP-1"}, {"OPP-2"}, fp_only=True)]) == Score(fp=1)


def test_targets_need_both_precision_and_recall():
    assert meets(Score(tp=19, fp=1, fn=1), 0.95, 0.90) is True
    assert meets(Score(tp=9, fp=1, fn=0), 0.95, 0.90) is False
    assert meets(Score(tp=1), None, None) is None


def test_scores_split_by_language():
    evaluation = Evaluation(
        items=[item({"a"}, {"a"}, language="de"), item({"b"}, set(), language="es"), item(set(), {"c"})],
        fields={},
        threading={},
        coverage={},
        problems=[],
    )
    assert evaluation.score("links", "de") == Score(tp=1)
    assert evaluation.score("links", "es") == Score(fn=1)
    assert evaluation.score("links") == Score(tp=1, fp=1, fn=1)
    assert evaluation.score("won") == Score()


# --- thread mapping ----------------------------------------------------------------------------------


def test_a_labelled_thread_maps_to_its_majority_product_thread():
    groups = {"a": [7, 8, 8], "b": [9, 10], "c": [None, None], "d": [None, 11]}
    mapping = map_threads(groups)
    assert mapping == {"a": 8, "b": 9, "c": None, "d": 11}  # b: tie -> the first message's thread
    assert fragments(groups, mapping) == {7: "a", 10: "b"}


def test_threading_pairs_are_counted_once():
    order = [("a/01", "a", "en", 1), ("a/02", "a", "en", 1), ("a/03", "a", "en", 2), ("b/01", "b", "de", 2)]
    result = score(pair_items(order))
    # gold pairs: (a1,a2) (a1,a3) (a2,a3); predicted: (a1,a2) (a3,b1)
    assert result == Score(tp=1, fp=1, fn=2)


def test_predictions_are_read_from_the_products_suggestions():
    labels = Labels.model_validate(
        {
            "mailbox_owner": "lena@halvorsen.example",
            "internal_domains": ["halvorsen.example"],
            "messages": {
                "m1@x": {"thread": "deal", "language": "de", "contacts": ["CON-1"]},
                "m2@x": {"thread": "deal", "language": "en", "contacts": ["CON-1", "CON-2"]},
                "m3@x": {"thread": "fresh", "language": "es", "contacts": []},
            },
            "threads": {
                "deal": {"kind": "existing_opportunity", "opportunity": "OPP-1", "new_opportunity": None,
                         "signal": "won", "stage": None},
                "fresh": {"kind": "new_opportunity", "opportunity": None, "signal": None, "stage": None,
                          "new_opportunity": {"account": None, "company_domain": "new.example",
                                              "amount": "9900.00", "currency": "USD", "first_seen": "2026-07-14"}},
            },
        }
    )  # fmt: skip
    when = datetime(2026, 7, 14, tzinfo=UTC)
    files = [
        MailFile(Path(f"/x/{slug}/{name}"), f"{slug}/{name}", slug, mid, when)
        for slug, name, mid in (
            ("deal", "01.eml", "m1@x"),
            ("deal", "02.eml", "m2@x"),
            ("fresh", "01.eml", "m3@x"),
        )
    ]
    seen = Observed(
        thread_of={"m1@x": 1, "m2@x": 1, "m3@x": 2},
        status=dict.fromkeys(("m1@x", "m2@x", "m3@x"), "parsed"),
        people={
            "m1@x": [("a@c.example", "CON-1")],
            "m2@x": [("a@c.example", "CON-1"), ("b@c.example", None)],
        },
        thread_key={1: "k1", 2: "k2"},
        thread_opportunity={1: None, 2: None},
        known_ids=frozenset({"OPP-1", "CON-1", "CON-2"}),
        open_opportunities=frozenset({"OPP-1"}),
    )
    seen.suggestions[1] += [
        Suggested(1, "link_thread", "link:k1", {"opportunity_id": 5}, "", "OPP-1", None),
        Suggested(
            2,
            "stage_change",
            "stage:k1:5:closed_lost",
            {"to_stage": "closed_lost"},
            "we chose",
            "OPP-1",
            None,
        ),
    ]
    seen.suggestions[2] += [
        Suggested(3, "new_opportunity", "new_opportunity:k2", {"first_seen_at": "2026-07-14", "amount": "9900",
                  "currency": "USD", "new_account_domain": "new.example", "outcome": None}, "quote?", None, None)
    ]  # fmt: skip
    evaluation = evaluate_observed(labels, files, seen)
    assert evaluation.score("contacts") == Score(tp=2, fp=0, fn=1)  # CON-2 missed in m2
    assert evaluation.score("contacts", "de") == Score(tp=1)
    assert evaluation.score("links") == Score(tp=1)
    assert evaluation.score("new_opportunities") == Score(tp=1)
    assert evaluation.score("won") == Score(fn=1)
    assert evaluation.score("lost") == Score(fp=1)
    assert evaluation.score("threading") == Score(tp=1)
    assert {name: (a.correct, a.total) for name, a in evaluation.fields.items()} == {
        "first_seen": (1, 1),
        "amount_currency": (1, 1),
        "account": (1, 1),
    }
    assert evaluation.coverage["messages_scored"] == 3
    assert evaluation.coverage["threads_scored"] == 2
    assert evaluation.problems == []


def test_moved_contacts_and_automatic_links_are_scored():
    labels = Labels.model_validate(
        {
            "mailbox_owner": "lena@halvorsen.example",
            "internal_domains": ["halvorsen.example"],
            "messages": {"m1@x": {"thread": "moved", "language": "en", "contacts": []}},
            "threads": {
                "moved": {"kind": "existing_opportunity", "opportunity": "OPP-1", "new_opportunity": None,
                          "signal": None, "stage": None, "moved_contacts": ["CON-1"]},
            },
        }
    )  # fmt: skip
    files = [
        MailFile(Path("/x/moved/01.eml"), "moved/01.eml", "moved", "m1@x", datetime(2026, 7, 14, tzinfo=UTC))
    ]
    seen = Observed(
        thread_of={"m1@x": 1},
        status={"m1@x": "parsed"},
        thread_key={1: "k1"},
        thread_opportunity={1: None},
        known_ids=frozenset({"OPP-1", "CON-1"}),
        open_opportunities=frozenset({"OPP-1"}),
    )
    seen.suggestions[1] += [
        Suggested(1, "link_thread", "link:k1", {"opportunity_id": 5, "mode": "suggest"}, "", "OPP-1", None),
        Suggested(
            2, "contact_moved", "contact_moved:7:a@new.example", {"contact_id": 7}, "", None, None, "CON-1"
        ),
    ]
    evaluation = evaluate_observed(labels, files, seen)
    assert evaluation.score("links") == Score(tp=1)
    assert evaluation.score("auto_links") == Score(fn=1)  # only suggested, not made
    assert evaluation.score("moved_contacts") == Score(tp=1)
    assert evaluation.problems == []


# --- end to end --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_harness_runs_the_real_pipeline_on_the_labelled_set(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["--set", str(DEFAULT_SET), "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    labels = json.loads((DEFAULT_SET / "labels.json").read_text(encoding="utf-8"))

    coverage = report["coverage"]
    assert coverage["messages_scored"] == coverage["messages_labelled"] == len(labels["messages"])
    assert coverage["messages_stored"] == len(labels["messages"])
    assert coverage["threads_scored"] == coverage["threads_labelled"] == len(labels["threads"])
    assert coverage["files"] == len(labels["messages"])
    assert report["ingest"].get("failed", 0) == 0

    contacts = report["metrics"]["contacts"]
    assert contacts["recall"] > 0
    assert sum(contacts["by_language"][lang]["tp"] for lang in ("en", "de", "es")) == contacts["tp"]
    for metric in (
        "links",
        "new_opportunities",
        "won",
        "lost",
        "stage_advances",
        "moved_contacts",
        "auto_links",
    ):
        numbers = report["metrics"][metric]
        assert set(numbers) >= {"tp", "fp", "fn", "precision", "recall", "f1", "by_language"}
    assert report["runtime_seconds"] < 60

    printed = capsys.readouterr().out
    assert "thread → opportunity" in printed
    assert "✓" in printed or "✗" in printed
    assert "misses:" in printed


@pytest.mark.slow
def test_the_corpus_is_scored_dev_and_holdout_side_by_side_and_the_holdout_stays_unread(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    shutil.copytree(DEFAULT_SET, corpus / "dev" / "one")
    shutil.copytree(DEFAULT_SET.parent / "corpus" / "dev" / "brightline-print", corpus / "dev" / "two")
    shutil.copytree(DEFAULT_SET, corpus / "holdout" / "other")
    out = tmp_path / "eval.json"
    assert main(["--corpus", str(corpus), "--json", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert set(report) == {"dev", "holdout"}
    dev, holdout = report["dev"], report["holdout"]
    assert holdout["metrics"]["links"]["tp"] > 0
    assert dev["coverage"]["threads_labelled"] > holdout["coverage"]["threads_labelled"]  # two sets
    assert holdout["misses"] == []  # counts only: nothing to tune on
    assert dev["misses"]
    printed = capsys.readouterr().out
    assert "holdout misses (counts only" in printed
    assert "95% CI" in printed
    assert "best link score vs precision" in printed


def test_a_corpus_without_a_holdout_is_an_error_that_says_what_to_do(tmp_path, capsys):
    (tmp_path / "dev").mkdir()
    assert main(["--corpus", str(tmp_path)]) == 2
    assert "no labelled set" in capsys.readouterr().err


def _split_deal(fragment_deal: str) -> tuple[Labels, list[MailFile], Observed]:
    """One labelled lost deal whose award notice the product filed in a thread of its own."""
    labels = Labels.model_validate(
        {
            "mailbox_owner": "lena@halvorsen.example",
            "internal_domains": ["halvorsen.example"],
            "messages": {
                "m1@x": {"thread": "tender", "language": "en", "contacts": []},
                "m2@x": {"thread": "tender", "language": "en", "contacts": []},
                "m3@x": {"thread": "tender", "language": "en", "contacts": []},
            },
            "threads": {
                "tender": {"kind": "existing_opportunity", "opportunity": "OPP-1", "new_opportunity": None,
                           "signal": "lost", "stage": None},
            },
        }
    )  # fmt: skip
    files = [
        MailFile(
            Path(f"/x/tender/0{i}.eml"),
            f"tender/0{i}.eml",
            "tender",
            f"m{i}@x",
            datetime(2026, 7, i, tzinfo=UTC),
        )
        for i in (1, 2, 3)
    ]
    seen = Observed(
        thread_of={"m1@x": 1, "m2@x": 1, "m3@x": 2},
        status=dict.fromkeys(("m1@x", "m2@x", "m3@x"), "parsed"),
        thread_key={1: "k1", 2: "k2"},
        thread_opportunity={1: "OPP-1", 2: None},
        known_ids=frozenset({"OPP-1", "OPP-2"}),
        open_opportunities=frozenset({"OPP-1", "OPP-2"}),
    )
    seen.suggestions[2].append(
        Suggested(
            9, "stage_change", "stage:k2:5", {"to_stage": "closed_lost"}, "awarded", fragment_deal, None
        )
    )
    return labels, files, seen


def test_an_outcome_filed_in_a_split_off_thread_counts_for_its_deal_once():
    evaluation = evaluate_observed(*_split_deal("OPP-1"))
    assert evaluation.score("lost") == Score(tp=1)  # the notice moved the labelled deal: right


def test_an_outcome_on_another_deal_in_a_split_off_thread_does_not_count():
    evaluation = evaluate_observed(*_split_deal("OPP-2"))
    assert evaluation.score("lost") == Score(fn=1)


def test_link_reliability_counts_what_each_threshold_would_make():
    evaluation = Evaluation([], {}, {}, {}, [], link_scores=[(0.9, True), (0.65, False), (0.3, True)])
    rows = {r["threshold"]: r for r in link_reliability(evaluation, gold_links=4)}
    assert rows[0.6]["n"] == 2
    assert rows[0.6]["precision"] == 0.5
    assert rows[0.6]["recall"] == 0.25
    assert rows[0.2]["recall"] == 0.5
