"""Won and lost said indirectly, in EN/DE/ES/FR, and the decoys that must stay silent."""

from __future__ import annotations

import pytest

from nlp.signals import attachment_signals, find_signals


def _kinds(text: str) -> set[str]:
    return {hit.kind for hit in find_signals(text)}


@pytest.mark.parametrize(
    "text",
    [
        # implicit renewal
        "All good here, so please renew for another twelve months.",
        "Happy to renew, nothing to change.",
        "Could you renew it on the same terms as before?",
        "Verlängern Sie den Vertrag bitte wie bisher.",
        "Den Servicevertrag bitte unverändert verlängern.",
        "Vous pouvez renouveler l'abonnement pour un an.",
        "Merci de reconduire le contrat de maintenance.",
        "Pueden renovarlo, estamos contentos.",
        # the order placed in words or on signed paper
        "Hiermit bestellen wir die zwei Geräte.",
        "Vous trouverez le bon de commande signé en pièce jointe.",
        "Voici le contrat contresigné par la direction.",
        "Nous vous confirmons la commande des trois machines.",
        # a request for the invoice
        "Could you send me the invoice so we can pay this month?",
        "Merci de nous transmettre la facture.",
        "Envíennos la factura a contabilidad.",
    ],
)
def test_indirect_wins_are_won(text: str) -> None:
    assert "won" in _kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        # staying with the current supplier
        "For now we will stay with our current provider.",
        "We're keeping our existing copier fleet for another year.",
        "Wir haben beschlossen, beim bisherigen Lieferanten zu bleiben.",
        "Nous préférons conserver notre fournisseur habituel.",
        "Vamos a seguir con nuestro proveedor actual.",
        # a named competitor
        "We've decided to go with Northwind for this project.",
        "Nous avons opté pour un concurrent.",
        # holding off with no date
        "Management has put the whole upgrade on hold.",
        "The refurbishment was pushed back indefinitely.",
        "Wir legen die Anschaffung vorerst auf Eis.",
        "Alle Investitionen sind bis auf Weiteres ausgesetzt.",
        "Le projet est suspendu jusqu'à nouvel ordre.",
        "El proyecto queda aplazado hasta nuevo aviso.",
        # a tender lost
        "Your bid was ranked third of five.",
        "Ihr Angebot konnte leider nicht berücksichtigt werden.",
        "Votre offre n'a pas été retenue.",
        "Le marché a été attribué à la société Dupont.",
        "Su oferta no ha resultado adjudicataria.",
        # someone else's bundle
        "Their distributor bundled the scanners into the new lease.",
        "Damit ist die Anschaffung für uns erledigt.",
        "Das Labor stellt die Geräte jetzt mit, also brauchen wir keine eigenen Geräte mehr.",
    ],
)
def test_indirect_losses_are_lost(text: str) -> None:
    assert "lost" in _kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "We are not cancelling, just waiting for the board.",
        "We are not putting this on hold.",
        "We are not staying with our current supplier.",
        "Last year we chose Northwind, which did not work out.",
        "If we went ahead, when could you deliver?",
        "Thanks, we will go with you.",
        "Wir legen das Projekt nicht auf Eis.",
        "Le contrat n'est pas encore signé.",
        "Le bon de commande pas encore signé, désolé.",
    ],
)
def test_decoys_stay_silent(text: str) -> None:
    assert not {"won", "lost"} & _kinds(text)


def test_french_order_form_attached_is_won_from_the_customer() -> None:
    names = ("BDC_Atelier_signe.pdf", "Bon de commande 2291.pdf", "contrat_signé.pdf")
    assert [h.kind for h in attachment_signals(names, outside=True)] == ["won", "won", "won"]
