"""Support and service talk: something installed is broken, a spare part or consumable is ordered for
it, a warranty is claimed, or an invoice already sent is queried.

A customer with an open deal also writes to us about what they already have; such a thread names the
account (and often the installed product, which the deal may share) but is handled by service, not
sales. `support_sentences` finds the sentences that say so, in English, German, French and Spanish.
Each family needs an incident or an order, not the words alone: a maintenance contract under
negotiation talks about "Ersatzteile", "Störungen" and "garantie" too, as terms of the deal.
"""

from __future__ import annotations

import functools
import re

from nlp.clean import sentences
from nlp.probes import UNUSUAL_CASE, Probes


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)", re.IGNORECASE)


# Something installed fails: an incident, described.
FAULT = _words(
    r"defect(?:ive)?",
    r"faulty",
    r"broken",
    r"broke\s+down",
    r"malfunction\w*",
    r"out\s+of\s+order",
    r"(?:isn't|is\s+not|aren't|are\s+not|stopped|not)\s+(?:working|recording|printing|charging|starting|reading|responding)",
    r"(?:won't|doesn't|does\s+not|will\s+not|can't)\s+(?:\w+\s+)?(?:start|print|hold\s+(?:a\s+)?charge|charge|read|record|turn\s+on|switch\s+on|boot|work)",
    r"(?:error|fault|alarm)\s+(?:code|message|light)s?",
    r"(?:threw|throws|shows?|showing|displays?)\s+(?:an?\s+)?(?:\"[^\"]{0,40}\"\s+)?(?:error|fault|alarm)",
    r"paper\s+jams?",
    r"leak(?:s|ing)",
    r"service\s+(?:visit|ticket|case)",
    r"defekt\w*",
    r"störungsmeldung\w*",
    r"fehler(?:meldung|code)\w*",
    r"ausgefallen",
    r"kaputt\w*",
    r"funktionier\w+\s+(?:\w+\s+)?nicht(?:\s+mehr)?",
    r"(?:zeigt|liest|druckt|lädt|startet|läuft)\s+(?:\w+\s+){0,4}?(?:nicht\s+mehr|nichts\s+mehr|keine\s+\w+\s+mehr|nur\s+noch)",
    r"(?:hat|haben)\s+(?:eine\s+)?störung",
    r"reklamation\w*",
    r"beschwerde\s+(?:über|wegen|zu)",
    r"en\s+panne",
    r"tombée?\s+en\s+panne",
    r"d[ée]faut\s+(?:de\s+|sur\s+)?\w+",
    r"d[ée]fectueu\w+",
    r"cass[ée]e?s?",
    r"endommag[ée]e?s?",
    r"ne\s+(?:\w+\s+)?(?:fonctionne|marche|imprime|démarre|s'allume|charge)\s+plus",
    r"hors\s+service",
    r"code\s+(?:d['’])?erreur",
    r"bourrages?",
    r"fait\s+un\s+bruit",
    r"fuite",
    r"aver[ií]a\w*",
    r"averiad[oa]s?",
    r"estropead[oa]s?",
    r"no\s+(?:\w+\s+)?(?:funciona|graba|arranca|imprime|enciende|carga|lee)",
    r"(?:se\s+(?:nos\s+)?ha\s+)(?:roto|cuarteado|quemado|averiado|estropeado)",
    r"sin\s+señal",
    r"c[oó]digo\s+de\s+error",
)
# ... a repair, a technician sent, or a part replaced for what is installed.
REPAIR = _words(
    r"repair(?:s|ed|ing)?",
    r"replacement\s+(?:part|unit|battery|batteries|lamp|bulb|sensor|probe|filter|roller|housing|reader|board|\w+\s+lamp)",
    r"spare\s+(?:parts?|batter(?:y|ies)|lamps?|bulbs?|filters?|rollers?|sensors?|probes?)",
    r"(?:order|need)\s+(?:\d+\s+|some\s+|a\s+few\s+)?spares?",
    r"reparatur(?!\w*vertrag)\w*",
    r"reparier\w*",
    r"ersatz(?:teil|leser|gerät|akku|sensor|fühler|lampe|pumpe|filter|walze|gehäuse)\b",
    r"(?:techniker|servicetechniker)\s+(?:\w+\s+){0,3}?(?:\w*schicken|vorbei\w*|vor\s+ort|kommt|ist\s+um)",
    r"r[ée]paration\w*",
    r"r[ée]parer",
    r"pi[èe]ces?\s+(?:de\s+rechange|détachées?)",
    r"\w+\s+de\s+(?:remplacement|rechange)",
    r"reparaci[oó]n\w*",
    r"reparar(?:lo|la)?",
    r"recambios?",
    r"repuestos?",
    r"pieza\s+de\s+repuesto",
    r"(?:mandar|enviar|venga|viene|pasa)\s+(?:al\s+|el\s+|un\s+)t[eé]cnico",
    r"servicio\s+t[eé]cnico",
    r"asistencia\s+t[eé]cnica",
)
# ... a warranty claimed on it.
WARRANTY = _words(
    r"(?:under|covered\s+by|within|still\s+in)\s+(?:the\s+)?(?:warranty|guarantee)",
    r"warranty\s+(?:claim|repair|case|replacement)",
    r"rma",
    r"(?:über|auf|unter|noch\s+in\s+der)\s+(?:die\s+|der\s+)?(?:garantie|gewährleistung)",
    r"garantie(?:fall|anspruch|reparatur)\w*",
    r"gewährleistungs(?:fall|anspruch)\w*",
    r"(?:sous|encore\s+sous|couvert\w*\s+par\s+la)\s+garantie",
    r"(?:en|bajo|cubiert[oa]\s+por\s+la)\s+garant[ií]a",
)
# ... or an invoice already sent is queried: a number, a correction, a credit note.
INVOICE = _words(
    r"invoice\s+(?:no\.?\s*|number\s*|#\s*)?[A-Z0-9][\w/-]*\d[\w/-]*",
    r"(?:reissue|correct(?:ed)?|duplicate)\s+(?:the\s+|an?\s+)?invoice",
    r"credit\s+note",
    r"rechnung\s+(?:nr\.?\s*)?[A-Z0-9][\w/-]*\d[\w/-]*",
    r"korrigierte\w*\s+rechnung",
    r"gutschrift",
    r"facture\s+(?:n[°o]\.?\s*)?[A-Z0-9][\w/-]*\d[\w/-]*",
    r"facture\s+(?:corrigée|rectificative|en\s+double)",
    r"un\s+avoir\b",
    r"factura\s+(?:n[ºo°]\.?\s*)?[A-Z0-9][\w/-]*\d[\w/-]*",
    r"factura\s+(?:rectificativa|corregida|duplicada)",
    r"(?:nota\s+de\s+)?abono\s+de",
)
FAMILIES = (("fault", FAULT), ("repair", REPAIR), ("warranty", WARRANTY), ("invoice", INVOICE))
# The probes (nlp/probes.py) read lower-cased text case-sensitively: the invoice numbers' upper-case
# class is lower-cased for them (the same class under IGNORECASE).
_PROBES = Probes([re.compile(p.pattern.replace("[A-Z0-9]", "[a-z0-9]"), p.flags) for _, p in FAMILIES])
MIN_SENTENCES = 2  # one phrase can be a contract's term; two sentences about it are an incident
_CACHE = 4096  # texts; a thread's subject and messages are read again on every arrival
_SENTENCE_CACHE = 16384  # sentences: greetings, closings and signature lines come back in every mail


def support_sentences(text: str) -> list[tuple[str, str]]:
    """(family, sentence) for every sentence of `text` that talks support; a sentence counts once."""
    return list(_support_sentences(text))


@functools.lru_cache(maxsize=_CACHE)
def _support_sentences(text: str) -> tuple[tuple[str, str], ...]:
    found = []
    for sentence in sentences(text):
        family = _family(sentence)
        if family is not None:
            found.append((family, sentence[:400]))
    return tuple(found)


@functools.lru_cache(maxsize=_SENTENCE_CACHE)
def _family(sentence: str) -> str | None:
    """The first family whose pattern is in the sentence, if any: asked of the families whose
    case-sensitive probe matches the sentence lower-cased (a superset, as in nlp/signals.py _kinds_of)."""
    low = sentence.lower()
    if len(low) != len(sentence) or UNUSUAL_CASE.search(low):
        return next((name for name, pattern in FAMILIES if pattern.search(sentence)), None)
    return next(
        (
            name
            for (name, pattern), probe in zip(FAMILIES, _PROBES.probes, strict=True)
            if probe.search(low) and pattern.search(sentence)
        ),
        None,
    )


def is_support(texts: list[str]) -> bool:
    """Texts (subjects and bodies of a thread) that report an incident, order a part for what is
    installed, claim a warranty or query an invoice: at least MIN_SENTENCES distinct sentences."""
    seen = {sentence for text in texts for _, sentence in support_sentences(text)}
    return len(seen) >= MIN_SENTENCES


def forget() -> None:
    """Drop the readings kept by text (a benchmark times cold reading: nlp/signals.py forget)."""
    _support_sentences.cache_clear()
    _family.cache_clear()
