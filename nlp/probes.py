"""Which of several case-insensitive patterns can match a text at all, asked cheaply.

`re` scans about three times faster without IGNORECASE, and most mail holds no deal phrase at all. So a
text's sentences are joined, lower-cased once, and searched with case-sensitive copies of the patterns
(their literals are lower-case; a "capitalised name" test `(?-i:[A-Z])` becomes any lower-case letter):
a probe that does not match rules its pattern out; one that matches sends the caller to the exact,
case-insensitive search of each sentence. Sentences are joined with NUL, neither a word nor a space
character, so no pattern reads across it and whatever matches in a sentence matches in the joined text.
Letters that `re` case-folds beyond str.lower() (long s, dotless i, Greek and Cyrillic variants) make
every probe answer yes. nlp/signals.py asks sentence by sentence instead (`probes`, UNUSUAL_CASE),
caching the answer per sentence: greetings and closings come back in every mail.
"""

from __future__ import annotations

import functools
import importlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

_JOIN = "\x00"
_CAPITALISED = "(?-i:[A-Z])"


def _unusual_case() -> re.Pattern[str]:
    """Non-ASCII letters that `re` case-folds beyond str.lower() (its private table; every non-ASCII
    letter if it moved)."""
    try:
        extra: dict[int, tuple[int, ...]] = importlib.import_module("re._casefix")._EXTRA_CASES  # noqa: SLF001
    except (ImportError, AttributeError):  # pragma: no cover - another Python: non-ASCII is unusual
        return re.compile(r"[^\x00-\x7f]")
    chars = {c for key, cases in extra.items() for c in (key, *cases) if c > 0x7F}  # noqa: PLR2004
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(chars)) + "]")


UNUSUAL_CASE = _unusual_case()


class Probes:
    """Case-sensitive copies of case-insensitive patterns, for `can_match`."""

    def __init__(self, patterns: Sequence[re.Pattern[str]]) -> None:
        self.probes = tuple(
            re.compile(p.pattern.replace(_CAPITALISED, "[a-z]"), p.flags & ~re.IGNORECASE) for p in patterns
        )

    def can_match(self, sentences: Sequence[str]) -> list[bool]:
        """Per pattern: False when it matches none of `sentences`; True when it may."""
        joined = _JOIN.join(sentences)
        lowered = joined.lower()
        if len(lowered) != len(joined) or UNUSUAL_CASE.search(lowered):
            return [True] * len(self.probes)
        return [probe.search(lowered) is not None for probe in self.probes]


_FOUND_CACHE = 4096  # (pattern, text) pairs; a thread's messages are asked again on every arrival
_probes: dict[re.Pattern[str], Probes] = {}


@functools.lru_cache(maxsize=_FOUND_CACHE)
def says(pattern: re.Pattern[str], text: str) -> bool:
    """pattern.search(text) is not None; for a case-insensitive `pattern` (lower-case literals, as the
    probes need), its probe asked first."""
    if not pattern.flags & re.IGNORECASE:
        return pattern.search(text) is not None
    probe = _probes.get(pattern) or _probes.setdefault(pattern, Probes([pattern]))
    return probe.can_match([text])[0] and pattern.search(text) is not None


def forget() -> None:
    """Drop the kept answers (a benchmark times cold reading: nlp/signals.py forget)."""
    says.cache_clear()
