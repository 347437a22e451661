"""Message identity: one logical email, whatever bytes carried it.

The same mail arrives as different bytes: Dovecot turns bare LF into CRLF and drops NULs, each rep's
copy has its own Received/Delivered-To headers, mbox exports quote `>From `. The fingerprint is the
SHA-256 of the normalised Message-ID, Date, From and body; without a Message-ID, of every header that
is not added in transit, plus the body. It reads only the header block (no MIME parse), so it is cheap
and cannot fail on hostile mail.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_CRLF = re.compile(rb"\r+\n")
_MBOX_FROM = re.compile(rb"^>+(>*From )", re.MULTILINE)
_MSGID = re.compile(r"<([^<>\s]+)>")
_MAX_HEADER_BYTES = 256 * 1024  # the identity needs a handful of headers, never a 50 MB one
# Headers a server or an export adds to each copy; never part of the identity.
_TRANSIT = frozenset(
    {
        "received", "return-path", "delivered-to", "x-original-to", "status", "x-status",
        "x-keywords", "x-uid", "content-length", "lines", "x-mozilla-status", "x-mozilla-status2",
        "arc-seal", "arc-message-signature", "arc-authentication-results", "authentication-results",
        "x-spam-status", "x-spam-score", "x-spam-level", "x-spam-flag", "x-spam-checker-version",
    }
)  # fmt: skip


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body) split at the first empty line; no body when there is none."""
    found = _BLANK_LINE.search(raw)
    if not found:
        return raw, b""
    return raw[: found.start()], raw[found.end() :]


def normalise_body(body: bytes) -> bytes:
    """Line endings to LF, NULs dropped, mbox `>From ` quoting undone, trailing blank space cut."""
    body = _CRLF.sub(b"\n", body.replace(b"\x00", b""))
    body = _MBOX_FROM.sub(rb"\1", body)
    return body.rstrip()


def normalise_message_id(value: str | None) -> str | None:
    """The first <id> in a header value, without brackets; None when there is none."""
    if not value:
        return None
    found = _MSGID.search(value)
    if found:
        return found.group(1)
    bare = value.strip()
    return bare if bare and " " not in bare and len(bare) < 1000 else None  # noqa: PLR2004


@dataclass(frozen=True, slots=True)
class Identity:
    fingerprint: str  # hex SHA-256: the message's identity
    message_id: str | None  # the Message-ID header, normalised, if there is one


def identify(raw: bytes) -> Identity:
    """The identity of the email in `raw`."""
    head, body = split_message(raw)
    headers = BytesHeaderParser(policy=compat32).parsebytes(head[:_MAX_HEADER_BYTES].replace(b"\x00", b""))
    digest = hashlib.sha256()
    message_id = normalise_message_id(str(headers.get("Message-ID", "") or ""))
    if message_id:
        fields = [message_id, _squash(headers.get("Date")), _squash(headers.get("From")).lower()]
    else:
        fields = [f"{k.lower()}:{_squash(v)}" for k, v in headers.items() if k.lower() not in _TRANSIT]
        if not fields:  # not mail at all: the whole content is its identity
            body = raw
    for item in fields:
        digest.update(item.encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    digest.update(normalise_body(body))
    return Identity(fingerprint=digest.hexdigest(), message_id=message_id)


def _squash(value: object) -> str:
    return " ".join(str(value or "").split())
