"""Evidence beyond sentences: attachment names, calendar invites, a demo the customer agreed to a date for."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from nlp.match import free_mail_domains, match_people
from nlp.noise import automated_reason
from nlp.propose import ThreadView, propose
from nlp.signals import attachment_signals, find_signals, meeting_signals
from storage.records import (
    AccountRef,
    Address,
    Attachment,
    ContactRef,
    CrmSnapshot,
    OpportunityRef,
    ParsedEmail,
    ProposalKind,
)

ACME = AccountRef(1, "Acme Logistics")
OPP = OpportunityRef(
    10, "OPP-1", 1, "Acme - FleetSense rollout", "discovery", Decimal(48000), "USD", "dana@nw.example"
)
CRM = CrmSnapshot(
    contacts_by_email={"rachel@acme.example": ContactRef(5, "Rachel Kim", 1, "dana@nw.example")},
    accounts={1: ACME},
    accounts_by_domain={"acme.example": ACME},
    open_opportunities={1: (OPP,)},
    reps=frozenset({"dana@nw.example"}),
    internal_domains=frozenset({"nw.example"}),
    free_mail_domains=free_mail_domains(),
)
CUSTOMER = "rachel@acme.example"
REP = "dana@nw.example"


def msg(sender, body="", *, to=(REP,), day=1, subject="Fleet tracking", automated=None, attachments=()):
    people = [("from", Address("", sender))] + [("to", Address("", a)) for a in to]
    return match_people(
        fingerprint=f"fp-{sender}-{day}", sent_at=datetime(2026, 3, day, tzinfo=UTC), subject=subject, body=body,
        people=people, automated=automated, crm=CRM, attachments=attachments,
    )  # fmt: skip


def stages(*messages):
    found = propose(ThreadView("root@x", "Fleet tracking", None, messages, REP), CRM)
    return [p.payload["to_stage"] for p in found if p.kind is ProposalKind.STAGE_CHANGE]


@pytest.mark.parametrize(
    ("name", "outside", "kind"),
    [
        ("PO-4471.pdf", True, "won"),
        ("Purchase_Order_88231.pdf", True, "won"),
        ("Bestellung_4500123.pdf", True, "won"),
        ("OC-2026-4471.pdf", True, "won"),
        ("Vertrag_Pumpwerke_unterschrieben.pdf", True, "won"),
        ("Contrato_firmado.pdf", True, "won"),
        ("Halvorsen_MSA_v3_and_SOW.pdf", False, "negotiation"),
        ("Westgate_MSA_redlines.pdf", True, "negotiation"),
        ("Angebot_2026-044.pdf", False, "proposal"),
        ("Cotizacion_HS-2026-112.pdf", False, "proposal"),
        ("Boothcraft_Quote_HS-HM27.pdf", True, "selling"),  # a supplier quoting us
        ("Auftragsbestätigung_2026-12.pdf", False, "won_ack"),
        ("RFP_2026-14_Vibration.pdf", True, "request"),
    ],
)
def test_attachment_names_are_evidence_by_direction(name, outside, kind):
    assert [h.kind for h in attachment_signals((name,), outside=outside)] == [kind]


def test_our_po_number_and_pictures_say_nothing():
    assert attachment_signals(("PO-4471.pdf",), outside=False) == []
    assert attachment_signals(("image001.png", "crusher_motor_list.csv"), outside=True) == []


def test_meeting_titles():
    demo = meeting_signals("Invitación: Demostración SensorGrid grúas @ mié 22 jul 2026 10:00 (CEST)", "")
    assert [(h.kind, h.sentence) for h in demo] == [
        ("demo", "calendar invite: Demostración SensorGrid grúas")
    ]
    assert [h.kind for h in meeting_signals("Vertragsverhandlung Rahmenvertrag", "")] == ["negotiation"]
    assert meeting_signals("Quarterly check-in", "Agenda: open tickets") == []


def _parsed(sender, subject, attachments):
    return ParsedEmail(
        fingerprint="f", archive_key="k", message_id="m", in_reply_to=None, references=(),
        sender=Address("", sender), to=(), cc=(), subject=subject, sent_at=None, body_text="",
        attachments=tuple(Attachment(n, t, 10) for n, t in attachments),
    )  # fmt: skip


def test_calendar_mail_is_told_apart():
    invite = [("meeting.ics", "text/calendar")]
    assert automated_reason(_parsed(CUSTOMER, "Demo FleetSense", invite)) == "calendar: invite"
    assert automated_reason(_parsed(CUSTOMER, "Declined: Demo FleetSense", invite)) == "calendar: declined"
    assert automated_reason(_parsed(CUSTOMER, "Accepted: Demo", [("invite.ics", "application/ics")])) == (
        "calendar: accepted"
    )
    # A calendar service stays a robot, and an invitation subject without a calendar part stays noise.
    assert (
        automated_reason(_parsed("calendar-notification@cal.example", "Invitation: Demo", invite))
        == "robot sender"
    )
    assert automated_reason(_parsed(CUSTOMER, "Invitation: Demo", [])) == "automatic subject"


def test_a_customers_invite_is_a_demo_on_the_thread():
    invite = msg(
        CUSTOMER, "See you at the plant.", subject="Demo FleetSense at Depot 4", automated="calendar: invite"
    )
    assert stages(invite) == ["demo"]


def test_internal_and_declined_invites_are_noise():
    internal = msg(
        REP, "prep", to=("sam@nw.example",), subject="Demo prep: Acme", automated="calendar: invite"
    )
    assert propose(ThreadView("k", "Demo prep", None, (internal,), REP), CRM) == []
    declined = msg(CUSTOMER, "", subject="Declined: Demo FleetSense", automated="calendar: declined")
    assert stages(msg(REP, "Shall we look at FleetSense next week?", to=(CUSTOMER,)), declined) == []


def test_a_demo_the_customer_agrees_a_date_for_is_booked():
    offer = msg(REP, "Let's do a live demo with your team. How about Thursday 11:00?", to=(CUSTOMER,), day=1)
    assert stages(offer) == []
    assert stages(offer, msg(CUSTOMER, "Thursday 11 works.", day=2)) == ["demo"]
    # Agreeing to something without a demo in sight is not a demo.
    call = msg(REP, "Can we talk about the rollout on Thursday?", to=(CUSTOMER,), day=1)
    assert stages(call, msg(CUSTOMER, "Thursday 11 works.", day=2)) == []


def test_a_po_attachment_from_the_customer_is_won_and_ours_is_not():
    po = msg(CUSTOMER, "All approved on our side, see attached.", day=3, attachments=("PO_RV-20931.pdf",))
    assert stages(msg(REP, "Quote attached.", to=(CUSTOMER,)), po) == ["closed_won"]
    ours = msg(REP, "For your records.", to=(CUSTOMER,), day=3, attachments=("PO_RV-20931.pdf",))
    assert stages(ours) == []


@pytest.mark.parametrize(
    "sentence",
    [
        "anbei erhalten Sie den von unserer Geschäftsführung gegengezeichneten Vertrag zurück.",
        "anbei erhalten Sie den Vertrag zurück.",
        "Here is the signed contract for your files.",
    ],
)
def test_the_signed_paper_returned_is_won(sentence):
    assert [h.kind for h in find_signals(sentence)][:1] == ["won"]


def test_our_rep_acknowledging_the_signed_contract_is_won_evidence():
    thanks = msg(REP, "vielen Dank, der Vertrag ist bei uns angekommen.", to=(CUSTOMER,))
    assert stages(msg(CUSTOMER, "Anbei der Vertrag.", day=1), thanks) == ["closed_won"]
    # Waiting for an order is not having it.
    waiting = {h.kind for h in find_signals("En cuanto recibamos la OC en el portal os confirmo fechas.")}
    assert not waiting & {"won", "won_ack"}


@pytest.mark.parametrize(
    ("sentence", "kind"),
    [
        ("Please find attached our proposal for the Line 3 pilot.", "proposal"),
        ("Anbei wie vereinbart unser Angebot 2026-071 für die Montage.", "proposal"),
        ("Te adjunto el presupuesto CL-2026-07 para los 6 ventiladores.", "proposal"),
        ("Bei Abnahme aller 48 Gateways erwarten wir einen Projektnachlass von 8 %.", "negotiation"),
        ("Zahlungsziel 60 Tage netto statt 30 Tage.", "negotiation"),
        ("Our legal team is reviewing the MSA this week.", "negotiation"),
    ],
)
def test_general_stage_phrases(sentence, kind):
    assert kind in {h.kind for h in find_signals(sentence)}


def test_a_supplier_describing_its_offer_is_not_a_buyer_asking():
    ours = msg(
        REP, "Für unseren Kundenabend bräuchten wir ein Angebot für Fingerfood.", to=("k@caterer.example",)
    )
    theirs = msg(
        "k@caterer.example", "Vielen Dank für Ihre Anfrage. Anbei unser Angebot für Ihren Kundenabend, 2.380,00 €.",
        day=2, attachments=("Angebot_2026-1107.pdf",),
    )  # fmt: skip
    found = propose(ThreadView("k", "Catering", None, (ours, theirs), REP), CRM)
    assert ProposalKind.NEW_OPPORTUNITY not in {p.kind for p in found}
