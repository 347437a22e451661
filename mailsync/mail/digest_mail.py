"""mailsync's own mail: digests, the reps' replies to them and the confirmations, told by their token.

A digest's Message-ID is `<digest.{token}@{domain}>` (token: 32 hex digits, `secrets.token_hex(16)`);
a digest and every confirmation carry the header `X-Mailsync-Digest: {token}`; a rep's reply names the
digest in In-Reply-To or References. None of it is customer mail: the pipeline archives it but never
threads, matches or proposes from it, even when a rep's own mailbox holds a copy.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.records import ParsedEmail

_DIGEST_ID = re.compile(r"^digest\.([0-9a-f]{32})@", re.IGNORECASE)


def digest_token(message_id: str | None) -> str | None:
    """The token of a digest's Message-ID (brackets already removed), else None."""
    found = _DIGEST_ID.match(message_id or "")
    return found.group(1).lower() if found else None


def replied_tokens(parsed: ParsedEmail) -> tuple[str, ...]:
    """The digest tokens a message answers: In-Reply-To first, then References newest first."""
    tokens: list[str] = []
    for ref in (parsed.in_reply_to, *reversed(parsed.references)):
        token = digest_token(ref)
        if token is not None and token not in tokens:
            tokens.append(token)
    return tuple(tokens)


def is_digest_mail(parsed: ParsedEmail) -> bool:
    """A digest, a confirmation, or a reply to either: mailsync's own mail, not a customer's."""
    return bool(parsed.mailsync_digest or digest_token(parsed.message_id) or replied_tokens(parsed))
