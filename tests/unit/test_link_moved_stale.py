"""Thread -> opportunity scoring and thresholds, contacts who changed company, and lost by silence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from nlp import propose as proposing
from nlp.link import candidates
from nlp.match import free_mail_domains, match_people
from nlp.propose import ThreadView, Thresholds, propose
from nlp.stale import lost_by_silence, unanswered_follow_up
from storage.records import AccountRef, Address, ContactRef, CrmSnapshot, OpportunityRef, ProposalKind

REP = "dana@nw.example"
ACME = AccountRef(1, "Acme Logistics")
GLOBEX = AccountRef(2, "Globex")
INITECH = AccountRef(3, "Initech")
SUBSCRIPTION = OpportunityRef(
    10, "OPP-1", 1, "Acme - Insight Subscription 2027", "proposal", Decimal(18000), "USD", REP
)
BOILER = OpportunityRef(
    11, "OPP-2", 1, "Acme - Boiler House Monitoring", "discovery", Decimal(64000), "USD", REP
)
GLOBEX_OPP = OpportunityRef(12, "OPP-3", 2, "Globex - Dock Sensors", "demo", Decimal(9000), "USD", REP)
INITECH_OPPS = tuple(
    OpportunityRef(20 + i, f"OPP-2{i}", 3, f"Initech - Project {w}", "discovery", None, None, REP)
    for i, w in enumerate(("Alpha", "Beta", "Gamma"))
)
CRM = CrmSnapshot(
    contacts_by_email={
        "paul@acme.example": ContactRef(5, "Paul Iverson", 1, REP),
        "carla@acme.example": ContactRef(6, "Carla Mendes", 1, REP),
        "petra@globex.example": ContactRef(7, "Petra Lindner", 2, REP),
        "ann@globex.example": ContactRef(8, "Ann Smith", 2, REP),
        "ann.smith@initech.example": ContactRef(9, "Ann Smith", 3, REP),
        "bob@initech.example": ContactRef(13, "Bob Stone", 3, REP),
    },
    accounts={1: ACME, 2: GLOBEX, 3: INITECH},
    accounts_by_domain={"acme.example": ACME, "acme-foods.example": ACME, "globex.example": GLOBEX,
                        "initech.example": INITECH},
    open_opportunities={1: (SUBSCRIPTION, BOILER), 2: (GLOBEX_OPP,), 3: INITECH_OPPS},
    reps=frozenset({REP}),
    internal_domains=frozenset({"nw.example"}),
    free_mail_domains=free_mail_domains(),
)  # fmt: skip


def msg(sender, body, *, name="", to=(REP,), when=datetime(2026, 10, 1, tzinfo=UTC), subject="Question"):
    people = [("from", Address(name, sender))] + [("to", Address("", a)) for a in to]
    return match_people(
        fingerprint=f"fp-{sender}-{when.isoformat()}", sent_at=when, subject=subject, body=body, people=people,
        automated=None, crm=CRM,
    )  # fmt: skip


def view(*messages, history=None, opened=None, key="root@x"):
    return ThreadView(key, "Question", None, messages, REP, opened=opened or {}, history=history or {})


def link(proposals):
    return next((p for p in proposals if p.kind is ProposalKind.LINK_THREAD), None)


# --- linking -------------------------------------------------------------------------------------------


def test_the_amount_picks_the_deal_when_no_name_is_mentioned():
    thread = view(msg("paul@acme.example", "Does the USD 64,000 include installation on the feed pumps?"))
    found = candidates(list(thread.messages), CRM)
    assert [c.opp.id for c in found] == [BOILER.id, SUBSCRIPTION.id]
    assert found[0].reasons == ("amount",)


def test_people_on_a_deals_other_threads_point_at_it():
    thread = view(
        msg("paul@acme.example", "Can we talk about the pricing?"),
        history={BOILER.id: frozenset({"paul@acme.example"})},
    )
    found = candidates(list(thread.messages), CRM, history=thread.history)
    assert found[0].opp.id == BOILER.id
    assert "people" in found[0].reasons


def test_recency_is_a_tie_breaker_only():
    opened = {SUBSCRIPTION.id: datetime(2025, 1, 1, tzinfo=UTC), BOILER.id: datetime(2026, 9, 20, tzinfo=UTC)}
    thread = view(msg("paul@acme.example", "Can we talk about the pricing?"), opened=opened)
    found = candidates(list(thread.messages), CRM, opened=opened)
    assert found[0].opp.id == BOILER.id
    assert found[0].score - found[1].score < 0.1


def test_a_named_deal_is_linked_and_a_tie_is_only_suggested_with_its_candidates():
    named = link(
        propose(view(msg("paul@acme.example", "Pricing for the Boiler House Monitoring please?")), CRM)
    )
    assert named is not None
    assert (named.payload["opportunity_id"], named.payload["mode"]) == (BOILER.id, "link")
    assert named.confidence >= 0.6
    tie = link(propose(view(msg("paul@acme.example", "Could you send me a quote?")), CRM))
    assert tie is not None
    assert tie.payload["mode"] == "suggest"
    assert "Boiler House Monitoring" in str(tie.payload["candidates"])
    assert "Insight Subscription 2027" in str(tie.payload["candidates"])


def test_the_thresholds_come_from_settings():
    thread = view(msg("paul@acme.example", "Pricing for the Boiler House Monitoring please?"))
    strict = link(propose(thread, CRM, Thresholds(link=0.99, suggest=0.2)))
    assert strict is not None
    assert strict.payload["mode"] == "suggest"
    assert link(propose(thread, CRM, Thresholds(link=1.0, suggest=0.99))) is None


def test_below_the_suggest_threshold_nothing_is_listed():
    # Three open deals and nothing pointing at any: each is a 1-in-3 guess, under 0.2.
    proposals = propose(view(msg("bob@initech.example", "Could you send me a quote?")), CRM)
    assert link(proposals) is None
    assert ProposalKind.NEW_OPPORTUNITY not in {p.kind for p in proposals}  # the account has deals


# --- contact moved -------------------------------------------------------------------------------------


def moved(proposals):
    return [p for p in proposals if p.kind is ProposalKind.CONTACT_MOVED]


def test_a_contact_who_says_she_moved_to_an_unknown_company():
    mail = msg(
        "petra@newco.example",
        "Quick news: I've moved to NewCo, this is my new address.",
        name="Petra Lindner",
    )
    found = moved(propose(view(mail), CRM))
    assert len(found) == 1
    assert found[0].payload["contact_id"] == 7
    assert found[0].payload["new_account_domain"] == "newco.example"
    assert found[0].confidence == 0.85
    assert "moved to NewCo" in found[0].evidence[0].quote


def test_a_contact_writing_from_another_known_account_moved_even_unsaid():
    mail = msg(
        "p.lindner@acme.example", "Could you send me a quote for the boiler house?", name="Lindner, Petra"
    )
    proposals = propose(view(mail), CRM)
    found = moved(proposals)
    assert [(p.payload["old_account_id"], p.payload["new_account_id"]) for p in found] == [(2, 1)]
    assert found[0].confidence == 0.6
    # Not also proposed as a brand-new contact at Acme.
    assert "p.lindner@acme.example" not in {
        p.payload.get("email") for p in proposals if p.kind is ProposalKind.NEW_CONTACT
    }


def test_no_move_for_free_mail_same_account_unknown_company_unsaid_or_an_ambiguous_name():
    private = msg(
        "petra.lindner@gmail.com",
        "Writing from my private address, our server is down.",
        name="Petra Lindner",
    )
    same_account = msg(
        "paul.iverson@acme-foods.example", "I've moved to our foods division.", name="Paul Iverson"
    )
    unsaid = msg("petra@newco.example", "Could you send a quote?", name="Petra Lindner")
    ambiguous = msg("ann@newco.example", "I've moved to NewCo.", name="Ann Smith")  # two CRM contacts
    for mail in (private, same_account, unsaid, ambiguous):
        assert moved(propose(view(mail), CRM)) == []


# --- lost by silence -----------------------------------------------------------------------------------

QUOTE = datetime(2026, 6, 2, tzinfo=UTC)


def silent_thread(*, follow_up="Just checking in on the quote from two weeks ago.", to="carla@acme.example"):
    return view(
        msg("carla@acme.example", "Could you send the Insight Subscription 2027 quote?", when=QUOTE),
        msg(REP, "Quote attached: USD 18,000.", to=(to,), when=QUOTE + timedelta(days=1)),
        msg(REP, follow_up, to=(to,), when=QUOTE + timedelta(days=15)),
    )


def stale(threads, now, **kwargs):
    return [p for _, p in lost_by_silence(threads, CRM, now=now, after_days=30, **kwargs)]


def test_an_unanswered_follow_up_becomes_a_weak_lost_signal_after_n_days():
    thread = silent_thread()
    assert stale([thread], QUOTE + timedelta(days=44)) == []
    found = stale([thread], QUOTE + timedelta(days=45))
    assert len(found) == 1
    proposal = found[0]
    assert proposal.payload["to_stage"] == "closed_lost"
    assert proposal.payload["opportunity_id"] == SUBSCRIPTION.id
    assert proposal.key == f"stale:root@x:{SUBSCRIPTION.id}"
    assert proposal.confidence < 0.8
    assert proposal.evidence[0].quote == "Just checking in on the quote from two weeks ago."
    assert proposal.payload["silent_since"] == "2026-06-17"


def test_no_lost_signal_when_anyone_answered_or_it_was_no_follow_up():
    late = QUOTE + timedelta(days=90)
    assert stale([silent_thread(follow_up="Quote attached again, with the second plant.")], late) == []
    replied = view(*silent_thread().messages, msg("carla@acme.example", "Sorry, still reviewing.", when=late))
    assert unanswered_follow_up(replied) is None
    # The customer answered in another thread after our follow-up.
    heard = {ACME.id: QUOTE + timedelta(days=20)}
    assert stale([silent_thread()], late, last_inbound=heard) == []
    # Our follow-up went to someone who is not a contact of the account.
    assert stale([silent_thread(to="someone@acme.example")], late) == []


def test_no_lost_signal_on_a_thread_that_already_has_an_outcome():
    thread = view(
        *silent_thread().messages[:2],
        msg("carla@acme.example", "We went with another vendor.", when=QUOTE + timedelta(days=3)),
        msg(REP, "Understood. Any update for next year, just checking in?", to=("carla@acme.example",),
            when=QUOTE + timedelta(days=4)),
    )  # fmt: skip
    assert stale([thread], QUOTE + timedelta(days=90)) == []


# --- deals settled on other threads ----------------------------------------------------------------------


def test_only_deals_settled_before_the_thread_began_are_read_for_and_passed_over(monkeypatch):
    """A thread passes over a deal won or lost before it began; one settled later changes nothing, so the
    thread is not read for support talk or outcomes on its account (a backfill meets many such)."""
    read: list[str] = []
    monkeypatch.setattr(proposing, "is_support", lambda texts: read.append(texts[0]) or False)
    question = msg(
        "paul@acme.example", "Could you quote 12 more sensors?", when=datetime(2026, 10, 1, tzinfo=UTC)
    )
    before, after = datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)

    later = ThreadView("k", "Question", None, (question,), REP, settled={BOILER.id: after})
    assert proposing._passed_over(later, [question], None) == {}
    assert read == []

    both = ThreadView(
        "k", "Question", None, (question,), REP, settled={BOILER.id: after, SUBSCRIPTION.id: before}
    )
    assert proposing._passed_over(both, [question], None) == {SUBSCRIPTION.id: before}
    assert read == ["Question"]
