"""Deal phrases: intent, won, lost and stage advances, in English, German and Spanish.

A first, plain rule set: a phrase hit in what the sender wrote (quotes stripped) is a signal, and the
sentence that holds it is the evidence. Each pattern is a word-bounded, case-insensitive regex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nlp.clean import sentences


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)", re.IGNORECASE)


INTENT = _words(
    r"pric(?:e|es|ing)",
    r"quot(?:e|es|ation)",
    r"proposal",
    r"(?:free\s+)?trial",
    r"pilot",
    r"rfp",
    r"rfq",
    r"request\s+for\s+(?:proposal|quotation)",
    r"purchase\s+order",
    r"contract",
    r"demo",
    r"licen[cs]es?",
    r"how\s+much",
    r"cost(?:s|ing)?",
    r"budget",
    r"order\s+\d+\s+units",
    r"angebot",
    r"preis(?:e|liste)?",
    r"kostenvoranschlag",
    r"bestellung",
    r"vertrag",
    r"testphase",
    r"ausschreibung",
    r"lizenz(?:en)?",
    r"presupuesto",
    r"cotizaci[oó]n",
    r"precios?",
    r"propuesta",
    r"prueba",
    r"contrato",
    r"orden\s+de\s+compra",
    r"licencias?",
)
WON = _words(
    r"(?:signed|countersigned|executed)\s+(?:the\s+)?(?:contract|agreement|order\s+form)",
    r"(?:contract|agreement|order\s+form)\s+(?:is\s+|has\s+been\s+)?(?:signed|countersigned|executed)",
    r"(?:po|purchase\s+order)\s+(?:is\s+)?(?:attached|enclosed|issued|number)",
    r"attached\s+(?:is\s+)?(?:our|the)\s+(?:po|purchase\s+order)",
    r"please\s+(?:send|issue)\s+(?:us\s+)?(?:the|your)\s+invoice",
    r"we(?:'d|\s+would)\s+like\s+to\s+proceed",
    r"auftrag\s+(?:ist\s+)?erteilt",
    r"vertrag\s+(?:ist\s+)?unterschrieben",
    r"bestellung\s+(?:anbei|im\s+anhang)",
    r"contrato\s+firmado",
    r"orden\s+de\s+compra\s+adjunta",
    r"adjunto\s+(?:la\s+)?orden\s+de\s+compra",
)
LOST = _words(
    r"(?:go|gone|went|going)\s+with\s+(?:another|a\s+different|a\s+competing)\s+(?:vendor|supplier|provider|solution)",
    r"(?:chose|chosen|selected|signed\s+with)\s+(?:another|a\s+different)\s+(?:vendor|supplier|provider|competitor)",
    r"budget\s+(?:was\s+|has\s+been\s+)?(?:cut|frozen|pulled|slashed)",
    r"not\s+(?:be\s+)?moving\s+forward",
    r"decided\s+not\s+to\s+(?:proceed|move\s+forward|go\s+ahead)",
    r"(?:project|initiative)\s+(?:is\s+|has\s+been\s+)?(?:cancel+ed|shelved)",
    r"für\s+einen\s+anderen\s+anbieter\s+entschieden",
    r"budget\s+(?:wurde\s+)?gestrichen",
    r"nicht\s+weiter\s+verfolgen",
    r"otro\s+proveedor",
    r"no\s+seguiremos\s+adelante",
    r"presupuesto\s+(?:fue\s+)?(?:recortado|cancelado)",
)
STAGES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "demo",
        _words(
            r"demo\s+(?:is\s+)?(?:booked|scheduled|confirmed)",
            r"(?:book|schedule)\s+(?:a|the)\s+demo",
            r"demo\s+termin",
        ),
    ),
    (
        "proposal",
        _words(
            r"(?:attached|here)\s+is\s+(?:our|the)\s+(?:proposal|quote|quotation)",
            r"proposal\s+(?:is\s+)?attached",
            r"angebot\s+(?:anbei|im\s+anhang)",
            r"adjunto\s+(?:la\s+)?(?:propuesta|cotizaci[oó]n)",
        ),
    ),
    (
        "negotiation",
        _words(
            r"redlines?",
            r"(?:discount|terms)\s+(?:request|proposal)",
            r"negotiat\w+",
            r"verhandlung\w*",
            r"negociaci[oó]n",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str  # intent | won | lost | demo | proposal | negotiation
    sentence: str


def find_signals(text: str) -> list[Hit]:
    """Every signal in `text`, each with the sentence that carries it."""
    hits = []
    for sentence in sentences(text):
        for kind, pattern in (("won", WON), ("lost", LOST), *STAGES, ("intent", INTENT)):
            if pattern.search(sentence):
                hits.append(Hit(kind, sentence[:400]))
    return hits
