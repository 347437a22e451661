"""A new opportunity's account is named by the statistical pipeline's organisations when the CRM has none."""

from __future__ import annotations

from datetime import UTC, datetime

from nlp.match import match_people
from nlp.phrases import build_index
from nlp.propose import ThreadView, propose
from storage.records import AccountRef, Address, CrmSnapshot, OpportunityRef, ProposalKind

REP = "dana@nw.example"
ACME = AccountRef(1, "Acme Logistics")
FLEET = OpportunityRef(10, "O1", 1, "Acme Logistics - FleetSense rollout", "proposal", None, None, REP)
CRM = CrmSnapshot(
    accounts={1: ACME},
    accounts_by_domain={"acme.example": ACME},
    open_opportunities={1: (FLEET,)},
    reps=frozenset({REP}),
    internal_domains=frozenset({"nw.example"}),
)
ASK = (
    "We at Brightwater Utilities are interested in 40 FleetSense units. Could you send us a quote? "
    "Our budget is USD 52000 and we need them by March 3. Acme Logistics recommended you."
)


def new_opportunity(sender: str, body: str = ASK):
    message = match_people(
        fingerprint="fp-1",
        sent_at=datetime(2026, 10, 1, tzinfo=UTC),
        subject="Quote request",
        body=body,
        people=[("from", Address("Jo Park", sender)), ("to", Address("", REP))],
        automated=None,
        crm=CRM,
    )
    proposals = propose(ThreadView("root@x", "Quote request", None, (message,), REP), CRM)
    return next(p for p in proposals if p.kind is ProposalKind.NEW_OPPORTUNITY)


def test_blank_pipeline_names_the_account_by_its_domain(blank_afterwards):
    build_index(CRM, None)
    found = new_opportunity("jo@bwu-mail.example")
    assert found.payload["account"] == "Bwu Mail"
    assert found.payload["new_account_domain"] == "bwu-mail.example"
    assert {"organisations", "money_named", "dates_named"}.isdisjoint(found.payload)


def test_an_organisation_the_crm_does_not_know_names_the_new_account(mini_pipeline, blank_afterwards):
    build_index(CRM, mini_pipeline)
    found = new_opportunity("jo@bwu-mail.example")
    assert found.payload["account"] == "Brightwater Utilities"
    assert found.payload["account_id"] is None
    assert found.payload["new_account_domain"] == "bwu-mail.example"
    assert found.summary.startswith("New opportunity: Brightwater Utilities – ")
    # Every entity of the customer's mail is evidence, known organisations included.
    assert found.payload["organisations"] == "Brightwater Utilities; FleetSense; Acme Logistics"
    assert found.payload["money_named"] == "USD 52000"
    assert found.payload["dates_named"] == "March 3"


def test_only_crm_accounts_and_phrases_named_falls_back_to_the_domain(mini_pipeline, blank_afterwards):
    build_index(CRM, mini_pipeline)
    found = new_opportunity("jo@bwu-mail.example", ASK.replace("We at Brightwater Utilities", "We"))
    assert found.payload["account"] == "Bwu Mail"
    assert found.payload["organisations"] == "FleetSense; Acme Logistics"
