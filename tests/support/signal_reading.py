"""find_signals read two ways, for the tests that hold its fast paths to the plain reading."""

from __future__ import annotations

from nlp.clean import sentences
from nlp.signals import _KINDS, _OUTCOMES, _find_signals, imagined


def exact(text: str) -> tuple[tuple[str, str], ...]:
    """Every kind's pattern on every sentence: what find_signals must find."""
    hits = []
    for sentence in sentences(text):
        for kind, pattern in _KINDS:
            found = pattern.search(sentence)
            if found is None or (kind in _OUTCOMES and imagined(sentence, found.start())):
                continue
            hits.append((kind, sentence[:400]))
    return tuple(hits)


def fast(text: str) -> tuple[tuple[str, str], ...]:
    """What find_signals finds, read afresh."""
    _find_signals.cache_clear()
    return tuple((h.kind, h.sentence) for h in _find_signals(text))
