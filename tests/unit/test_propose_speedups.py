"""The propose stage's shortcuts find what the plain readings find: support sentences by a per-sentence
probe, amounts only where a currency is, cached pattern searches, shared sentence splits, and the
classifier's answer kept with the thresholds it is for."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import ParseLimits
from mailsync.mail.parse import parse_message
from nlp import money, probes, signals, support
from nlp.clean import first_sentence, reply_text, sentences
from nlp.intent import MODEL_DIR, IntentModel

ROOT = Path(__file__).resolve().parents[2]

TEXTS = [
    "",
    "Hello. Please reissue invoice no. ab-123, the VAT is wrong. Thanks.",
    "Hi, invoice #x7 was sent twice. Rechnung nr. a-12 ist doppelt.",
    "La facture n° ab12 est fausse. Factura nº bc-9 duplicada.",
    "The scanner is broken. We need a spare battery. It is still under warranty.",
    'Our pump throws an "E42" error. A technician? Der Drucker ist kaputt.',
    "We ſigned. The \u212aPI was cut. İstanbul office: the printer is DEFECTIVE.",
    "Different topic: a second warehouse in Leeds. Headhunting for a client.",
    "We are recruiting on behalf of a client. Your profile fits. Book a live demo.",
    "Price: 48k USD or EUR 12.5k; usd 300 and 12.500,00 € and US$ 9 and £7m.",
    "no currency here, just 48,000 units and 12 pallets",
    "Thursday 11 works for us. See you then.",
]


def _dev_texts() -> list[str]:
    files = sorted((ROOT / "fixtures" / "corpus" / "dev").glob("*/mail/*/*.eml"))
    assert len(files) > 1000
    texts = []
    for path in files:
        parsed = parse_message(path.read_bytes(), fingerprint="f", archive_key="k", limits=ParseLimits())
        texts += [parsed.subject, reply_text(parsed.body_text)]
    return texts


def _plain_support(text: str) -> tuple[tuple[str, str], ...]:
    """support_sentences as it was: every family's pattern on every sentence."""
    found = []
    for sentence in sentences(text):
        family = next((name for name, pattern in support.FAMILIES if pattern.search(sentence)), None)
        if family is not None:
            found.append((family, sentence[:400]))
    return tuple(found)


def test_support_sentences_are_what_every_pattern_finds() -> None:
    signals.forget()
    try:
        for text in TEXTS + _dev_texts():
            assert tuple(support.support_sentences(text)) == _plain_support(text), text[:200]
    finally:
        signals.forget()


def test_an_invoice_number_in_lower_case_is_not_ruled_out_by_its_probe() -> None:
    # IGNORECASE lets [A-Z0-9] take "a"; the probe reads lower-cased text case-sensitively.
    signals.forget()
    assert support.support_sentences("We paid invoice no. ab12 twice.") == [
        ("invoice", "We paid invoice no. ab12 twice.")
    ]


def test_a_text_without_a_currency_has_no_amount() -> None:
    for text in TEXTS + _dev_texts():
        if money._AMOUNT.search(text) is not None:
            assert money._CURRENCY.search(text) is not None, text[:200]
    money.forget()
    assert [(str(v), c) for v, c, _ in money.find_amounts(TEXTS[9])] == [
        ("48000.00", "USD"),
        ("12500.00", "EUR"),
        ("12500.00", "EUR"),
        ("9.00", "USD"),
        ("7000000.00", "GBP"),
    ]
    assert money.find_amounts(TEXTS[10]) == []


def test_a_kept_search_is_the_search() -> None:
    case_sensitive = re.compile(r"Demo")
    patterns = (signals.JOB, signals.DEMO, signals.CONFIRM, signals.ANOTHER_DEAL, case_sensitive)
    probes.forget()
    for text in TEXTS + _dev_texts()[:2000]:
        for pattern in patterns:
            assert probes.says(pattern, text) == (pattern.search(text) is not None), (pattern, text[:200])
            assert first_sentence(text, pattern) == next(
                (s for s in sentences(text) if pattern.search(s)), None
            )
    probes.forget()


def test_a_split_kept_for_the_next_reader_is_not_the_callers() -> None:
    text = "We would like a quote. Thursday works."
    split = sentences(text)
    split.clear()
    assert sentences(text) == ["We would like a quote.", "Thursday works."]


def test_an_answer_kept_is_for_the_thresholds_it_was_found_with() -> None:
    model = IntentModel(MODEL_DIR)
    text = "We would like a quote. Please send it soon."
    assert model.find(text) == ("intent", "We would like a quote.")
    shipped = model.thresholds["intent"]
    model.thresholds["intent"] = 1.01  # changed in place: the kept answer no longer holds
    assert model.find(text) is None
    model.thresholds["intent"] = shipped
    assert model.find(text) == ("intent", "We would like a quote.")
