"""The spaCy phrase index built from CRM data."""

from __future__ import annotations

from nlp.phrases import PhraseIndex, index_for
from storage.records import AccountRef, CrmSnapshot, OpportunityRef

ACME = AccountRef(1, "Acme Logistics")
FLEET = OpportunityRef(
    10, "O1", 1, "Acme Logistics - FleetSense rollout (40 vans)", "proposal", None, None, None
)
ROUTE = OpportunityRef(11, "O2", 1, "Acme Logistics – RouteIQ licences", "demo", None, None, None)
CRM = CrmSnapshot(accounts={1: ACME}, open_opportunities={1: (FLEET, ROUTE)})


def test_names_and_products_match_case_insensitively_without_the_account_prefix():
    index = PhraseIndex(CRM)
    assert index.products == {10: frozenset({"fleetsense"}), 11: frozenset({"routeiq"})}
    mentions = index.mentions("Re: the FLEETSENSE ROLLOUT\n\nAcme Logistics wants the fleetsense units now.")
    assert mentions == {10: {"fleetsense rollout", "fleetsense"}}
    assert index.score(10, mentions) == 1.0
    assert index.score(11, mentions) == 0.0
    assert index.mentions("Acme Logistics newsletter") == {}


def test_product_only_mention_scores_below_a_named_one():
    index = PhraseIndex(CRM)
    product_only = index.mentions("How many RouteIQ seats do we have?")
    assert 0 < index.score(11, product_only) < 0.6


def test_index_is_rebuilt_only_when_the_snapshot_changes():
    first = index_for(CRM)
    assert index_for(CRM) is first
    other = CrmSnapshot(accounts={1: ACME}, open_opportunities={1: (FLEET,)})
    assert index_for(other) is not first
