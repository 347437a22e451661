"""Clean text first: drop quoted replies, forwarded history and signatures before anything is matched.

What a person wrote in this message is the evidence; what they quoted is some other message's.
"""

from __future__ import annotations

import re

# A line that starts the quoted history of a reply, in the clients and languages seen in real mail.
_HISTORY = re.compile(
    r"""^\s*(?:
        (?:on|am|el|le|il|op)\s.{0,200}?
        (?:wrote|schrieb|escribió|escribio|a\s+écrit|ha\s+scritto|schreef)(?:\s*:?|[^\n]{0,200}:)\s*$
      | -{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|mensaje\s+original
                 |message\s+d'origine)\s*-{2,}
      | -{2,}\s*(?:forwarded\s+message|weitergeleitete\s+nachricht|mensaje\s+reenviado)\s*-{2,}
      | _{10,}
      | (?:from|von|de):\s.+\n\s*(?:sent|gesendet|enviado|date|datum|fecha):\s
    )""",
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_SIGNATURE = re.compile(r"^-- ?$", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-ZÄÖÜÁÉÍÓÚÑ0-9¿¡])|\n\s*\n|\n(?=\s*[-*•]\s)")


def reply_text(body: str) -> str:
    """The part of `body` its sender wrote: before quoted history and signature, without `>` lines."""
    found = _HISTORY.search(body)
    if found:
        body = body[: found.start()]
    signature = _SIGNATURE.search(body)
    if signature:
        body = body[: signature.start()]
    lines = [line for line in body.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(lines).strip()


def sentences(text: str) -> list[str]:
    """Rough sentences: split at end punctuation, blank lines and list bullets; whitespace squashed."""
    parts = (" ".join(chunk.split()) for chunk in _SENTENCE_END.split(text))
    return [p for p in parts if p]
