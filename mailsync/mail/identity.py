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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_CRLF = re.compile(rb"\r+\n")
_MBOX_FROM = re.compile(rb"^>+(>*From )", re.MULTILINE)
_MSGID = re.compile(r"<([^<>\s]+)>")
_HEADER_NAME = re.compile(
    r"([\x21-\x39\x3b-\x7e]+):"
)  # the parser's header line (at least one name character)
_IDENTITY_HEADERS = frozenset({"message-id", "date", "from"})
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


def normalise_message_id(value: str | None) -> str | None:
    """The first <id> in a header value, without brackets; None when there is none."""
    if not value:
        return None
    found = _MSGID.search(value)
    if found:
        return found.group(1)
    bare = value.strip()
    return bare if bare and " " not in bare and len(bare) < 1000 else None  # noqa: PLR2004


def _normalise_lines(lines: bytes) -> bytes:
    """NULs dropped, line endings to LF, mbox `>From ` quoting undone; `lines` starts at a line start.
    Each step runs only where it can change something (a body is mostly base64 and plain lines), and
    looks first with the cheapest search: after CRLF -> LF, a CR left over is a bare one or the rest
    of a run of CRs before an LF (which the regex then folds), and every `>From ` quote holds ">From "."""
    if b"\x00" in lines:
        lines = lines.replace(b"\x00", b"")
    if b"\r" in lines:
        lines = lines.replace(b"\r\n", b"\n")
        if b"\r" in lines:
            lines = _CRLF.sub(b"\n", lines)
    if b">From " in lines:
        lines = _MBOX_FROM.sub(rb"\1", lines)
    return lines


class _BodyDigest:
    """Feeds the normalised body to a hash piece by piece: line endings to LF, NULs dropped, mbox
    `>From ` quoting undone, trailing blank space cut. Works on whole lines, so a chunk boundary
    anywhere gives the same digest as the body in one piece."""

    def __init__(self, digest: hashlib._Hash) -> None:
        self._digest = digest
        self._partial = b""  # an unfinished last line
        self._blank = b""  # trailing whitespace, hashed only once something follows it

    def update(self, chunk: bytes) -> None:
        data = self._partial + chunk
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        if cut:
            self._emit(_normalise_lines(data[:cut]))

    def finish(self) -> None:
        self._emit(_normalise_lines(self._partial))
        self._partial = b""

    def _emit(self, text: bytes) -> None:
        core = text.rstrip()
        if core:
            self._digest.update(self._blank)
            self._digest.update(core)
            self._blank = text[len(core) :]
        else:
            self._blank += text


class _HeadReader:
    """Splits a stream at the first empty line, keeping the first `keep` bytes of the header block."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.head = bytearray()
        self.done = False
        self._held = b""  # up to 4 unexamined bytes: an empty line may straddle two chunks

    def feed(self, chunk: bytes, *, final: bool = False) -> bytes:
        """Take the next chunk; once the head has ended, return the body bytes that followed it."""
        window = self._held + chunk
        found = _BLANK_LINE.search(window)
        # A match touching the window's end might grow (\r?) with the next chunk: wait for it.
        if found and (found.end() < len(window) or final):
            self._take(window[: found.start()])
            self._held, self.done = b"", True
            return window[found.end() :]
        held = 0 if final else min(len(window), 4)
        self._take(window[: len(window) - held])
        self._held, self.done = window[len(window) - held :], final
        return b""

    def _take(self, data: bytes) -> None:
        if len(self.head) < self.keep:
            self.head += data[: self.keep - len(self.head)]


@dataclass(frozen=True, slots=True)
class Identity:
    fingerprint: str  # hex SHA-256: the message's identity
    message_id: str | None  # the Message-ID header, normalised, if there is one


def identify(raw: bytes) -> Identity:
    """The identity of the email in `raw`."""
    return identify_stream(lambda: iter((raw,)))


def identify_stream(chunks: Callable[[], Iterator[bytes]]) -> Identity:
    """The identity of the email whose bytes `chunks()` yields; called twice for content that is not mail."""
    reader = _HeadReader(_MAX_HEADER_BYTES)
    pieces = chunks()
    body_start = b""
    for piece in pieces:
        body_start = reader.feed(piece)
        if reader.done:
            break
    else:
        body_start = reader.feed(b"", final=True)
    head = bytes(reader.head).replace(b"\x00", b"")
    found = _plain_headers(head)
    message_id = normalise_message_id(found.get("message-id")) if found is not None else None
    if found is not None and message_id:
        fields = [message_id, _squash(found.get("date")), _squash(found.get("from")).lower()]
    else:
        headers = BytesHeaderParser(policy=compat32).parsebytes(head)
        message_id = normalise_message_id(str(headers.get("Message-ID", "") or ""))
        if message_id:
            fields = [message_id, _squash(headers.get("Date")), _squash(headers.get("From")).lower()]
        else:
            fields = [f"{k.lower()}:{_squash(v)}" for k, v in headers.items() if k.lower() not in _TRANSIT]
    digest = hashlib.sha256()
    for item in fields:
        digest.update(item.encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    body = _BodyDigest(digest)
    if fields:
        body.update(body_start)
        for piece in pieces:
            body.update(piece)
    else:  # not mail at all: the whole content is its identity
        for piece in chunks():
            body.update(piece)
    body.finish()
    return Identity(fingerprint=digest.hexdigest(), message_id=message_id)


def _plain_headers(head: bytes) -> dict[str, str] | None:
    """Message-ID, Date and From (lower-cased names, first occurrence, lines joined) of a plain header
    block, as the standard library's header parser gives them; None when the block is not plain (not
    ASCII, a bare CR, an mbox `From ` line, a line that is no header), where only that parser knows.
    A tenth of its cost: identity runs on every message captured."""
    if (
        not head
        or head[0] in b" \t"
        or not head.isascii()
        or head.count(b"\r") != head.count(b"\r\n")
        or head.startswith(b"From ")
        or b"\nFrom " in head
    ):
        return None
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in head.decode("ascii").split("\n"):
        if line[:1] in {" ", "\t"}:
            if current is not None:
                current.append(line)
            continue
        name = _HEADER_NAME.match(line)
        if name is None:
            return None
        key = name.group(1).lower()
        current = (
            [line[name.end() :].lstrip(" \t")] if key in _IDENTITY_HEADERS and key not in found else None
        )
        if current is not None:
            found[key] = current
    # The parser keeps each line's ending inside a folded value and strips the last one.
    return {key: "\n".join(lines).rstrip("\r\n") for key, lines in found.items()}


def _squash(value: object) -> str:
    return " ".join(str(value or "").split())
