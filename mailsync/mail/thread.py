"""Threading, the pure part: which Message-IDs and subject tie a message to a conversation.

JWZ-style: a message joins the thread of any message it references (In-Reply-To, References), of
any message that already references it (children that arrived first), or of a thread keyed by the
root it references (siblings under a missing "ghost" root). Without references, a reply-looking
subject ("Re:", "AW:", "RV:" ...) joins a recent thread with the same subject and a shared participant.
So does a forward ("Fwd:", "WG:", "TR:" ...): Outlook and Gmail forwards carry no In-Reply-To or
References, and a customer forwarding our mail back with their colleagues' answer below is the same
conversation (the shared participant keeps a forward to strangers out).
Machine replies stand alone: an out-of-office or a bounce answering our follow-up is no word from the
customer, and in the deal's thread it would read as activity on the deal (and carry its link).
storage/threads.py runs these rules against the database, incrementally.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.records import ParsedEmail

# Reply and forward prefixes in the languages the team's customers write in, plus list tags.
_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|antw|sv|vs|rv|r|ref|res|fw|fwd|wg|tr|enc|rif|odp)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]|\[[^\]]{1,40}\])\s*",
    re.IGNORECASE,
)
_REPLY = re.compile(
    r"^\s*(?:re|aw|antw|sv|vs|rv|r|ref|res|odp)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]", re.IGNORECASE
)
_FORWARD = re.compile(r"^\s*(?:fw|fwd|wg|tr|enc|rif|i)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]", re.IGNORECASE)
_MIN_SUBJECT_KEY = 4


def subject_key(subject: str) -> str:
    """The subject without reply/forward prefixes and list tags, lower-cased, spaces collapsed."""
    previous = None
    while previous != subject:
        previous, subject = subject, _PREFIX.sub("", subject, count=1)
    return " ".join(subject.lower().split())


def is_reply_subject(subject: str) -> bool:
    return bool(_REPLY.match(subject))


# Reasons (nlp/noise.py) of mail a machine sent in answer to a person's: it joins no conversation.
_MACHINE_REPLY = (
    "auto-submitted:",
    "delivery report",
    "automatic subject",
    "precedence: auto_reply",
    "robot sender",
)


def references(parsed: ParsedEmail, automated: str | None = None) -> tuple[str, ...]:
    """Every Message-ID this message points at, root first, without duplicates or itself; none for a
    machine reply (`automated` is its reason), which stands alone."""
    if automated is not None and automated.startswith(_MACHINE_REPLY):
        return ()
    ordered = [*parsed.references]
    if parsed.in_reply_to:
        ordered.append(parsed.in_reply_to)
    seen: set[str] = {parsed.message_id}
    unique = []
    for ref in ordered:
        if ref not in seen:
            seen.add(ref)
            unique.append(ref)
    return tuple(unique)


def thread_key(parsed: ParsedEmail, refs: tuple[str, ...]) -> str:
    """The key a new thread gets: the conversation's root Message-ID (possibly a missing one)."""
    return refs[0] if refs else parsed.message_id


def is_forward_subject(subject: str) -> bool:
    return bool(_FORWARD.match(subject))


def may_join_by_subject(parsed: ParsedEmail, automated: str | None = None) -> bool:
    """Whether a message without references may join a thread by subject: a reply- or forward-looking
    one that is no machine reply."""
    subject = parsed.subject
    if automated is not None and automated.startswith(_MACHINE_REPLY):
        return False
    return (is_reply_subject(subject) or is_forward_subject(subject)) and len(
        subject_key(subject)
    ) >= _MIN_SUBJECT_KEY
