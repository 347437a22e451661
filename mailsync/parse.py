"""Parse: raw bytes -> ParsedEmail with mail-parser, under explicit limits. Pure; see parse_worker.py.

Limits are checked cheaply before the parser sees the bytes (size, header lines, "is this mail at
all"), then on the parsed tree (MIME depth, part count). A message over a limit is a ParseError: the
pipeline quarantines it, it stays in the archive.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import html2text
import mailparser

from config.errors import ParseError
from mailsync.identity import normalise_message_id, split_message
from storage.records import Address, Attachment, ParsedEmail

if TYPE_CHECKING:
    from email.message import Message

    from config.settings import ParseLimits

_LEADING_BLANK = re.compile(rb"\A(?:[ \t]*\r?\n)+")
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,}$")
_MSGIDS = re.compile(r"<([^<>\s]+)>")
_MAX_SUBJECT = 1000
_MAX_REFS = 100


def check_envelope(raw: bytes, limits: ParseLimits) -> bytes:
    """Cheap checks before any parser runs; raise ParseError naming the limit.

    Returns the bytes to parse: without whitespace-only lines before the headers, which some
    exporters and clients write (the archive keeps the exact bytes).
    """
    if len(raw) > limits.max_bytes:
        raise ParseError(f"message too large: {len(raw):,} bytes > limit {limits.max_bytes:,}")
    if not raw.strip():
        raise ParseError("empty message")
    raw = _LEADING_BLANK.sub(b"", raw, count=1)
    head, _ = split_message(raw)
    first = head.split(b"\n", 1)[0]
    if not _HEADER_LINE.match(first):
        raise ParseError("no header block: the first line is not a header")
    lines = head.count(b"\n") + 1
    if lines > limits.max_header_lines:
        raise ParseError(f"too many header lines: {lines:,} > limit {limits.max_header_lines:,}")
    return raw


def parse_message(raw: bytes, *, fingerprint: str, archive_key: str, limits: ParseLimits) -> ParsedEmail:
    """Parse one message; raise ParseError for anything over a limit or not mail."""
    parsed = mailparser.parse_from_bytes(check_envelope(raw, limits))
    message: Message = parsed.message
    _check_tree(message, limits)
    message_id = normalise_message_id(_header(message, "Message-ID"))
    body = "\n".join(parsed.text_plain).strip()
    if not body and parsed.text_html:
        body = _html_to_text("\n".join(parsed.text_html))
    return ParsedEmail(
        fingerprint=fingerprint,
        archive_key=archive_key,
        message_id=message_id or f"{fingerprint}@mailsync.invalid",
        in_reply_to=normalise_message_id(_header(message, "In-Reply-To")),
        references=tuple(_MSGIDS.findall(_header(message, "References")))[-_MAX_REFS:],
        sender=next(iter(_addresses(message, "From")), None),
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        subject=" ".join(str(parsed.subject or "").split())[:_MAX_SUBJECT],
        sent_at=_date(_header(message, "Date")),
        body_text=body[: limits.max_body_chars],
        attachments=tuple(
            Attachment(
                filename=str(a.get("filename") or "")[:300],
                content_type=str(a.get("mail_content_type") or "application/octet-stream"),
                size=len(a.get("payload") or ""),
            )
            for a in parsed.attachments
        ),
        auto_submitted=_header(message, "Auto-Submitted") or None,
        precedence=(_header(message, "Precedence") or "").lower() or None,
        list_id=_header(message, "List-Id") or None,
        content_type=message.get_content_type(),
    )


def _check_tree(message: Message, limits: ParseLimits) -> None:
    parts = 0
    stack: list[tuple[Message, int]] = [(message, 1)]
    while stack:
        part, depth = stack.pop()
        parts += 1
        if depth > limits.max_mime_depth:
            raise ParseError(f"MIME nesting deeper than {limits.max_mime_depth}")
        if parts > limits.max_parts:
            raise ParseError(f"more than {limits.max_parts} MIME parts")
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload if not isinstance(child, str))


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    return " ".join(str(value).split()) if value is not None else ""


def _addresses(message: Message, name: str) -> tuple[Address, ...]:
    values = [str(v) for v in message.get_all(name, [])]
    found: list[Address] = []
    for display, raw in email.utils.getaddresses(values):
        addr = raw.strip().lower()
        if _ADDRESS.match(addr):
            found.append(Address(name=_decode_name(display), email=addr))
    return tuple(found)


def _decode_name(display: str) -> str:
    from email.errors import MessageError  # noqa: PLC0415 - small, rarely needed
    from email.header import decode_header, make_header  # noqa: PLC0415

    try:
        return " ".join(str(make_header(decode_header(display))).split())[:200]
    except (ValueError, LookupError, UnicodeError, MessageError):  # HeaderParseError, CharsetError
        return " ".join(display.split())[:200]


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.ignore_images = True
    converter.ignore_links = True
    converter.body_width = 0
    return str(converter.handle(html)).strip()
