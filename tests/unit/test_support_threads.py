"""Service threads at a customer with an open deal, and a second deal at a known account (issue 13).

The wordings here are written for these tests, several per language; none is copied from the corpus.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from nlp.link import candidates
from nlp.match import free_mail_domains, match_people
from nlp.propose import ThreadView, Thresholds, propose
from nlp.signals import ANOTHER_DEAL
from nlp.support import is_support, support_sentences
from storage.records import AccountRef, Address, ContactRef, CrmSnapshot, OpportunityRef, ProposalKind

REP = "mia@seller.example"
KORBEL = AccountRef(1, "Korbel Foods")
VANTA = AccountRef(2, "Vanta Retail")
SCANNERS = OpportunityRef(
    10, "OPP-1", 1, "Korbel - ScanPro handhelds Lager Nord", "negotiation", Decimal(42000), "EUR", REP
)
TRACKHUB = OpportunityRef(
    11, "OPP-2", 2, "Vanta - TrackHub yard software", "proposal", Decimal(65000), "EUR", REP
)
CRM = CrmSnapshot(
    contacts_by_email={
        "ute@korbel.example": ContactRef(5, "Ute Brandt", 1, REP),
        "lea@vanta.example": ContactRef(6, "Lea Vogt", 2, REP),
    },
    accounts={1: KORBEL, 2: VANTA},
    accounts_by_domain={"korbel.example": KORBEL, "vanta.example": VANTA},
    open_opportunities={1: (SCANNERS,), 2: (TRACKHUB,)},
    reps=frozenset({REP}),
    internal_domains=frozenset({"seller.example"}),
    free_mail_domains=free_mail_domains(),
)
RULES = Thresholds(classifier=False)  # the phrase rules alone: the same answer with any trained model


def msg(sender, body, *, subject="Question", day=1):
    people = [
        ("from", Address("", sender)),
        ("to", Address("", REP if sender != REP else "ute@korbel.example")),
    ]
    return match_people(
        fingerprint=f"fp-{sender}-{day}", sent_at=datetime(2026, 10, day, tzinfo=UTC), subject=subject,
        body=body, people=people, automated=None, crm=CRM,
    )  # fmt: skip


def view(*messages, subject="Question"):
    return ThreadView("root@x", subject, None, messages, REP)


def kinds(proposals):
    return [p.kind for p in proposals]


# --- the support family, by language ------------------------------------------------------------------

SUPPORT_THREADS = {
    "en fault": [
        "Two of the handhelds stopped charging overnight.",
        "Can you send a technician? They are under warranty.",
    ],
    "en part": [
        "We need 4 spare batteries for the scanners.",
        "The old ones won't hold a charge past lunch.",
    ],
    "en invoice": [
        "Invoice INV-2026-118 lists the licence fee twice.",
        "Please send a credit note for line 3.",
    ],
    "de fault": [
        "Der Drucker an Rampe 2 ist seit heute früh defekt.",
        "Können Sie einen Techniker vorbeischicken?",
    ],
    "de part": [
        "Wir bräuchten ein Ersatzteil für das Förderband.",
        "Die Walze ist gerissen, läuft nicht mehr.",
    ],
    "de warranty": ["Das Display zeigt nur noch Streifen.", "Das Gerät ist doch noch in der Garantie, oder?"],
    "de invoice": [
        "In Ihrer Rechnung 2026-0412 fehlt der Rabatt.",
        "Bitte schicken Sie uns eine korrigierte Rechnung.",
    ],
    "fr fault": ["L'imprimante du quai est en panne depuis lundi.", "Elle affiche un code erreur E-12."],
    "fr part": ["Pourriez-vous nous envoyer une pièce de rechange ?", "Le capteur est cassé après le choc."],
    "fr invoice": ["Sur la facture FA-2026-77, la TVA est erronée.", "Merci de nous faire un avoir."],
    "es fault": ["La báscula del muelle 3 no funciona desde ayer.", "¿Podéis mandar al técnico mañana?"],
    "es part": ["Necesitamos dos recambios del rodillo.", "Se nos ha roto uno en plena campaña."],
    "es warranty": ["El lector tiene una avería en el teclado.", "¿Entra en garantía la reparación?"],
}


@pytest.mark.parametrize("case", sorted(SUPPORT_THREADS))
def test_service_talk_is_found_in_each_language(case):
    assert is_support(SUPPORT_THREADS[case])


@pytest.mark.parametrize(
    "texts",
    [
        # A maintenance contract under negotiation names spare parts, faults and warranty as its terms.
        ["The service plan covers spare parts and a 4-hour response.", "Could you send the final quote?"],
        [
            "Der Wartungsvertrag umfasst Ersatzteile und Störungseinsätze.",
            "Bitte um Ihr Angebot bis Freitag.",
        ],
        ["La garantie est de deux ans pièces et main-d'œuvre.", "Nous attendons votre devis."],
        ["Incluye repuestos de desgaste y visitas preventivas.", "¿Nos enviáis la propuesta?"],
        # One support phrase alone is not an incident.
        ["Thanks, the scanners arrived. One was broken in transit, we will keep the rest."],
    ],
)
def test_a_contract_that_names_service_terms_is_not_a_service_thread(texts):
    assert not is_support(texts)


def test_support_sentences_say_which_family():
    found = dict(support_sentences("Der Leser ist defekt. Wir brauchen ein Ersatzteil. Danke."))
    assert set(found) == {"fault", "repair"}


# --- a service thread is no link -----------------------------------------------------------------------


def test_a_repair_request_naming_the_installed_product_is_not_linked_to_the_open_deal():
    thread = view(
        msg(
            "ute@korbel.example",
            "Zwei ScanPro Geräte sind defekt, der Akku lädt nicht mehr. Geht das über die Garantie?",
        ),
        msg(
            REP,
            "Ja, das läuft über die Garantie; unser Servicetechniker kommt morgen mit Ersatzgeräten.",
            day=2,
        ),
        subject="ScanPro defekt",
    )
    assert ProposalKind.LINK_THREAD not in kinds(propose(thread, CRM, RULES))
    assert ProposalKind.LINK_THREAD not in kinds(propose(thread, CRM))  # nor with the shipped classifier


@pytest.mark.parametrize(
    "body",
    [
        "Our ScanPro units show an error code E-41 and stopped reading labels. Can you repair them?",
        "La ScanPro ne fonctionne plus depuis la mise à jour, pouvez-vous la réparer ? Elle est sous garantie.",
        "El ScanPro tiene una avería: no lee los códigos. ¿Nos mandáis un repuesto?",
    ],
)
def test_service_threads_in_other_languages_are_not_linked(body):
    thread = view(msg("ute@korbel.example", body), subject="ScanPro")
    assert ProposalKind.LINK_THREAD not in kinds(propose(thread, CRM, RULES))


def test_the_account_name_in_a_signature_is_no_deal_evidence():
    # "Korbel" opens the deal's name ("Korbel - ScanPro ..."), and every mail from the account is signed with it.
    body = "Guten Tag\n\nDer ScanPro an Tor 2 ist defekt und liest keine Etiketten mehr. Bitte um Reparatur.\n\nUte Brandt\nKorbel Foods GmbH"
    thread = view(msg("ute@korbel.example", body), subject="ScanPro Tor 2")
    assert candidates(list(thread.messages), CRM)[0].named is False
    assert ProposalKind.LINK_THREAD not in kinds(propose(thread, CRM, RULES))
    named = view(
        msg(
            "ute@korbel.example",
            "Wie steht es um die ScanPro handhelds Lager Nord?\n\nUte Brandt\nKorbel Foods GmbH",
        )
    )
    assert candidates(list(named.messages), CRM)[0].named is True


def test_a_service_thread_that_shows_the_deal_is_still_linked():
    # The same fault, but our quote for the open deal is in the thread: that is the deal's business.
    thread = view(
        msg("ute@korbel.example", "Zwei ScanPro Geräte sind defekt, der Akku lädt nicht mehr."),
        msg(REP, "Das läuft über die Garantie. Anbei unser Angebot für die Handhelds Lager Nord.", day=2),
        subject="ScanPro defekt",
    )
    assert ProposalKind.LINK_THREAD in kinds(propose(thread, CRM, RULES))


def test_a_deal_thread_without_service_talk_is_linked_as_before():
    thread = view(msg("ute@korbel.example", "Können Sie uns für die ScanPro Geräte ein Angebot schicken?"))
    assert ProposalKind.LINK_THREAD in kinds(propose(thread, CRM, RULES))


# --- a second deal at a known account -------------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence",
    [
        "Different topic: we are opening a second warehouse in Linz.",
        "Jetzt kommt das nächste Thema: unser zweites Lager in Wels.",
        "Können Sie uns dafür ein separates Angebot machen?",
        "Rien à voir avec les scanners : nous ouvrons un nouveau site à Lyon.",
        "Nada que ver con los lectores, que por cierto van de maravilla.",
        "The handhelds are in and working well, thanks.",
        "Die Geräte laufen bei uns übrigens seit drei Wochen sehr ordentlich.",
    ],
)
def test_another_deal_is_said_in_several_ways(sentence):
    assert ANOTHER_DEAL.search(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "The group has frozen all new system projects for this year.",
        "Das neue Projekt startet im März, wie im Angebot besprochen.",
        "Le nouveau projet de la direction attendra l'an prochain.",
        "El nuevo proyecto sigue en fase de aprobación.",
    ],
)
def test_a_new_project_in_passing_is_not_another_deal(sentence):
    assert not ANOTHER_DEAL.search(sentence)


def test_another_of_our_products_for_a_new_site_passes_over_the_open_deal():
    thread = view(
        msg(
            "ute@korbel.example",
            "Die Handhelds laufen tadellos. Anderes Thema: für unser zweites Lager in Wels "
            "interessiert uns TrackHub. Können Sie uns ein Angebot machen?\n\nUte Brandt\nKorbel Foods GmbH",
        ),
        subject="Lager Wels",
    )
    assert candidates(list(thread.messages), CRM) == []
    proposals = propose(thread, CRM, RULES)
    assert ProposalKind.LINK_THREAD not in kinds(proposals)
    new = next(p for p in proposals if p.kind is ProposalKind.NEW_OPPORTUNITY)
    assert new.payload["account_id"] == KORBEL.id


def test_the_open_deal_stays_a_candidate_when_its_own_name_or_amount_is_named():
    own = view(
        msg(
            "ute@korbel.example",
            "Anderes Thema: zu den ScanPro Handhelds Lager Nord fehlt noch die Schulung.",
        )
    )
    assert [c.opp.id for c in candidates(list(own.messages), CRM)] == [SCANNERS.id]
    amount = view(
        msg("ute@korbel.example", "Different topic, TrackHub for a second site: is EUR 42,000 still valid?")
    )
    assert [c.opp.id for c in candidates(list(amount.messages), CRM)] == [SCANNERS.id]


def test_our_rep_naming_the_installed_product_in_the_new_offer_does_not_keep_the_open_deal():
    thread = view(
        msg(
            "ute@korbel.example",
            "Different topic: we are opening a second warehouse. Could we talk about TrackHub?",
        ),
        msg(
            REP, "Happy to. Attached is our TrackHub quote; your ScanPro handhelds will work with it.", day=2
        ),
    )
    assert candidates(list(thread.messages), CRM) == []


def test_the_same_product_for_a_second_site_is_another_deal():
    # "the ScanPro for the second warehouse": the product of the open deal (Lager Nord), for another site
    for body in (
        "Die ScanPro laufen bestens. Für unser zweites Lager in Wels bräuchten wir noch einmal 20 Stück.",
        "The ScanPro handhelds are working well; could you quote the same for our new site in Graz?",
    ):
        thread = view(msg("ute@korbel.example", body))
        assert candidates(list(thread.messages), CRM) == [], body


def test_another_product_without_saying_it_is_another_matter_keeps_the_candidate():
    thread = view(msg("ute@korbel.example", "Could TrackHub also read the scanners' data?"))
    assert [c.opp.id for c in candidates(list(thread.messages), CRM)] == [SCANNERS.id]


# Two open deals at one account: the scanners (EUR 42,000) and a service plan for them.
PLAN = OpportunityRef(
    12, "OPP-3", 1, "Korbel - ScanCare Servicevertrag Scanner", "proposal", Decimal(3900), "EUR", REP
)
WITH_PLAN = CrmSnapshot(
    contacts_by_email=CRM.contacts_by_email,
    accounts=CRM.accounts,
    accounts_by_domain=CRM.accounts_by_domain,
    open_opportunities={1: (SCANNERS, PLAN), 2: (TRACKHUB,)},
    reps=CRM.reps,
    internal_domains=CRM.internal_domains,
    free_mail_domains=CRM.free_mail_domains,
)


def plan_msg(body, subject):
    people = [("from", Address("", "ute@korbel.example")), ("to", Address("", REP))]
    return match_people(
        fingerprint=f"fp-{subject}", sent_at=datetime(2026, 10, 1, tzinfo=UTC), subject=subject,
        body=body, people=people, automated=None, crm=WITH_PLAN,
    )  # fmt: skip


def test_the_deal_whose_amount_the_thread_states_comes_first():
    # A signed contract for the scanners' figure that mentions the plan too is the scanners'; the
    # plan's words count for less.
    signed = plan_msg(
        "Anbei der unterschriebene Vertrag über EUR 42.000. Den ScanCare Servicevertrag für die Scanner "
        "besprechen wir später.",
        "Vertrag Scanner",
    )
    found = candidates([signed], WITH_PLAN)
    assert [c.opp.id for c in found] == [SCANNERS.id, PLAN.id]
    assert (
        found[0].score < found[1].score
    )  # ahead by its amount, not by its score: asked, never linked unasked


def test_a_won_order_for_the_stated_amount_moves_that_deal():
    order = plan_msg(
        "Hiermit bestellen wir verbindlich zum Preis von EUR 42.000. Den ScanCare Servicevertrag "
        "für die Scanner besprechen wir später.",
        "Bestellung",
    )
    stage = [p for p in propose(view(order), WITH_PLAN, RULES) if p.kind is ProposalKind.STAGE_CHANGE]
    assert [(p.payload["opportunity_id"], p.payload["to_stage"]) for p in stage] == [
        (SCANNERS.id, "closed_won")
    ]
