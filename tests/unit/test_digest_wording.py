"""What the digest says: each proposal as a question, confidence in words, money and dates in the rep's locale.

Every test names its locale: nothing here depends on the machine's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from mailsync.approval.digest import Preview, render_digest
from mailsync.approval.money import count, day, locale_of, money, short_day
from mailsync.approval.wording import Deal, confidence_words, shown, word
from storage import models as m

EN = locale_of("en_US")
DE = locale_of("de_DE")
ACME_DEAL = Deal("Acme – rollout", Decimal("48000.00"), "USD")


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "text"),
    [
        ("41650.00", "USD", "en_US", "$41,650.00"),
        ("12500.00", "EUR", "de_DE", "12.500,00\xa0€"),  # a no-break space: the number never wraps from its €
        (Decimal(12500), "EUR", "en_US", "€12,500.00"),
        ("41650.00", "USD", "de_DE", "41.650,00\xa0$"),
        ("950", None, "en_US", "950.00"),  # no currency named: the number alone
        ("950", "<b>", "en_US", "950.00"),  # not an ISO code: never shown as one
        ("not a number", "USD", "en_US", None),
        ("NaN", "USD", "en_US", None),
        (None, "USD", "en_US", None),
    ],
)
def test_money_reads_as_money_in_the_reps_locale(amount, currency, locale, text):
    assert money(amount, currency, locale_of(locale)) == text


def test_dates_and_counts_in_the_reps_locale():
    assert day(date(2026, 3, 2), EN) == "Mar 2, 2026"
    assert day(date(2026, 3, 2), DE) == "02.03.2026"
    assert short_day(date(2026, 11, 30), EN) == "Mon, Nov 30"
    assert count(3000, EN) == "3,000"
    assert count(3000, DE) == "3.000"


def test_an_unknown_locale_falls_back_to_en_us():
    assert str(locale_of("xx_YY")) == "en_US"
    assert str(locale_of(None)) == "en_US"


@pytest.mark.parametrize(
    ("confidence", "words"),
    [
        (0.95, "very likely"),
        (0.8, "very likely"),
        (0.79, "likely"),
        (0.6, "likely"),
        (0.59, "possible"),
        (0.2, "possible"),
    ],
)
def test_confidence_in_words(confidence, words):
    assert confidence_words(confidence) == words


def asks(kind, payload, deal=None, locale=EN, **kwargs):
    return word(kind, payload, deal, locale, **kwargs)


def test_a_link_asks_and_never_says_it_is_done():
    payload = {"opportunity_id": 1, "opportunity": "Acme – rollout", "mode": "link", "because": "name, amount",
               "candidates": "Acme – rollout (0.78); Acme – pilot (0.41)"}  # fmt: skip
    wording = asks("link_thread", payload, ACME_DEAL)
    assert wording.ask.plain == "Link this conversation to Acme – rollout?"
    assert ("this conversation", True) in wording.ask.parts
    assert ("Acme – rollout", True) in wording.ask.parts
    assert dict(wording.details) == {
        "Deal value": "$48,000.00",
        "Or perhaps": "Acme – pilot",
        "Why": "names the deal, same amount",
    }
    assert "Linked" not in repr(wording)


def test_a_new_opportunity_asks_with_its_amount_and_start_in_the_locale():
    payload = {"name": "Osprey Linen – Towels", "account": "Osprey Linen", "new_account_domain": "ospreylinen.com",
               "amount": "12500.00", "currency": "EUR", "first_seen_at": "2026-03-02", "contacts": "jane@ospreylinen.com"}  # fmt: skip
    wording = asks("new_opportunity", payload, locale=DE)
    assert (
        wording.ask.plain
        == "Create the opportunity Osprey Linen – Towels for 12.500,00\xa0€, starting 02.03.2026?"
    )
    assert dict(wording.details)["Account"] == "Osprey Linen (new, ospreylinen.com)"
    english = asks("new_opportunity", payload, first_seen=datetime(2026, 3, 1, 19, 0, tzinfo=UTC))
    assert english.ask.plain.endswith("for €12,500.00, starting Mar 1, 2026?")  # the rep's local first day


def test_won_and_lost_are_asked_as_such_and_other_stages_as_a_move():
    won = asks(
        "stage_change",
        {"opportunity": "Acme – rollout", "from_stage": "proposal", "to_stage": "closed_won"},
        ACME_DEAL,
    )
    assert won.ask.plain == "Mark Acme – rollout as won?"
    assert dict(won.details) == {"Stage now": "proposal", "Deal value": "$48,000.00"}
    lost = asks("stage_change", {"opportunity": "Acme – rollout", "to_stage": "closed_lost"})
    assert lost.ask.plain == "Mark Acme – rollout as lost?"
    demo = asks(
        "stage_change", {"opportunity": "Acme – rollout", "from_stage": "discovery", "to_stage": "demo"}
    )
    assert demo.ask.plain == "Move Acme – rollout to demo?"


def test_a_new_contact_and_a_moved_contact():
    contact = asks("new_contact", {"email": "jane@acme.example", "name": "Jane Doe", "account": "Acme"})
    assert contact.ask.plain == "Add Jane Doe (Acme) as a contact?"
    assert dict(contact.details) == {"Email": "jane@acme.example"}
    nameless = asks("new_contact", {"email": "jane@acme.example", "name": "", "account": "Acme"})
    assert nameless.ask.plain == "Add jane@acme.example (Acme) as a contact?"
    assert nameless.details == ()
    moved = asks("contact_moved", {"contact": "Petra Lindner", "email": "petra@newco.example", "old_account": "Acme",
                                   "new_account": None, "new_account_domain": "newco.example"})  # fmt: skip
    assert moved.ask.plain == "Update Petra Lindner from Acme to newco.example?"


def test_mail_text_in_a_question_is_one_safe_line_and_bounded():
    wording = asks(
        "new_contact", {"email": "e@acme.example", "name": "Eve\u202e\r\nBcc: x" + "y" * 500, "account": "A"}
    )
    name = next(text for text, strong in wording.ask.parts if strong)
    assert "\u202e" not in name
    assert "\n" not in name
    assert len(name) == 160
    assert name.endswith("…")
    assert shown(None) == ""


def suggestion(id_, kind, payload, confidence=0.9, evidence=(), key=None):
    return m.Suggestion(id=id_, key=key or f"{kind}:{id_}", kind=kind, summary="", payload=payload,
                        confidence=confidence, evidence=list(evidence), thread_id=None)  # fmt: skip


def test_the_same_sentence_quoted_twice_is_shown_once():
    said = {
        "fingerprint": "f1",
        "sent_at": "2026-05-19T00:40:11",
        "quote": "How much would it be for 3 units?",
    }
    again = {**said, "quote": "How  much would it be for 3 units? "}
    other = {"fingerprint": "f1", "sent_at": "2026-05-19T00:40:11", "quote": "And do I need a contract?"}
    row = suggestion(11, "new_opportunity", {"name": "Luis – trackers", "amount": "2850.00", "currency": "USD"},
                     evidence=[said, again, other])  # fmt: skip
    preview = render_digest("dana@northwind.example", "Dana", [row], datetime(2026, 6, 1, tzinfo=UTC))
    assert preview.text.count("How much would it be for 3 units?") == 1
    assert preview.html.count("How much would it be for 3 units?") == 1
    assert "And do I need a contract?" in preview.text
    assert "May 19, 2026" in preview.text


def test_ranked_most_valuable_first_and_numbered_in_that_order():
    rows = [
        suggestion(1, "new_contact", {"email": "a@acme.example", "name": "Ann", "account": "Acme"}),
        suggestion(2, "new_opportunity", {"name": "Small deal", "amount": "900", "currency": "USD"}),
        suggestion(3, "new_opportunity", {"name": "Big deal", "amount": "90000", "currency": "USD"}, 0.6),
        suggestion(4, "stage_change", {"opportunity": "Acme – rollout", "to_stage": "closed_won"}),
    ]
    text = render_digest("dana@northwind.example", "Dana", rows, datetime(2026, 6, 1, tzinfo=UTC)).text
    order = [text.index(s) for s in ("1. Create the opportunity Big deal", "2. Create the opportunity Small deal",
                                     "3. Mark Acme – rollout as won?", "4. Add Ann (Acme) as a contact?")]  # fmt: skip
    assert order == sorted(order)
    assert "4 proposals to review: 2 new opportunities, 1 stage change and 1 new contact." in text


def test_without_links_each_card_says_what_to_reply():
    row = suggestion(1, "new_contact", {"email": "a@acme.example", "name": "Ann", "account": "Acme"})
    preview = render_digest("dana@northwind.example", "Dana", [row], datetime(2026, 6, 1, tzinfo=UTC))
    assert isinstance(preview, Preview)
    assert preview.items == 1
    assert "Reply: approve 1 / reject 1 / edit 1" in preview.text
    assert "Reply <b" in preview.html
    assert "approve 1</b>" in preview.html
    assert "<a " not in preview.html  # no links to follow in a preview


def test_an_attachment_is_evidence_by_its_name_not_a_quote():
    said = {
        "fingerprint": "f1",
        "sent_at": "2026-04-14T17:40:58",
        "quote": "attachment: Agreement-signed.pdf",
    }
    row = suggestion(
        10, "stage_change", {"opportunity": "Pinecrest – fleet", "to_stage": "closed_won"}, 0.7, [said]
    )
    preview = render_digest("dana@northwind.example", "Dana", [row], datetime(2026, 6, 1, tzinfo=UTC))
    assert "   > Attached: Agreement-signed.pdf (Apr 14, 2026)" in preview.text
    assert "Attached: Agreement-signed.pdf<br>" in preview.html
    assert "“Attached" not in preview.html
    assert "Confidence: likely" in preview.text
