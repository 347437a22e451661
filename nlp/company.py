"""Name a new account as a person would: by what the mail calls the company, not by its domain squashed.

A rep writes "Granite Peak Builders", not "Granitepeak". The mail says it in three places, tried in
this order, each accepted only when it agrees with the sender's address or reads as a company name:

1. the display name: "Jane Doe | Osprey Linen", "Jane Doe (Osprey Linen)", "Jane Doe - Osprey Linen";
2. the signature (the lines after "-- ", or after a closing such as "Best regards,"): the line that
   spells the domain ("Granite Peak Builders" for granitepeak.example), or ends in a legal form
   ("Spedition Bergmann GmbH");
3. the words of the mail: a run of capitalised words that spells the domain ("... for Granite Peak").

"Agrees with the address": the line, squashed to letters and digits, starts with the domain's own
label (the one before the public suffix: osprey-linen in mail.osprey-linen.co.uk), or its initials are
that label (IBM). For free mail the domain says nothing about the company; there the local part does
(luis.ortega.hauling@gmail.com and "Ortega Hauling"), never the person's own name.

Nothing found: the label split at its hyphens ("osprey-linen" -> "Osprey Linen"); a label with
nothing to split at stays the domain itself ("ospreylinen.com"), since guessing word breaks invents a name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

# Second-level labels under a country code that are not the company's own (co.uk, com.au, ...).
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ltd", "plc", "or", "ne", "gob"})
_LEGAL_FORM = re.compile(
    r"\b(?:inc|llc|ltd|limited|plc|corp|corporation|co|company|gmbh|ag|kg|ohg|ug|se|sa|sas|sarl|srl|spa"
    r"|sl|bv|nv|oy|ab|as|aps|pty|llp|lp|kk)\.?$",
    re.IGNORECASE,
)
_DISPLAY_COMPANY = re.compile(r"^(?P<person>[^|()]+?)\s*(?:\||\s[-–—]\s|\bat\b|@)\s*(?P<company>.+)$")
_DISPLAY_PARENS = re.compile(r"^(?P<person>[^()]+?)\s*\((?P<company>[^()]+)\)$")
_CLOSING = re.compile(
    r"^(?:best|regards|kind\s+regards|best\s+regards|thanks|thank\s+you|cheers|sincerely|yours"
    r"|mit\s+freundlichen\s+grüßen|viele\s+grüße|beste\s+grüße|gruß|saludos|atentamente|un\s+saludo)\b.{0,30}$",
    re.IGNORECASE,
)
_CAPITALISED_RUN = re.compile(r"\b[A-ZÄÖÜ][\w&'’.-]*(?:\s+(?:&\s+)?[A-ZÄÖÜ][\w&'’.-]*){0,4}")
_NOT_A_COMPANY = re.compile(r"\b(?:via|on behalf of)\b|https?:|www\.|\d{3}", re.IGNORECASE)
_MAX_WORDS = 6
_MAX_CHARS = 80
_MIN_SQUASHED = 3  # "Co" or "AG" alone name nothing
_STOPWORDS = frozenset({"of", "and", "the", "&", "und", "y", "de", "der", "die"})


def company_name(
    email: str,
    *,
    display_name: str = "",
    signature: Sequence[str] = (),
    texts: Sequence[str] = (),
    free_mail: bool = False,
) -> str | None:
    """What the mail calls the sender's company, or None when it does not say (see the module doc)."""
    clue = _address_clue(email, free_mail=free_mail)
    person = _squash(_person(display_name))
    for candidate in (*_from_display(display_name), *_short_lines(signature)):
        if _agrees(candidate, clue, person, free_mail=free_mail):
            return candidate
    if free_mail:
        return None
    return next((run for run in _capitalised_runs(texts) if _squash(run).startswith(clue)), None)


def _agrees(candidate: str, clue: str, person: str, *, free_mail: bool) -> bool:
    """The candidate spells the address's clue (or its initials do), or carries a legal form."""
    squashed = _squash(candidate)
    mine = bool(person) and (person in squashed or squashed in person)  # the sender's own name
    if len(squashed) < _MIN_SQUASHED or mine or _NOT_A_COMPANY.search(candidate):
        return False
    if _LEGAL_FORM.search(candidate):
        return True
    return squashed in clue if free_mail else squashed.startswith(clue) or _initials(candidate) == clue


def domain_name(domain: str) -> str:
    """The fallback: the domain's own label split at hyphens ("Osprey Linen"), else the domain itself."""
    label, registrable = _label(domain)
    words = [w for w in re.split(r"[-_]+", label) if w]
    return " ".join(w.capitalize() for w in words) if len(words) > 1 else registrable


def closing_lines(text: str) -> tuple[str, ...]:
    """The lines after a closing ("Best regards,") near the end of `text`: a signature without "-- "."""
    lines = [line.strip() for line in text.splitlines()]
    tail = len(lines) - _MAX_WORDS - 2
    for i in range(len(lines) - 1, max(tail, -1), -1):
        if _CLOSING.match(lines[i]):
            return tuple(line for line in lines[i + 1 :] if line)
    return ()


def _address_clue(email: str, *, free_mail: bool) -> str:
    local, _, domain = email.lower().rpartition("@")
    return _squash(local) if free_mail else _squash(_label(domain)[0])


def _label(domain: str) -> tuple[str, str]:
    """The domain's own label and its registrable domain: (osprey-linen, osprey-linen.co.uk)."""
    parts = [p for p in domain.lower().strip(".").split(".") if p]
    if len(parts) < 2:  # noqa: PLR2004 - a bare label has no suffix to drop
        return (parts[0] if parts else ""), ".".join(parts)
    end = len(parts) - 1
    if len(parts) > 2 and len(parts[-1]) == 2 and parts[-2] in _SECOND_LEVEL:  # noqa: PLR2004 - a country code
        end -= 1
    return parts[end - 1], ".".join(parts[end - 1 :])


def _display_parts(display: str) -> tuple[str, str] | None:
    """(person, company) of a display name that names both, like "Jane Doe | Osprey Linen"."""
    for pattern in (_DISPLAY_PARENS, _DISPLAY_COMPANY):
        found = pattern.match(display.strip().strip("\"'"))
        if found:
            return _tidy(found["person"]), _tidy(found["company"])
    return None


def _from_display(display: str) -> Iterable[str]:
    parts = _display_parts(display)
    if parts:
        yield parts[1]


def _person(display: str) -> str:
    parts = _display_parts(display)
    return parts[0] if parts else display


def _short_lines(lines: Sequence[str]) -> Iterable[str]:
    for line in lines:
        tidy = _tidy(line)
        if tidy and len(tidy) <= _MAX_CHARS and len(tidy.split()) <= _MAX_WORDS:
            yield tidy


def _capitalised_runs(texts: Sequence[str]) -> Iterable[str]:
    """Capitalised runs and their parts, longest first: "Thanks Granite Peak" gives "Granite Peak"."""
    for text in texts:
        for run in _CAPITALISED_RUN.finditer(text):
            words = run.group().split()
            for size in range(len(words), 0, -1):
                for start in range(len(words) - size + 1):
                    yield _tidy(" ".join(words[start : start + size]))


def _tidy(text: str) -> str:
    return " ".join(text.split()).strip(" ,;:·|-–—")


def _initials(text: str) -> str:
    words = [w for w in re.split(r"[\s-]+", text) if w and w.lower() not in _STOPWORDS]
    return _squash("".join(w[0] for w in words)) if len(words) > 1 else ""


def _squash(text: str) -> str:
    """Lower-case letters and digits only, accents dropped: "Osprey-Linen Ltd." -> "ospreylinenltd"."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in plain if c.isalnum() and not unicodedata.combining(c))
