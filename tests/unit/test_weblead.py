"""A web-form lead forwarded internally is a new opportunity that started when the form was sent."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from nlp.match import free_mail_domains, match_people
from nlp.propose import ThreadView, Thresholds, propose
from nlp.weblead import find_lead
from storage.records import AccountRef, Address, CrmSnapshot, OpportunityRef, ProposalKind

INTERNAL = frozenset({"us.example"})
REP = "rep@us.example"

FORMS = {
    "outlook inline, EN": (
        (
            "Yours, I think.\n\n________________________________\nFrom: Website <noreply@us.example>\n"
            "Sent: Tuesday, 14 April 2026 16:42\nSubject: New website enquiry\n\n"
            "A new enquiry was submitted on us.example.\n\nForm: Request a quote\n"
            "Submitted: 14/04/2026 16:42 (Europe/Dublin)\nName: Jo Byrne\nCompany: Byrne Bakeries Ltd\n"
            "Email: jo@byrnebakeries.example\nMessage:\nWe need two ovens for a new site.\n"
            "Could you send a quote?\n\nConsent: yes\n"
        ),
        "jo@byrnebakeries.example",
        date(2026, 4, 14),
    ),
    "attached, FR": (
        (
            "Je te la transfère.\n\nUne nouvelle demande a été envoyée depuis le formulaire de contact.\n"
            "Date de soumission : 07/09/2026 21:14\nÉtablissement : Lycée Pasteur\n"
            "E-mail : m.roy@lycee-pasteur.example\nMessage : Pouvez-vous nous proposer un devis pour deux "
            "fours mixtes ?\n"
        ),
        "m.roy@lycee-pasteur.example",
        date(2026, 9, 7),
    ),
    "ES": (
        (
            "Te paso este lead de la web.\n\nFormulario: Solicitud de información\nFecha de envío: 2026-02-23\n"
            "Empresa: Cafés del Turia S.L.\nCorreo electrónico: ana@cafesturia.example\n"
            "Mensaje: ¿Pueden enviarnos un presupuesto para una envasadora?\n"
        ),
        "ana@cafesturia.example",
        date(2026, 2, 23),
    ),
    "DE, aligned": (
        (
            "Anfrage aus dem Kontaktformular.\n\nEingegangen am:  21.06.2026 14:42\n"
            "Firma:           Klinik Nord GmbH\nE-Mail:          k.lang@kliniknord.example\n"
            "Nachricht:       Bitte senden Sie uns ein Angebot für acht Monitore.\n"
        ),
        "k.lang@kliniknord.example",
        date(2026, 6, 21),
    ),
}


@pytest.mark.parametrize("name", FORMS)
def test_forms_in_each_style_are_found_with_their_submission_date(name):
    body, email, submitted = FORMS[name]
    lead = find_lead(body, INTERNAL)
    assert lead is not None
    assert lead.email == email
    assert lead.submitted == submitted
    assert lead.message


@pytest.mark.parametrize(
    "body",
    [
        "Best regards,\nAnna\nEmail: anna@customer.example\nPhone: +49 30 1234",  # a signature, not a form
        "Form: Request a quote\nSubmitted: 14/04/2026\nEmail: colleague@us.example\nMessage: test\n",  # ours
        "Name: Jo\nCompany: Acme\nEmail: jo@acme.example\nMessage: hello\n",  # no form or enquiry words
    ],
)
def test_what_is_not_a_lead_form_is_not_taken_for_one(body):
    assert find_lead(body, INTERNAL) is None


def _crm(open_deal: bool) -> CrmSnapshot:
    known = AccountRef(1, "Klinik Nord")
    deal = OpportunityRef(5, "OPP-5", 1, "Klinik Nord - Pumps", "proposal", None, None, REP)
    return CrmSnapshot(
        accounts={1: known},
        accounts_by_domain={"kliniknord.example": known},
        open_opportunities={1: (deal,)} if open_deal else {},
        reps=frozenset({REP}),
        internal_domains=INTERNAL,
        free_mail_domains=free_mail_domains(),
    )


def _forward(body: str, crm: CrmSnapshot) -> ThreadView:
    forward = match_people(
        fingerprint="fp1",
        sent_at=datetime(2026, 6, 23, 9, 10, tzinfo=UTC),
        subject="FW: Anfrage",
        body=body,
        people=[("from", Address("Nina", "nina@us.example")), ("to", Address("", REP))],
        automated=None,
        crm=crm,
    )
    return ThreadView("k1", "FW: Anfrage", None, (forward,), REP)


def test_an_internal_forward_of_a_form_is_a_new_opportunity_dated_by_the_form():
    crm = _crm(open_deal=False)
    proposals = propose(_forward(FORMS["DE, aligned"][0], crm), crm, Thresholds(classifier=False))
    [new] = [p for p in proposals if p.kind is ProposalKind.NEW_OPPORTUNITY]
    assert new.payload["first_seen_at"] == "2026-06-21"  # the form, not the forward two days later
    assert new.payload["contacts"] == "k.lang@kliniknord.example"
    assert new.payload["account_id"] == 1
    assert "acht Monitore" in new.evidence[0].quote


def test_a_form_from_an_account_with_an_open_deal_is_left_to_the_rep():
    crm = _crm(open_deal=True)
    assert propose(_forward(FORMS["DE, aligned"][0], crm), crm, Thresholds(classifier=False)) == []


def test_internal_talk_without_a_form_stays_internal():
    crm = _crm(open_deal=False)
    assert propose(_forward("Can you take the Klinik Nord call? Budget 40k.", crm), crm) == []


def test_a_forwarders_signature_above_the_form_does_not_hide_the_lead():
    body = (
        "Over to you.\nJane Doe\nE-Mail: jane@us.example\n\nWeb enquiry from the contact form\n"
        "Email: bob@acme.example\nCompany: Acme Ltd\nMessage: Could you quote two presses?\n"
        "Demande reçue le 14.09.2026\n"
    )
    lead = find_lead(body, INTERNAL)
    assert lead is not None
    assert lead.email == "bob@acme.example"
    assert lead.submitted == date(2026, 9, 14)  # "reçue le", no field colon
