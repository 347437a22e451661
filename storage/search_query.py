"""The search query language: what `mailsync search QUERY` means, parsed into a Query; pure.

A query is words, all of which must occur:

    pricing renewal          both words, anywhere in subject, sender or body
    "price list"             the words next to each other, in this order
    pric*                    a word starting with "pric" (one plain word, no phrase)
    pricing OR quote         either word (OR binds tighter than the implicit AND)
    pricing -invoice         pricing, and not invoice

Anything else is text: a piece with no letter or digit ("(", "&") is dropped, AND is implied, and a
fault (an open quote, a dangling OR, NOT) is a SearchError whose fix shows the syntax.
"""

from __future__ import annotations

from dataclasses import dataclass

from config.errors import SearchError
from storage.models import db_text

_SYNTAX_FIX = 'write words, "a phrase", word*, a OR b, -word (see `mailsync search --help`)'


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    phrase: bool = False  # written in quotes
    prefix: bool = False  # written with a trailing *


@dataclass(frozen=True, slots=True)
class Query:
    """All of `required` (each a group of alternatives: a OR b), none of `excluded`."""

    required: tuple[tuple[Term, ...], ...] = ()
    excluded: tuple[Term, ...] = ()

    @property
    def words(self) -> list[str]:
        """The words looked for, for excerpts."""
        return [w for group in self.required for term in group for w in term.text.split()]


def _error(message: str, fix: str = _SYNTAX_FIX) -> SearchError:
    return SearchError(f"search query: {message}", fix=fix)


def _scan(text: str) -> list[tuple[str, Term | None, bool]]:
    """(what was written, the term or None for OR, negated) for each piece of `text`."""
    pieces: list[tuple[str, Term | None, bool]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        negated = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        i += negated
        if text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _error(f"a quote opened at character {i + 1} is never closed", 'close it: "price list"')
            body, phrase, i = text[i + 1 : end], True, end + 1
        else:
            end = i
            while end < n and not text[end].isspace() and text[end] != '"':
                end += 1
            body, phrase, i = text[i:end], False, end
        prefix = body.endswith("*") and not phrase
        if phrase and i < n and text[i] == "*":
            raise _error("a * ends one word, not a quoted phrase", 'write "price list" or pric*')
        body = body.rstrip("*") if prefix else body
        written = text[start:i]
        if written == "OR":
            pieces.append((written, None, False))
        elif written == "NOT":
            raise _error("NOT is written as a minus sign", "write -word to leave out mail with that word")
        elif written != "AND" and any(c.isalnum() for c in body):  # AND is implied; "(" is no word
            if prefix and not body.isalnum():
                raise _error(f"{written!r}: a * ends one plain word", "write pric*, without punctuation")
            pieces.append((written, Term(body, phrase=phrase, prefix=prefix), negated))
    return pieces


def parse_query(text: str) -> Query:
    """`text` in the query language (see the module docstring), or SearchError naming the fault."""
    text = db_text(text)  # undecodable bytes in argv arrive as lone surrogates, which no driver binds
    required: list[list[Term]] = []
    excluded: list[Term] = []
    joining = False  # the previous piece was OR
    previous_negated = False
    for written, term, negated in _scan(text):
        if term is None:
            if not required or joining or previous_negated:
                raise _error("OR must stand between two words", "write pricing OR quote")
            joining = True
            continue
        if negated:
            if joining:
                raise _error(f"OR cannot join an excluded word ({written})", "write a OR b -c")
            excluded.append(term)
        elif joining:
            required[-1].append(term)
        else:
            required.append([term])
        joining, previous_negated = False, negated
    if joining:
        raise _error("OR must stand between two words", "write pricing OR quote")
    if excluded and not required:
        raise _error("-word only leaves mail out; there is no word to look for", "add one: pricing -invoice")
    return Query(tuple(tuple(g) for g in required), tuple(excluded))
