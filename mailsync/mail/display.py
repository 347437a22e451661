"""Safe display text: mail-derived strings with the characters that hide or disguise what they say removed.

Mail decides every character of a subject, a display name or a body. Before any of it is shown to a
rep (digest, terminal) it loses what a reader cannot see but a renderer obeys: C0/C1 control characters
(terminal escapes, carriage returns that overwrite a line) and every Unicode format character (category
Cf): the bidi embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069 that make "evil",
U+202E, "txt.exe" read as "evilexe.txt", the marks U+200E, U+200F and U+061C, the zero-width
U+200B-U+200D and U+2060, U+FEFF, soft hyphens and tag characters. Lone surrogates, which no encoder
accepts, become U+FFFD. Escaping for HTML is the template's job (autoescape); this is what survives it.
"""

from __future__ import annotations

import unicodedata

_HIDDEN = frozenset(("Cc", "Cf"))  # controls and format characters
_SURROGATE = "Cs"
_REPLACEMENT = "\ufffd"


def _visible(line: str) -> str:
    if line.isprintable():  # the common case: nothing to drop (tabs are not printable)
        return line
    kept = []
    for char in line:
        category = unicodedata.category(char)
        if category == _SURROGATE:
            kept.append(_REPLACEMENT)
        elif char == "\t" or category not in _HIDDEN:
            kept.append(char)
    return "".join(kept)


def safe_text(value: str) -> str:
    """`value` fit to show: every line break (CR, CRLF, U+2028, ...) as one newline, tabs kept, every
    other control and format character removed."""
    return "\n".join(_visible(line) for line in value.splitlines())


def safe_line(value: str) -> str:
    """`value` fit to show on one line: `safe_text` with every run of whitespace (line breaks and tabs
    included) as one space, so mail cannot start a line of its own in a plain-text digest."""
    return " ".join(safe_text(value).split())
