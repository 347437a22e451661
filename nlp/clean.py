"""Clean text first: drop quoted replies, forwarded history and signatures before anything is matched.

What a person wrote in this message is the evidence; what they quoted is some other message's.

Real mail comes in two shapes, and both are handled line by line:

    top-posted (Outlook, Gmail, most business mail)    inline / bottom-posted (lists, mutt, Apple)
    ---------------------------------------------      -------------------------------------------
    Sounds good, send the quote.       <- kept         On Tue, Nov 16, Joe wrote:   <- attribution
                                                       > Maybe add a new section?   <- quoted
    Best regards,                      <- kept         Something printfish?         <- kept
    Rachel Kim, Acme                                   > And the output?            <- quoted
                                                       "ThingX/ThingY: blah".       <- kept
    -----Original Message-----         <- history      --
    From: Dana  /  Sent: Monday        (cut here)      unsubscribe footer           <- signature

An attribution ("On .. wrote:", "Am .. schrieb ..:", "El .. escribió:", one line or wrapped onto
two) followed by `>` lines only introduces them: it is dropped and the text after the quote is kept.
Unquoted history (Outlook header blocks, "Original Message" and forward separators, an attribution
with no `>` after it) ends the author's text. So does a signature: the `-- ` delimiter or a "Sent
from my phone" line. A closing ("Best regards," then name and title) without `-- ` is kept: cutting it
lost real links in `make eval` (the customer's role and department words are evidence there).
mail-parser-reply, email-reply-parser and quotequail were compared with this on real mail
(quoted-inline replies and hyphen lists break them); see tests/unit/test_clean.py.
"""

from __future__ import annotations

import functools
import re

_WROTE = r"(?:wrote|writes|schrieb|escribió|escribio|a\s+écrit|ha\s+scritto|schreef|skrev|escreveu|napisał)"
# The line that introduces quoted history, or its second half when a client wrapped it.
_ATTRIBUTION = re.compile(rf"^.{{0,300}}\b{_WROTE}\b.{{0,200}}:$", re.IGNORECASE)
_ATTRIBUTION_HEAD = re.compile(r"^(?:on|am|el|en|le|il|op|em|den)\s", re.IGNORECASE)
# Where unquoted history starts: everything from here on is someone else's message.
_SEPARATOR = re.compile(
    r"""^(?:
        -{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|original-nachricht|mensaje\s+original
                  |message\s+d'origine|forwarded\s+message|weitergeleitete\s+nachricht
                  |mensaje\s+reenviado|message\s+transféré)\s*-{2,}
      | (?:begin\s+forwarded\s+message|anfang\s+der\s+weitergeleiteten\s+(?:e-mail|nachricht)
          |inicio\s+del\s+mensaje\s+reenviado):?
      | _{10,}
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADER = re.compile(
    r"^\**(?:from|von|de|sent|gesendet|enviado(?:\s+el)?|date|datum|fecha|to|an|para|subject|betreff"
    r"|asunto|cc)\**:\**\s",
    re.IGNORECASE,
)
_FROM_HEADER = re.compile(r"^\**(?:from|von|de)\**:\**\s", re.IGNORECASE)
_SIGNATURE = re.compile(
    r"^(?:--\s*"
    r"|(?:sent\s+from\s+my|get\s+outlook\s+for|von\s+meinem|gesendet\s+von|enviado\s+desde\s+mi)\b.{0,60})$",
    re.IGNORECASE,
)
_MAX_HEADERS = 12  # lines of one header block looked at: hostile mail may carry thousands in a row
_LOOKAHEAD = 20  # lines looked through for the quote an attribution introduces
_QUOTED = re.compile(r"^>(?!=)")  # "> text", ">> text", ">"; not a line that begins with ">="
_DELIMITER = re.compile(r"^--\s*$")  # the signature delimiter "-- " (RFC 3676), as clients send it
_ANY_DELIMITER = re.compile(r"^--[^\S\n]*$", re.MULTILINE)  # the same, as a line of a text split at "\n"
_SIGNATURE_LINES = 8  # a signature is a few lines; more is a footer or history
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-ZÄÖÜÁÉÍÓÚÑ0-9¿¡])|\n\s*\n|\n(?=\s*[-*•]\s)")


def read_body(body: str) -> tuple[str, tuple[str, ...]]:
    """(reply_text(body), signature_lines(body)): what matching reads of a body."""
    return reply_text(body), signature_lines(body)


def reply_text(body: str) -> str:
    """The part of `body` its sender wrote: without quoted or forwarded history and signature."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    skip = 0
    for i, raw in enumerate(lines):
        line = raw.strip()
        if skip:
            skip -= 1
            continue
        if _QUOTED.match(line):
            if _SEPARATOR.match(line.lstrip("> ")):
                break  # quoted Outlook or forward history: nothing of the sender's follows it
            continue
        if _SEPARATOR.match(line) or _SIGNATURE.match(line):
            break
        headers = _header_block(lines, i)
        if headers:
            if not _quote_follows(lines, i + headers - 1):
                break  # an Outlook or forward header over unquoted history
            skip = headers - 1  # "From: .. / Date: .." introducing `>` lines, as an attribution does
            continue
        if line.endswith(":") and _ATTRIBUTION.match(line):
            _drop_wrapped_head(kept)
            if _quote_follows(lines, i):
                continue  # it only introduces the `>` lines: the text after them is the sender's again
            break  # unquoted history follows
        kept.append(raw.rstrip())
    return "\n".join(_squash_blank(kept)).strip()


def signature_lines(body: str) -> tuple[str, ...]:
    """The sender's own signature after a `-- ` delimiter (name, title, company, phone), up to its
    first blank or quoted line; empty when the sender used none. Quoted signatures are someone else's."""
    text = body.replace("\r\n", "\n").replace("\r", "\n")
    first = _ANY_DELIMITER.search(text)  # the first line _DELIMITER matches
    if first is None:
        return ()  # most mail: no delimiter, no signature (whatever history it holds)
    lines = text.split("\n")
    start = text.count("\n", 0, first.start())
    for i in range(start):
        if _SEPARATOR.match(lines[i].strip()) or _header_block(lines, i):
            return ()  # unquoted history first: a delimiter after it is someone else's
    found: list[str] = []
    for raw in lines[start + 1 : start + 1 + _SIGNATURE_LINES]:
        line = raw.strip()
        if not line or _QUOTED.match(line) or _ATTRIBUTION.match(line):
            break
        found.append(line)
    return tuple(found)


def _quote_follows(lines: list[str], i: int) -> bool:
    following = next((line.strip() for line in lines[i + 1 : i + _LOOKAHEAD] if line.strip()), "")
    return following.startswith(">")


def _header_block(lines: list[str], i: int) -> int:
    """How many header lines start at `i` (two or more, one of them From/Von/De), else 0."""
    if not _HEADER.match(lines[i].strip()):
        return 0
    end = i
    while end < min(len(lines), i + _MAX_HEADERS) and _HEADER.match(lines[end].strip()):
        end += 1
    block = [line.strip() for line in lines[i:end]]
    return end - i if len(block) >= 2 and any(_FROM_HEADER.match(h) for h in block) else 0  # noqa: PLR2004


def _drop_wrapped_head(kept: list[str]) -> None:
    """An attribution wrapped over two lines: its first half ("On Fri, 25 Jun 2010 13:55 +0100")."""
    head = kept[-1].strip() if kept else ""
    if head and _ATTRIBUTION_HEAD.match(head) and not head.endswith((".", "!", "?")):
        kept.pop()


def _squash_blank(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def sentences(text: str) -> list[str]:
    """Rough sentences: split at end punctuation, blank lines and list bullets; whitespace squashed."""
    return list(_sentences(text))


_SENTENCES_CACHE = 1024  # texts: one message's text is split by several readers (signals, support, intent)


@functools.lru_cache(maxsize=_SENTENCES_CACHE)
def _sentences(text: str) -> tuple[str, ...]:
    parts = (" ".join(chunk.split()) for chunk in _SENTENCE_END.split(text))
    return tuple(p for p in parts if p)


@functools.lru_cache(maxsize=_SENTENCES_CACHE)
def first_sentence(text: str, pattern: re.Pattern[str]) -> str | None:
    """The first of the sentences of `text` where `pattern` is, if any."""
    return next((s for s in _sentences(text) if pattern.search(s)), None)


def forget() -> None:
    """Drop the kept splits (a benchmark times cold reading: nlp/signals.py forget)."""
    _sentences.cache_clear()
    first_sentence.cache_clear()
