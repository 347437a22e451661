"""The fast path of find_signals (nlp/signals.py) finds exactly what searching every sentence for every
kind finds: on the whole labelled corpus, and on text whose letters `re` case-folds unusually."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from config.settings import ParseLimits
from mailsync.mail.parse import parse_message
from nlp.clean import reply_text
from nlp.signals import _KINDS, _PROBES
from tests.support.signal_reading import exact, fast

ROOT = Path(__file__).resolve().parents[2]


def corpus_texts() -> list[str]:
    files = sorted((ROOT / "fixtures" / "corpus" / "dev").glob("*/mail/*/*.eml"))
    files += sorted((ROOT / "fixtures" / "eval" / "mail").rglob("*.eml"))
    texts = []
    for path in files:
        parsed = parse_message(path.read_bytes(), fingerprint="f", archive_key="k", limits=ParseLimits())
        texts.append(reply_text(parsed.body_text))
    return texts


def test_probes_are_the_patterns_without_case_folding():
    for (_, pattern), probe in zip(_KINDS, _PROBES.probes, strict=True):
        assert pattern.flags & re.IGNORECASE
        assert not probe.flags & re.IGNORECASE
        # lower-case literals only: an upper-case one would never match the lower-cased text
        assert not re.findall(r"(?<!\\)(?<!\(\?-i:\[)[A-Z]", probe.pattern)


def test_fast_path_finds_what_every_sentence_search_finds_on_the_corpus():
    texts = corpus_texts()
    assert len(texts) > 1000
    with_hits = 0
    for text in texts:
        assert fast(text) == exact(text), text[:200]
        with_hits += bool(exact(text))
    assert with_hits > 300  # the comparison covers mail that carries signals, not only mail without


@pytest.mark.parametrize(
    "text",
    [
        "We have decided to go with ſiemens instead. Please ſend the invoice.",  # long s: re folds it to s
        "İ think we chose another vendor. Budget was cut.",  # dotted capital I: lower() adds a character
        "ΣΙΓΜΑ: we have decided to go with another supplier",
        "Wir haben uns für einen anderen Anbieter entschieden.\n\nBitte senden Sie die Rechnung.",
        "We are NOT moving forward with the other vendor; we chose another vendor? If we chose another vendor",
        "not\n\ndeposit paid yesterday",
        "Hemos decidido seguir con nuestro proveedor actual.\x00 Adjunto el pedido firmado.",
    ],
)
def test_fast_path_is_exact_on_unusual_text(text):
    assert fast(text) == exact(text)
