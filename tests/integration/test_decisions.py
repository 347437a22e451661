"""Decisions are data: decide() on real SQLite and PostgreSQL, the event log first, replays and refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from config.errors import DecisionError
from mailsync.approval.decisions import (
    DecisionRequest,
    apply_decision_events,
    decide,
    decide_all,
    resolve_key,
    short_id,
)
from storage import models as m
from storage.crm import apply_crm_import, crm_version
from storage.eventlog import EventLog
from storage.mailstore import save_proposals
from storage.records import Evidence, Proposal, ProposalKind
from storage.repo import Repo

DANA, SAM, MIA = "dana@northwind.example", "sam@northwind.example", "mia@northwind.example"
NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
FIRST_MAIL = datetime(2026, 1, 22, 14, 5, tzinfo=UTC)

CRM = {
    "reps": [
        {"email": DANA, "name": "Dana", "team": "East", "lead": MIA},
        {"email": SAM, "name": "Sam", "team": "West", "lead": MIA},
        {"email": MIA, "name": "Mia", "team": "Management"},
    ],
    "accounts": [
        {"id": "ACC-1", "name": "Acme Logistics", "domains": ["acme.example"]},
        {"id": "ACC-2", "name": "Globex", "domains": ["globex.example"]},
    ],
    "contacts": [
        {"id": "CON-1", "account_id": "ACC-1", "name": "Rachel Kim", "emails": ["rachel@acme.example"], "owner_rep": DANA},
    ],
    "opportunities": [
        {"id": "OPP-1", "account_id": "ACC-1", "name": "Acme - rollout", "stage": "proposal", "stage_raw": "Proposal/Price Quote",
         "amount": "52000.00", "currency": "USD", "owner_rep": DANA, "created_at": "2026-01-26T00:00:00"},
        {"id": "OPP-2", "account_id": "ACC-1", "name": "Acme - pilot", "stage": "discovery", "stage_raw": "Discovery",
         "amount": None, "currency": None, "owner_rep": DANA, "created_at": None},
    ],
}  # fmt: skip


def evidence(when=FIRST_MAIL, quote="Could you send us a quote for 40 vans?"):
    return (Evidence(fingerprint="f" * 64, sent_at=when, quote=quote),)


def proposals(ids):
    """One proposal of every kind, as the propose stage makes them, on the seeded CRM's ids."""
    return {
        "new_opportunity": Proposal(
            ProposalKind.NEW_OPPORTUNITY,
            "new_opportunity:t-granite@granitepeak.example",
            "New opportunity: Granite Peak Builders – FleetSense info",
            {"name": "Granite Peak Builders – FleetSense info", "account_id": None, "account": "Granite Peak Builders",
             "new_account_domain": "granitepeak.example", "contacts": "jake@granitepeak.example",
             "amount": "41650.00", "currency": "USD", "first_seen_at": "2026-01-22", "outcome": None},
            0.9,
            evidence(FIRST_MAIL) + evidence(datetime(2026, 1, 25, 8, 0, tzinfo=UTC), "We'd like 40 units."),
            DANA,
        ),
        "link_thread": Proposal(
            ProposalKind.LINK_THREAD,
            "link:t-acme@acme.example",
            "Link “Pricing for 40 vans” to Acme - rollout?",
            {"opportunity_id": ids["OPP-1"], "opportunity": "Acme - rollout", "mode": "suggest", "score": 0.5,
             "because": "name", "candidates": "Acme - rollout (0.50); Acme - pilot (0.40)"},
            0.5,
            evidence(),
            DANA,
        ),
        "stage_change": Proposal(
            ProposalKind.STAGE_CHANGE,
            f"stage:t-acme@acme.example:{ids['OPP-1']}",
            "Move Acme - rollout from proposal to closed_won",
            {"opportunity_id": ids["OPP-1"], "opportunity": "Acme - rollout", "from_stage": "proposal",
             "to_stage": "closed_won"},
            0.8,
            evidence(quote="We signed the order."),
            DANA,
        ),
        "new_contact": Proposal(
            ProposalKind.NEW_CONTACT,
            "new_contact:nadia@acme.example",
            "Add Nadia Petrova <nadia@acme.example> as a contact at Acme Logistics",
            {"email": "nadia@acme.example", "name": "Nadia Petrova", "account_id": ids["ACC-1"], "account": "Acme Logistics"},
            0.9,
            evidence(quote="I'm taking over from Rachel."),
            SAM,
        ),
        "contact_moved": Proposal(
            ProposalKind.CONTACT_MOVED,
            f"contact_moved:{ids['CON-1']}:rachel@initech.example",
            "Rachel Kim moved from Acme Logistics to initech.example (rachel@initech.example)",
            {"contact_id": ids["CON-1"], "contact": "Rachel Kim", "email": "rachel@initech.example",
             "old_account_id": ids["ACC-1"], "old_account": "Acme Logistics", "new_account_id": None,
             "new_account": None, "new_account_domain": "initech.example"},
            0.85,
            evidence(quote="I've moved to Initech."),
            DANA,
        ),
    }  # fmt: skip


def seed(repo):
    """The CRM above, two conversations, and one open proposal of every kind; returns the proposals."""
    with repo.session() as s:
        apply_crm_import(s, CRM)
        s.add_all([
            m.Thread(key="t-granite@granitepeak.example", subject="FleetSense info", first_at=FIRST_MAIL.replace(tzinfo=None)),
            m.Thread(key="t-acme@acme.example", subject="Pricing for 40 vans"),
        ])  # fmt: skip
        s.flush()
        ids = {
            row.external_id: row.id
            for model in (m.Account, m.Contact, m.Opportunity)
            for row in s.scalars(select(model))
        }
        threads = dict(s.execute(select(m.Thread.key, m.Thread.id)).all())
        made = proposals(ids)
        for kind, proposal in made.items():
            key = "t-granite@granitepeak.example" if kind == "new_opportunity" else "t-acme@acme.example"
            save_proposals(s, threads[key], [proposal])
    return made


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A migrated database (SQLite file, or a PostgreSQL database of this test alone), seeded."""
    if request.param == "sqlite":
        repo = Repo(f"sqlite:///{tmp_path / 'crm.db'}")
        repo.upgrade()
    else:
        repo = Repo(request.getfixturevalue("pg_fresh_url"))
    made = seed(repo)
    yield repo, made
    repo.dispose()


@pytest.fixture
def events(tmp_path):
    return EventLog(tmp_path / "events")


def approve(repo, events, key, who=DANA, how="link", **edits):
    return decide(repo, events, DecisionRequest(key, "approve", who, how, edits, digest_token="tok123"), NOW)


def one(repo, model, *where):
    with repo.session() as s:
        return s.scalars(select(model).where(*where)).one()


def status(repo, key):
    return one(repo, m.Suggestion, m.Suggestion.key == key).status


# --- approving each kind ---------------------------------------------------------------------------


def test_new_opportunity_creates_the_deal_with_its_real_start_and_links_the_conversation(store, events):
    repo, made = store
    key = made["new_opportunity"].key
    result = approve(repo, events, key)
    opp = one(repo, m.Opportunity, m.Opportunity.name == "Granite Peak Builders – FleetSense info")
    account = one(repo, m.Account, m.Account.id == opp.account_id)
    assert (account.name, one(repo, m.AccountDomain, m.AccountDomain.account_id == account.id).domain) == (
        "Granite Peak Builders",
        "granitepeak.example",
    )
    assert opp.created_at == NOW.replace(tzinfo=None)  # entered now...
    assert opp.first_seen_at == FIRST_MAIL.replace(tzinfo=None)  # ...seen in mail since January
    assert (opp.amount, opp.currency, opp.stage, opp.owner_rep, opp.outcome) == (
        Decimal("41650.00"), "USD", "qualification", DANA, None,
    )  # fmt: skip
    assert one(repo, m.Thread, m.Thread.key == "t-granite@granitepeak.example").opportunity_id == opp.id
    assert result.verdict == "approve"
    assert result.summary.startswith("Created the opportunity Granite Peak Builders – FleetSense info")
    assert status(repo, key) == "approved"


def test_the_decision_is_recorded_with_who_how_when_edits_digest_and_its_event(store, events):
    repo, made = store
    key = made["new_opportunity"].key
    approve(
        repo, events, key, amount="50000", stage="Negotiation/Review", currency="eur", name="Granite - fleet"
    )
    opp = one(repo, m.Opportunity, m.Opportunity.name == "Granite - fleet")
    assert (opp.amount, opp.currency, opp.stage) == (Decimal("50000.00"), "EUR", "negotiation")
    decision = one(repo, m.Decision)
    edits = {"amount": "50000.00", "currency": "EUR", "stage": "negotiation", "name": "Granite - fleet"}
    assert (decision.verdict, decision.who, decision.how, decision.at, decision.digest_token) == (
        "approve", DANA, "link", NOW.replace(tzinfo=None), "tok123",
    )  # fmt: skip
    assert decision.edits == edits
    [event] = list(events)
    assert event.id == decision.event_id
    assert event.kind == "decision"
    assert event.payload == {"key": key, "verdict": "approve", "edits": edits, "who": DANA, "how": "link",
                             "digest_token": "tok123", "at": NOW.isoformat()}  # fmt: skip


def test_link_sets_the_conversations_opportunity_the_top_candidate_or_the_one_named(store, events):
    repo, made = store
    key = made["link_thread"].key
    with pytest.raises(DecisionError) as caught:
        approve(repo, events, key, opportunity="Acme")
    assert caught.value.reason == "bad_edit"
    assert "Acme - rollout (0.50); Acme - pilot (0.40)" in caught.value.fix  # the candidates to pick from
    result = approve(repo, events, key, opportunity="OPP-2")
    pilot = one(repo, m.Opportunity, m.Opportunity.external_id == "OPP-2")
    assert one(repo, m.Thread, m.Thread.key == "t-acme@acme.example").opportunity_id == pilot.id
    assert result.summary == "Linked “Pricing for 40 vans” to Acme - pilot"


def test_link_without_a_choice_takes_the_top_candidate(store, events):
    repo, made = store
    approve(repo, events, made["link_thread"].key)
    rollout = one(repo, m.Opportunity, m.Opportunity.external_id == "OPP-1")
    assert one(repo, m.Thread, m.Thread.key == "t-acme@acme.example").opportunity_id == rollout.id


def test_stage_change_to_won_records_outcome_and_close(store, events):
    repo, made = store
    result = approve(repo, events, made["stage_change"].key, close_date="2026-03-01")
    opp = one(repo, m.Opportunity, m.Opportunity.external_id == "OPP-1")
    assert (opp.stage, opp.outcome, opp.closed_at) == (
        "closed_won",
        "won",
        datetime(2026, 3, 1, tzinfo=UTC).replace(tzinfo=None),
    )
    assert result.summary == "Moved Acme - rollout from proposal to closed_won"


def test_stage_change_edited_to_lost_closes_now(store, events):
    repo, made = store
    approve(repo, events, made["stage_change"].key, stage="Closed Lost")
    opp = one(repo, m.Opportunity, m.Opportunity.external_id == "OPP-1")
    assert (opp.stage, opp.outcome, opp.closed_at) == ("closed_lost", "lost", NOW.replace(tzinfo=None))


def test_new_contact_is_created_at_the_account_of_its_domain(store, events):
    repo, made = store
    approve(repo, events, made["new_contact"].key, who=SAM, name="Nadia Petrova-Lee")
    address = one(repo, m.ContactAddress, m.ContactAddress.email == "nadia@acme.example")
    contact = one(repo, m.Contact, m.Contact.id == address.contact_id)
    acme = one(repo, m.Account, m.Account.external_id == "ACC-1")
    assert (contact.name, contact.account_id, contact.owner_rep) == ("Nadia Petrova-Lee", acme.id, SAM)


def test_moved_contact_goes_to_the_new_company_with_the_new_address(store, events):
    repo, made = store
    result = approve(repo, events, made["contact_moved"].key)
    rachel = one(repo, m.Contact, m.Contact.external_id == "CON-1")
    initech = one(repo, m.Account, m.Account.id == rachel.account_id)
    assert initech.name == "initech.example"
    with repo.session() as s:
        addresses = set(
            s.scalars(select(m.ContactAddress.email).where(m.ContactAddress.contact_id == rachel.id))
        )
    assert addresses == {"rachel@acme.example", "rachel@initech.example"}
    assert result.summary == "Moved Rachel Kim to initech.example (new account) (rachel@initech.example)"


def test_reject_closes_the_proposal_and_changes_no_crm_row(store, events):
    repo, made = store
    key = made["stage_change"].key
    result = decide(repo, events, DecisionRequest(key, "reject", DANA, "reply"), NOW)
    assert status(repo, key) == "rejected"
    assert one(repo, m.Opportunity, m.Opportunity.external_id == "OPP-1").stage == "proposal"
    assert result.summary == "Rejected: move Acme - rollout from proposal to closed_won"
    assert one(repo, m.Decision).how == "reply"


# --- refusals: nothing is logged, nothing changes -------------------------------------------------


def refused(repo, events, request):
    before = len(list(events))
    with pytest.raises(DecisionError) as caught:
        decide(repo, events, request, NOW)
    assert len(list(events)) == before  # a refused decision writes nothing
    return caught.value


def test_unknown_decided_and_not_yours_are_refused_with_who_and_when(store, events):
    repo, made = store
    key = made["link_thread"].key
    assert refused(repo, events, DecisionRequest("link:nope", "approve", DANA, "link")).reason == "unknown"
    error = refused(repo, events, DecisionRequest(key, "approve", SAM, "link"))
    assert error.reason == "not_yours"
    assert str(error) == f"proposal {key} is {DANA}'s; {SAM} may not decide it"
    approve(repo, events, key, who=MIA)  # dana's lead may
    error = refused(repo, events, DecisionRequest(key, "reject", DANA, "reply"))
    assert error.reason == "decided"
    assert str(error) == f"proposal {key} was approved already by {MIA} on 2026-03-10 09:30 UTC (link)"
    assert one(repo, m.Decision).who == MIA


def test_a_rep_who_left_decides_nothing_by_link_or_reply_their_lead_and_admins_do(store, events):
    repo, made = store
    with repo.session() as session:
        session.scalars(select(m.Rep).where(m.Rep.email == DANA)).one().active = False
    key = made["link_thread"].key
    for how in ("link", "reply"):
        error = refused(repo, events, DecisionRequest(key, "approve", DANA, how))
        assert error.reason == "not_yours"
        assert "has left the team" in str(error)
    approve(repo, events, key, who=MIA)  # the lead decides a departed rep's proposals
    assert one(repo, m.Decision).who == MIA


@pytest.mark.parametrize(
    ("kind", "edits", "names"),
    [
        ("new_opportunity", {"colour": "red"}, "'colour'"),
        ("new_opportunity", {"amount": "1,000"}, "amount '1,000'"),
        ("new_opportunity", {"amount": "-5"}, "amount '-5'"),
        ("new_opportunity", {"currency": "UDS"}, "currency 'UDS'"),
        ("new_opportunity", {"stage": "maybe"}, "stage 'maybe'"),
        ("new_opportunity", {"close_date": "31/03/2026"}, "close_date '31/03/2026'"),
        ("new_opportunity", {"close_date": "2026-03-31"}, "close_date=2026-03-31 needs a closed stage"),
        ("new_contact", {"amount": "5"}, "cannot edit amount of a new contact proposal"),
    ],
)
def test_bad_edits_name_the_field_and_what_it_takes(store, events, kind, edits, names):
    repo, made = store
    key = made[kind].key
    error = refused(repo, events, DecisionRequest(key, "approve", made[kind].owner_rep, "reply", edits))
    assert error.reason == "bad_edit"
    assert names in str(error)
    assert error.fix
    assert status(repo, key) == "open"


def test_a_withdrawn_proposal_is_no_longer_decidable(store, events):
    repo, made = store
    key = made["link_thread"].key
    with repo.session() as s:
        s.scalars(select(m.Suggestion).where(m.Suggestion.key == key)).one().status = "withdrawn"
    error = refused(repo, events, DecisionRequest(key, "approve", DANA, "link"))
    assert (error.reason, str(error)) == (
        "unknown",
        f"proposal {key} is no longer proposed: later mail withdrew it",
    )


def test_dry_run_says_what_would_happen_and_writes_nothing(store, events):
    repo, made = store
    key = made["new_opportunity"].key
    result = decide(repo, events, DecisionRequest(key, "approve", "cli:admin", "cli"), NOW, dry_run=True)
    assert result.summary.startswith("Created the opportunity")
    assert list(events) == []
    assert status(repo, key) == "open"
    with repo.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Opportunity)) == 2


def test_decide_all_decides_each_and_reports_each_refusal(store, events):
    repo, made = store
    keys = [made["link_thread"].key, "link:gone", made["new_contact"].key]
    results = decide_all(repo, events, keys, DANA, "link", "tok123")
    assert [getattr(r, "reason", "ok") for r in results] == ["ok", "unknown", "not_yours"]  # nadia is sam's
    assert status(repo, made["link_thread"].key) == "approved"


# --- the event log first, and replays ---------------------------------------------------------------


def test_a_decision_changes_the_crm_version_so_the_pipeline_reloads(store, events):
    repo, made = store
    with repo.session() as s:
        before = crm_version(s)
    decide(repo, events, DecisionRequest(made["new_contact"].key, "reject", SAM, "link"), NOW)
    with repo.session() as s:
        assert crm_version(s)[0] == before[0] + 1


def test_replaying_the_log_onto_a_database_that_lacks_the_decisions_applies_them_once(
    store, events, tmp_path
):
    repo, made = store
    approve(repo, events, made["new_opportunity"].key, amount="45000")
    decide(repo, events, DecisionRequest(made["link_thread"].key, "reject", DANA, "reply"), NOW)
    # The state a kill between "appended" and "applied" leaves: the log has it, this database does not.
    other = Repo(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    other.upgrade()
    try:
        seed(other)
        replay = apply_decision_events(other, EventLog(tmp_path / "events"))
        assert [r.verdict for r in replay.applied] == ["approve", "reject"]
        assert (replay.pending, replay.refused, replay.already) == ([], [], 0)
        assert one(
            other, m.Opportunity, m.Opportunity.amount == Decimal("45000.00")
        ).created_at == NOW.replace(tzinfo=None)
        assert status(other, made["link_thread"].key) == "rejected"
        again = apply_decision_events(other, EventLog(tmp_path / "events"))
        assert (again.applied, again.already) == ([], 2)
        with other.session() as s:
            assert s.scalar(select(func.count()).select_from(m.Opportunity)) == 3
            assert s.scalar(select(func.count()).select_from(m.Decision)) == 2
    finally:
        other.dispose()


def test_a_decision_whose_proposal_is_not_there_yet_stays_pending(store, events, tmp_path):
    repo, made = store
    approve(repo, events, made["new_contact"].key, who=SAM)
    empty = Repo(f"sqlite:///{tmp_path / 'empty.db'}")
    empty.upgrade()
    try:
        replay = apply_decision_events(empty, events)
        assert (replay.applied, replay.pending) == ([], [made["new_contact"].key])
        seed(empty)  # the replay of the mail proposes it again: now the decision applies
        assert [r.key for r in apply_decision_events(empty, events).applied] == [made["new_contact"].key]
    finally:
        empty.dispose()


def test_of_two_decisions_logged_for_one_proposal_the_first_stands(store, events):
    repo, made = store
    key = made["stage_change"].key
    first = events.append("decision", {"key": key, "verdict": "reject", "edits": {}, "who": DANA, "how": "reply",
                                       "digest_token": None, "at": NOW.isoformat()}, actor=DANA)  # fmt: skip
    second = events.append("decision", {"key": key, "verdict": "approve", "edits": {}, "who": MIA, "how": "link",
                                        "digest_token": None, "at": NOW.isoformat()}, actor=MIA)  # fmt: skip
    replay = apply_decision_events(repo, [first, second])
    assert [r.verdict for r in replay.applied] == ["reject"]
    assert [e.reason for e in replay.refused] == ["decided"]
    assert one(repo, m.Opportunity, m.Opportunity.external_id == "OPP-1").stage == "proposal"


def test_keys_resolve_from_a_prefix_or_the_short_form(store):
    repo, made = store
    key = made["new_contact"].key
    assert resolve_key(repo, key) == key
    assert resolve_key(repo, "new_contact:") == key
    assert resolve_key(repo, short_id(key)) == key
    assert resolve_key(repo, "link") == made["link_thread"].key
    with pytest.raises(DecisionError) as caught:
        resolve_key(repo, "new_")  # new_contact:... and new_opportunity:...
    assert caught.value.reason == "unknown"
    assert str(caught.value).startswith("'new_' matches 2 proposals")
