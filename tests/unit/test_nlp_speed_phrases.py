"""The phrase index tokenises only a text that can mention a phrase (nlp/phrases.py): what it finds is
still exactly what the PhraseMatcher finds in the whole text, with few phrase keys and with many."""

from __future__ import annotations

import pytest

from nlp import phrases
from nlp.phrases import _FEW_KEYS, _MAX_TEXT, PhraseIndex
from storage.records import AccountRef, CrmSnapshot, OpportunityRef

ACME = AccountRef(1, "Acme Logistics")


def _crm(names: list[str]) -> CrmSnapshot:
    opps = tuple(
        OpportunityRef(10 + i, f"O{i}", 1, f"Acme Logistics - {name}", "proposal", None, None, None)
        for i, name in enumerate(names)
    )
    return CrmSnapshot(accounts={1: ACME}, open_opportunities={1: opps})


FEW = ["FleetSense rollout (40 vans)", "RouteIQ licences", "ΣΥΣΤΗΜΑΣ upgrade", "X5 sensors", "İzmir depot"]
# Enough distinct product terms that keys are found by their first characters, not one by one.
MANY = FEW + [f"Prod{i}Suite phase {i}" for i in range(2 * _FEW_KEYS)] + ["AB1 kit"]

TEXTS = [
    "",
    "Acme Logistics newsletter",
    "Re: the FLEETSENSE ROLLOUT\n\nAcme wants the fleetsense units now.",
    "How many RouteIQ seats do we have?  routeiq\tLICENCES, please.",
    "Fleetsense\nrollout is split over two lines; FleetSense  rollout has two spaces.",
    "The ΣΥΣΤΗΜΑΣ upgrade, the συστημας upgrade and the ΣΥΣΤΗΜΑΣ.upgrade.",
    "İZMİR DEPOT and izmir depot and İzmir depot.",
    "An x5 sensors order; the X5-sensors; (x5) sensors.",
    "prod3suite phase 3 and PROD17SUITE PHASE 17 and prod1suite phase 2; ab1 kit.",
    "fleetsense" * 3000,  # longer than what is read: the cut is the same
    "x" * (_MAX_TEXT - 5) + " FleetSense rollout",
    "Hello\n\nthe weather\r\nRe: FleetSense rollout\r\n  routeiq licences  \n\n\n x5\nsensors\n-- \nAcme",
    "Fleet\nSense rollout, and the fleet\n\nsense rollout: a name over two lines.",
]


def _matcher(index: PhraseIndex, text: str) -> frozenset[str]:
    """What the matcher finds in the whole text, tokenised: the reading before the key test."""
    doc = index.nlp.make_doc(text[:_MAX_TEXT])
    return frozenset(index._phrase_of[label] for label, _, _ in index.matcher(doc))


# A name over two lines: a phrase with a line break in it, so a match may span lines.
BROKEN = [*FEW, "Fleet\nSense rollout"]


@pytest.mark.parametrize("names", [FEW, MANY, BROKEN], ids=["few-keys", "many-keys", "name-over-two-lines"])
def test_mentions_are_what_the_matcher_finds_in_the_whole_text(names):
    index = PhraseIndex(_crm(names))
    assert index._keys is not None
    assert bool(index._keys.by_gram) == (names is MANY)  # both ways of looking for keys are covered
    assert index._line_local == (names is not BROKEN)
    for text in TEXTS:
        assert index.mentions(text) == _matcher(index, text), text[:80]
    assert index.mentions(TEXTS[2]) == {"fleetsense rollout", "fleetsense"}
    assert "συστημας upgrade" in index.mentions(TEXTS[5])


def test_a_text_that_holds_no_phrase_key_is_not_tokenised(monkeypatch):
    index = PhraseIndex(_crm(FEW))
    made: list[str] = []
    make_doc = index.nlp.make_doc
    monkeypatch.setattr(index.nlp, "make_doc", lambda text: made.append(text) or make_doc(text))
    assert index.mentions("Acme Logistics newsletter: the fleet is on the road") == frozenset()
    assert made == []
    assert index.mentions("Acme wants the fleetsense units") == {"fleetsense"}
    assert len(made) == 1


def test_a_pipeline_that_lower_cases_its_own_way_tokenises_every_text(monkeypatch):
    index = PhraseIndex(_crm(FEW))
    monkeypatch.setattr(phrases.lex_attrs, "lower", lambda text: text.lower())  # not the getter in use
    assert PhraseIndex(_crm(FEW), nlp=index.nlp)._keys is None


def test_only_the_lines_that_hold_a_phrase_key_are_tokenised(monkeypatch):
    index = PhraseIndex(_crm(FEW))
    made: list[str] = []
    make_doc = index.nlp.make_doc
    monkeypatch.setattr(index.nlp, "make_doc", lambda text: made.append(text) or make_doc(text))
    text = "Re: FleetSense rollout\nHello Ana,\n\nthe vans arrive Monday.\nThe ROUTEIQ licences too.\nBest"
    assert index.mentions(text) == {"fleetsense rollout", "fleetsense", "routeiq licences", "routeiq"}
    assert made == ["Re: FleetSense rollout\nThe ROUTEIQ licences too."]
