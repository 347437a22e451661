"""The pure NLP stages: cleaning, money, noise, matching and proposing, on records built here."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mailsync.mail.thread import is_reply_subject, may_join_by_subject, subject_key
from nlp.clean import reply_text
from nlp.match import free_mail_domains, match_people
from nlp.money import find_amounts
from nlp.noise import automated_reason
from nlp.propose import ThreadView, propose
from storage.records import (
    AccountRef,
    Address,
    ContactRef,
    CrmSnapshot,
    OpportunityRef,
    ParsedEmail,
    ProposalKind,
)

ACME = AccountRef(1, "Acme Logistics")
GLOBEX = AccountRef(2, "Globex")
OPP = OpportunityRef(
    10, "OPP-1", 1, "Acme - FleetSense rollout", "proposal", Decimal(48000), "USD", "sam@northwind.example"
)
CRM = CrmSnapshot(
    contacts_by_email={"rachel@acme.example": ContactRef(5, "Rachel Kim", 1, "dana@northwind.example")},
    accounts={1: ACME, 2: GLOBEX},
    accounts_by_domain={"acme.example": ACME, "globex.example": GLOBEX},
    open_opportunities={1: (OPP,)},
    reps=frozenset({"dana@northwind.example", "sam@northwind.example"}),
    internal_domains=frozenset({"northwind.example"}),
    free_mail_domains=free_mail_domains(),
)


def msg(
    sender: str,
    body: str,
    *,
    to=("dana@northwind.example",),
    cc=(),
    day=1,
    automated=None,
    subject="Fleet tracking",
):
    people = (
        [("from", Address("", sender))]
        + [("to", Address("", a)) for a in to]
        + [("cc", Address("", a)) for a in cc]
    )
    return match_people(
        fingerprint=f"fp-{sender}-{day}", sent_at=datetime(2026, 3, day, tzinfo=UTC), subject=subject, body=body,
        people=people, automated=automated, crm=CRM,
    )  # fmt: skip


def view(*messages, linked=None):
    return ThreadView(
        key="root@x",
        subject="Fleet tracking",
        linked_opportunity=linked,
        messages=messages,
        owner="dana@northwind.example",
    )


def kinds(proposals):
    return sorted(str(p.kind) for p in proposals)


def test_reply_text_drops_quotes_history_and_signature():
    body = (
        "Sounds good, send the quote.\n\n-- \nRachel\n+1 555\n\nOn Mon, 2 Mar 2026, Dana wrote:\n> old text"
    )
    assert reply_text(body) == "Sounds good, send the quote."
    german = "Passt.\n\nAm 02.03.2026 um 10:00 schrieb Dana Whitfield <dana@northwind.example>:\n> Angebot"
    assert reply_text(german) == "Passt."
    outlook = "Yes.\n\n-----Original Message-----\nFrom: Dana\nSent: Monday\nquote"
    assert reply_text(outlook) == "Yes."


@pytest.mark.parametrize(
    ("text", "expected"),
    [("$48,000", ("48000.00", "USD")), ("EUR 12.5k", ("12500.00", "EUR")), ("48k USD", ("48000.00", "USD")),
     ("12.500,00 €", ("12500.00", "EUR")), ("USD 9,900", ("9900.00", "USD")), ("€ 30.000", ("30000.00", "EUR"))],
)  # fmt: skip
def test_money_formats(text, expected):
    (amount, currency, _), *_ = find_amounts(f"the total is {text} per year")
    assert (str(amount), currency) == expected


def test_no_money_in_plain_numbers():
    assert find_amounts("we have 40 vans and 3 depots, call 555 1234") == []


def test_subject_keys_and_reply_prefixes():
    assert subject_key("Re: AW: [sales] Fwd:  Pricing   for 40 vans") == "pricing for 40 vans"
    assert subject_key("RE[2]: Pricing") == "pricing"
    assert is_reply_subject("AW: Angebot")
    assert is_reply_subject("RV: cotización")
    assert not is_reply_subject("Fwd: Angebot")
    assert not is_reply_subject("Regarding pricing")


def test_a_forward_without_references_may_join_by_subject():
    base = dict(fingerprint="f", archive_key="k", message_id="m", in_reply_to=None, references=(), to=(), cc=(),
                sent_at=None, body_text="", sender=None)  # fmt: skip
    for subject, joins in (
        ("FW: Insight renewal 2026 – order form", True),  # Outlook forwards carry no References
        ("WG: Angebot SensorGrid", True),
        ("Re: Angebot SensorGrid", True),
        ("Fwd: ok", False),  # too short to trust
        ("Insight renewal 2026 – order form", False),
    ):
        assert may_join_by_subject(ParsedEmail(**base, subject=subject)) is joins, subject


def test_noise_reasons():
    base = dict(fingerprint="f", archive_key="k", message_id="m", in_reply_to=None, references=(), to=(), cc=(),
                sent_at=None, body_text="")  # fmt: skip
    person = Address("Rachel", "rachel@acme.example")
    assert automated_reason(ParsedEmail(**base, sender=person, subject="Pricing")) is None
    assert automated_reason(ParsedEmail(**base, sender=person, subject="x", auto_submitted="auto-replied"))
    assert automated_reason(ParsedEmail(**base, sender=person, subject="x", auto_submitted="no")) is None
    assert automated_reason(ParsedEmail(**base, sender=person, subject="x", list_id="<news.acme.example>"))
    assert automated_reason(ParsedEmail(**base, sender=person, subject="Out of Office: back Monday"))
    assert automated_reason(ParsedEmail(**base, sender=Address("", "no-reply@acme.example"), subject="x"))
    assert automated_reason(ParsedEmail(**base, sender=person, subject="x", content_type="multipart/report"))


def test_participants_are_matched_by_address_plus_tag_case_and_domain():
    m = msg(
        "Rachel+CRM@ACME.example",
        "hi",
        cc=("newbie@acme.example", "sam@northwind.example", "joe@gmail.com", "x@mail.globex.example"),
    )
    by_email = {p.address.email: p for p in m.participants}
    assert by_email["rachel@acme.example"].contact.id == 5
    assert by_email["newbie@acme.example"].contact is None
    assert by_email["newbie@acme.example"].account == ACME
    assert by_email["sam@northwind.example"].internal
    assert by_email["joe@gmail.com"].free_mail
    assert by_email["joe@gmail.com"].account is None
    assert by_email["x@mail.globex.example"].account == GLOBEX
    assert m.accounts == (ACME, GLOBEX)


def test_single_open_opportunity_is_linked_and_unknown_colleague_proposed():
    proposals = propose(
        view(
            msg(
                "rachel@acme.example",
                "Can we talk pricing for the FleetSense rollout?",
                cc=("newbie@acme.example",),
            )
        ),
        CRM,
    )
    assert kinds(proposals) == ["link_thread", "new_contact"]
    link = next(p for p in proposals if p.kind is ProposalKind.LINK_THREAD)
    assert link.payload["opportunity_id"] == 10
    assert link.owner_rep == "sam@northwind.example"
    contact = next(p for p in proposals if p.kind is ProposalKind.NEW_CONTACT)
    assert contact.payload["email"] == "newbie@acme.example"
    assert contact.key == "new_contact:newbie@acme.example"
    # The account alone, nothing of the deal said: under the calibrated suggest threshold, no link.
    bare = propose(view(msg("rachel@acme.example", "Can we talk pricing?")), CRM)
    assert ProposalKind.LINK_THREAD not in {p.kind for p in bare}


def test_lost_signal_on_a_linked_thread_is_a_stage_change_with_evidence():
    proposals = propose(view(
        msg("dana@northwind.example", "Any news on the proposal?", to=("rachel@acme.example",), day=1),
        msg("rachel@acme.example", "Thanks for your patience. We decided to go with another vendor this year.", day=9),
        linked=10,
    ), CRM)  # fmt: skip
    (change,) = proposals
    assert change.kind is ProposalKind.STAGE_CHANGE
    assert change.payload["to_stage"] == "closed_lost"
    assert change.evidence[0].quote == "We decided to go with another vendor this year."
    assert change.evidence[0].sent_at.day == 9


def test_our_own_words_are_not_a_customer_signal():
    proposals = propose(
        view(
            msg(
                "dana@northwind.example",
                "Signed contract attached, as discussed?",
                to=("rachel@acme.example",),
            ),
            linked=10,
        ),
        CRM,
    )
    assert proposals == []


def test_new_opportunity_with_first_seen_date_amount_and_new_account():
    proposals = propose(view(
        msg("jake@granite.example", "We keep losing trailers. Who are you?", day=2),
        msg("jake@granite.example", "Could you send pricing for 40 units?", day=5),
        msg("dana@northwind.example", "The quote: $950 per unit, $38,000 in total.", to=("jake@granite.example",), day=6),
    ), CRM)  # fmt: skip
    (opp,) = proposals
    assert opp.kind is ProposalKind.NEW_OPPORTUNITY
    assert opp.payload["first_seen_at"] == "2026-03-05"
    assert opp.payload["amount"] == "38000.00"
    assert opp.payload["currency"] == "USD"
    assert opp.payload["new_account_domain"] == "granite.example"
    assert opp.payload["account_id"] is None
    assert opp.evidence[0].quote == "Could you send pricing for 40 units?"


def test_free_mail_never_becomes_an_account():
    (opp,) = propose(view(msg("luis@gmail.com", "How much would 3 units cost?")), CRM)
    assert opp.payload["new_account_domain"] is None
    assert opp.payload["account_id"] is None


def test_noise_and_internal_threads_propose_nothing():
    assert (
        propose(
            view(msg("news@vendor.example", "Best pricing ever! Request a demo", automated="mailing list")),
            CRM,
        )
        == []
    )
    internal = msg(
        "sam@northwind.example", "Pipeline review: pricing for Acme?", to=("dana@northwind.example",)
    )
    assert propose(view(internal), CRM) == []


def test_negated_competitor_phrase_is_not_a_loss():
    good_news = msg(
        "rachel@acme.example", "After the bake-off we are not moving forward with the other vendor."
    )
    assert propose(view(good_news, linked=10), CRM) == []


def test_a_supplier_quoting_us_is_not_our_opportunity():
    supplier = msg(
        "sales@boothbuilders.example",
        "As promised, our quote for your trade fair stand is attached: EUR 18,500.",
    )
    assert propose(view(supplier), CRM) == []


def test_an_unanswered_cold_email_of_ours_is_not_a_deal():
    cold = msg(
        "dana@northwind.example",
        "Would a 20-minute demo of our pricing tools be worth your time?",
        to=("ceo@prospect.example",),
    )
    assert propose(view(cold), CRM) == []


def test_a_rep_thanking_for_the_order_is_won_evidence():
    thanks = msg(
        "dana@northwind.example",
        "Vielen Dank für den Auftrag! Die Auftragsbestätigung folgt morgen.",
        to=("rachel@acme.example",),
    )
    (change,) = propose(view(msg("rachel@acme.example", "Anbei die Unterlagen."), thanks, linked=10), CRM)
    assert change.payload["to_stage"] == "closed_won"


def test_stage_change_goes_to_the_clearly_best_of_several_open_deals():
    second = OpportunityRef(
        11, "OPP-2", 1, "Acme - RouteIQ licences", "demo", None, None, "dana@northwind.example"
    )
    crm = CrmSnapshot(
        **{**{f: getattr(CRM, f) for f in CRM.__slots__}, "open_opportunities": {1: (OPP, second)}}
    )
    lost = msg(
        "rachel@acme.example", "About the RouteIQ licences: the budget was cut, so we will pass for now."
    )
    proposals = propose(view(lost), crm)
    change = next(p for p in proposals if p.kind is ProposalKind.STAGE_CHANGE)
    assert change.payload["opportunity_id"] == 11
    assert change.payload["to_stage"] == "closed_lost"
