"""Readings done once, or not at all where they cannot find anything, with the same results: signals
searched only in sentences their probe lets through, a signature looked for only below a delimiter line,
the classifier's reading of a text, support sentences and amounts kept by text."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import ParseLimits
from mailsync.mail.parse import parse_message
from nlp import clean, intent, money, signals, support
from nlp.clean import _DELIMITER, _SEPARATOR, _SIGNATURE_LINES, reply_text, sentences, signature_lines
from nlp.intent import MODEL_DIR, IntentModel
from nlp.signals import _KINDS
from tests.support.signal_reading import exact, fast

ROOT = Path(__file__).resolve().parents[2]


def test_signals_on_the_dev_corpus_are_what_every_sentence_search_finds():
    files = sorted((ROOT / "fixtures" / "corpus" / "dev").glob("*/mail/*/*.eml"))
    assert len(files) > 1000
    with_hits = 0
    for path in files:
        parsed = parse_message(path.read_bytes(), fingerprint="f", archive_key="k", limits=ParseLimits())
        text = reply_text(parsed.body_text)
        assert fast(text) == exact(text), path.name
        with_hits += bool(fast(text))
    assert with_hits > 300


def test_letters_re_folds_beyond_lower_case_searchexact():
    # A long s (U+017F) is "s" to a case-insensitive search but stays itself lower-cased, and the Kelvin
    # sign is "k" both ways: no probe may rule a sentence out where such letters are.
    for text in (
        "Hello. We ſigned the contract. Thanks.",
        "Hi. The budget was \u212aept. The \u212aPI was cut.",
    ):
        assert fast(text) == exact(text)
    assert ("won", "We ſigned the contract.") in fast("Hello. We ſigned the contract. Thanks.")


class _Counted:
    def __init__(self, pattern: re.Pattern[str], searched: list[str]) -> None:
        self.pattern, self.searched = pattern, searched

    def search(self, text: str) -> re.Match[str] | None:
        self.searched.append(text)
        return self.pattern.search(text)


def test_a_sentence_its_kinds_probe_rules_out_is_not_searched(monkeypatch):
    searched: list[str] = []
    monkeypatch.setattr(signals, "_KINDS", tuple((kind, _Counted(p, searched)) for kind, p in _KINDS))
    signals.forget()
    try:
        text = "Hello Ana. The weather is fine. Could you send us a price list? Thanks a lot. See you soon."
        assert fast(text) == exact(text)
        assert set(searched) == {"Could you send us a price list?"}
        searched.clear()
        fast(text + " Best regards, Ana")  # its sentences were probed once: only the exact search again
        assert searched == ["Could you send us a price list?"] * len(searched)
    finally:
        signals.forget()  # no counting pattern stays in the caches


def _old_signature_lines(body: str) -> tuple[str, ...]:
    """signature_lines as it was: every line looked at until the delimiter."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    start = None
    for i, raw in enumerate(lines):
        if _DELIMITER.match(raw):
            start = i
            break
        if _SEPARATOR.match(raw.strip()) or clean._header_block(lines, i):
            return ()
    if start is None:
        return ()
    found: list[str] = []
    for raw in lines[start + 1 : start + 1 + _SIGNATURE_LINES]:
        line = raw.strip()
        if not line or clean._QUOTED.match(line) or clean._ATTRIBUTION.match(line):
            break
        found.append(line)
    return tuple(found)


BODIES = [
    "",
    "--",
    "Thanks\n-- \nAna Ruiz\nBuyer\n\nP.S.",
    "Thanks\r\n--\r\nAna Ruiz\r\nAcme\r\n> quoted",
    "Thanks\r--  \rAna\rAcme",
    "From: a@x.example\nTo: b@y.example\n\nold mail\n--\nsomeone else",
    "-----Original Message-----\nhistory\n-- \nsig",
    "Hi\n -- \nnot a delimiter\n--x\n--\u000b\nAna\n--\nsecond",
    "Hi\n--\u2028\nAna",
    "Hi\n\n--\t\nAna\nOn Tue, Ana wrote:\nmore",
    "a\n" * 50 + "--\n" + "line\n" * 20,
]


def test_signature_lines_are_what_reading_every_linefast():
    for body in BODIES:
        assert signature_lines(body) == _old_signature_lines(body), body


def test_mail_without_a_delimiter_line_is_not_read_line_by_line(monkeypatch):
    looked: list[int] = []
    header_block = clean._header_block
    monkeypatch.setattr(clean, "_header_block", lambda lines, i: looked.append(i) or header_block(lines, i))
    assert signature_lines("Hello\nFrom: a@x.example\nTo: b\n\nthe history\n-- not one\n") == ()
    assert looked == []
    assert signature_lines("Hello\nThanks\n--\nAna") == ("Ana",)
    assert looked == [0, 1]


def test_a_text_classified_again_is_not_split_again(monkeypatch):
    model = IntentModel(MODEL_DIR)
    split: list[str] = []
    monkeypatch.setattr(intent, "sentences", lambda text: split.append(text) or sentences(text))
    first = "We would like a quote for 40 units. When can you deliver?"
    second = "Sadly the project was cancelled. Thanks for your time."
    answers = [model.find(text) for text in (first, second, first)]
    assert split == [first, second]
    fresh = IntentModel(MODEL_DIR)
    assert answers == [fresh.find(first), fresh.find(second), fresh.find(first)]


def test_a_text_read_again_is_judged_by_the_thresholds_of_now(monkeypatch):
    model = IntentModel(MODEL_DIR)
    first = "We would like a quote. Please send it soon."
    assert model.find(first) == ("intent", "We would like a quote.")
    model.thresholds = {"intent": 1.01, "won": 1.01, "lost": 1.01}
    assert model.find(first) is None


def test_support_sentences_and_amounts_are_read_once_per_text(monkeypatch):
    signals.forget()
    split: list[str] = []
    monkeypatch.setattr(support, "sentences", lambda text: split.append(text) or sentences(text))
    texts = ["Pump fault", "The pump shows error E42 again. The spare part arrived broken."]
    assert support.is_support(texts) == support.is_support(texts)
    assert split == texts
    numbers: list[str] = []
    number = money._number
    monkeypatch.setattr(money, "_number", lambda text: numbers.append(text) or number(text))
    found = money.find_amounts("EUR 48,000 for the fleet, $1.2k for the kit")
    found.clear()  # the caller's own list
    again = money.find_amounts("EUR 48,000 for the fleet, $1.2k for the kit")
    assert [(str(value), currency) for value, currency, _ in again] == [
        ("48000.00", "EUR"),
        ("1200.00", "USD"),
    ]
    assert numbers == ["48,000", "1.2"]
    signals.forget()  # a benchmark's cold reading reads again
    money.find_amounts("EUR 48,000 for the fleet, $1.2k for the kit")
    assert len(numbers) == 4
