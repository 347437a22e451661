"""Parse: raw bytes -> ParsedEmail as mail-parser reads them, under explicit limits. Pure (parse_worker.py).

Limits are checked cheaply before the parser sees the bytes (size, header lines, "is this mail at
all"), then on the parsed tree (MIME depth, part count). A message over a limit is a ParseError: the
pipeline quarantines it, it stays in the archive.

Ordinary mail is read by the standard library's parser with mail-parser's rules (`_read_ordinary`:
the tree mail-parser builds, its choice of bodies and attachments, none of its Received, address and
date analysis, which cost most of its time; tests/unit/test_parse_fast_path.py holds the two equal).
mail-parser itself reads what those rules leave out (an epilogue it recovers, a name it makes up, a
multipart it flattens, non-ASCII MIME headers, an encoded-word in an address header it would crash
on) and mail the standard library's parser raises on. When mail-parser crashes (AttributeError on a
nested multipart that reuses its parent's boundary, HeaderParseError on a broken encoded-word in a
display name), the standard library's plainer reading (`_read_with_stdlib`) stands in, under the same
limits. Only when both parsers fail is it a ParseError, whose reason says how each failed, in the
order they were tried.
"""

from __future__ import annotations

import email
import email.utils
import re
from base64 import b64encode
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError, MessageError, StartBoundaryNotFoundDefect
from email.header import Header, decode_header, make_header
from email.policy import compat32
from typing import TYPE_CHECKING, NamedTuple, Protocol
from unicodedata import normalize

import html2text

from config.errors import ParseError
from mailsync.mail.identity import normalise_message_id, split_message
from storage.records import Address, Attachment, ParsedEmail

if TYPE_CHECKING:
    from email.message import Message

_LEADING_BLANK = re.compile(rb"\A(?:[ \t]*\r?\n)+")
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]{2,}$")
_MSGIDS = re.compile(r"<([^<>\s]+)>")
_MARKED_SECTION = re.compile(r"<!\[(?!CDATA\[)", re.IGNORECASE)
_MAX_SUBJECT = 1000
_MAX_REFS = 100
_MAX_TOKEN = 64  # a digest token is 32 hex digits; more is not ours
_BODY_TYPES = ("text/plain", "text/html")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")  # mail-parser's, in its address parser
_ADDRESS_HEADERS = ("Bcc", "Cc", "Delivered-To", "From", "Reply-To", "To")  # the ones mail-parser parses
_MIME_HEADERS = {"content-type", "content-disposition", "content-id", "content-transfer-encoding"}


class Limits(Protocol):
    """The limits parsing reads: config.settings.ParseLimits, or the plain tuple a parse worker gets."""

    @property
    def max_bytes(self) -> int: ...
    @property
    def max_mime_depth(self) -> int: ...
    @property
    def max_parts(self) -> int: ...
    @property
    def max_header_lines(self) -> int: ...
    @property
    def max_header_bytes(self) -> int: ...
    @property
    def max_body_chars(self) -> int: ...


class ParserFailure(NamedTuple):
    """How one parser failed on a message: for the quarantine reason and the log."""

    parser: str
    error_class: str
    detail: str

    @classmethod
    def of(cls, parser: str, exc: BaseException) -> ParserFailure:
        return cls(parser, type(exc).__name__, str(exc)[:300])

    def __str__(self) -> str:
        return f"{self.parser} failed: {self.error_class}: {self.detail}"


@dataclass(frozen=True, slots=True)
class _Content:
    """What a parser read from one message: the header tree and the decoded parts we keep."""

    message: Message
    subject: str
    plain: list[str]
    html: list[str]
    attachments: tuple[Attachment, ...]


def check_envelope(raw: bytes, limits: Limits) -> bytes:
    """Cheap checks before any parser runs; raise ParseError naming the limit.

    Returns the bytes to parse: without whitespace-only lines before the headers, which some
    exporters and clients write, nor an mbox `From ` envelope line (the archive keeps the exact bytes).
    """
    if len(raw) > limits.max_bytes:
        raise ParseError(f"message too large: {len(raw):,} bytes > limit {limits.max_bytes:,}")
    if not raw.strip():
        raise ParseError("empty message")
    raw = _LEADING_BLANK.sub(b"", raw, count=1)
    if raw.startswith(b"From "):  # the mbox envelope line, e.g. "From MAILER-DAEMON Fri Jul  8 12:08:34 2011"
        raw = raw.partition(b"\n")[2]
    head, _ = split_message(raw)
    first = head.split(b"\n", 1)[0]
    if not _HEADER_LINE.match(first):
        raise ParseError("no header block: the first line is not a header")
    if len(head) > limits.max_header_bytes:  # before any parser copies it (a 50 MB line cost 600 MB)
        raise ParseError(f"header block too large: {len(head):,} bytes > limit {limits.max_header_bytes:,}")
    lines = head.count(b"\n") + 1
    if lines > limits.max_header_lines:
        raise ParseError(f"too many header lines: {lines:,} > limit {limits.max_header_lines:,}")
    return raw


def parse_message(raw: bytes, *, fingerprint: str, archive_key: str, limits: Limits) -> ParsedEmail:
    """Parse one message; raise ParseError for anything over a limit, not mail, or unreadable."""
    return parse_with_fallback(raw, fingerprint=fingerprint, archive_key=archive_key, limits=limits)[0]


def parse_with_fallback(
    raw: bytes, *, fingerprint: str, archive_key: str, limits: Limits
) -> tuple[ParsedEmail, ParserFailure | None]:
    """parse_message, and how the first parser failed when another one stood in."""
    data = check_envelope(raw, limits)
    message: Message | None = None
    content: _Content | None = None
    failure: ParserFailure | None = None
    try:
        message = email.message_from_bytes(data, policy=compat32)  # the tree mail-parser builds too
        content = _read_ordinary(message)
    except Exception as exc:  # noqa: BLE001 - hostile mail makes a parser raise anything
        failure = ParserFailure.of("stdlib email parser", exc)
    if content is None:
        try:
            content = _read_with_mailparser(data)
        except Exception as exc:
            second = ParserFailure.of("mail-parser", exc)
            if message is None:
                raise ParseError(f"{failure}; {second}") from exc
            try:
                content, failure = _read_with_stdlib(message), second
            except Exception as third:
                raise ParseError(f"{second}; {ParserFailure.of('stdlib email parser', third)}") from third
    _check_tree(content.message, limits)
    return _build(content, fingerprint, archive_key, limits), failure


def _read_with_mailparser(data: bytes) -> _Content:
    import mailparser  # noqa: PLC0415 - most mail never needs it: a worker loads it on first use

    parsed = mailparser.parse_from_bytes(data)
    return _Content(
        message=parsed.message,
        subject=str(parsed.subject or ""),
        plain=list(parsed.text_plain),
        html=list(parsed.text_html),
        attachments=tuple(
            Attachment(
                filename=str(a.get("filename") or "")[:300],
                content_type=str(a.get("mail_content_type") or "application/octet-stream"),
                size=len(a.get("payload") or ""),
            )
            for a in parsed.attachments
        ),
    )


def _read_ordinary(message: Message) -> _Content | None:
    """What mail-parser 4.8.0's MailParser.parse() keeps of `message`; None where it does more."""
    if _broken_address_word(message):
        return None  # mail-parser raises HeaderParseError on it: let it, and _read_with_stdlib stand in
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    attached: set[int] = set()  # parts of an attached container: named inline text is no body there
    for part in message.walk():
        if _beyond_ordinary(part):
            return None
        inside = id(part) in attached
        if part.is_multipart():
            container = part.get_content_disposition()
            if inside or container not in {None, "inline"} or (container != "inline" and part.get_filename()):
                attached.update(id(child) for child in part.get_payload())
            continue
        disposition = part.get_content_disposition() or ""
        subtype = part.get_content_subtype()
        filename = _attachment_name(part, disposition, subtype)
        if filename is None:
            return None  # mail-parser names it at random
        if filename:
            size = _attached_size(part)
            attachments.append(
                Attachment(filename=filename[:300], content_type=part.get_content_type(), size=size)
            )
        inline_body = not inside and disposition == "inline" and part.get_content_type() in _BODY_TYPES
        if (
            (not filename or inline_body)
            and subtype in {"plain", "html"}
            and (text := _body_text(part, part.get_content_charset("utf-8")))
        ):
            (html if subtype == "html" else plain).append(text)
    subjects = [_decoded_part(v) for v in message.get_all("Subject", [])]
    return _Content(
        message=message,
        subject=subjects[0] if len(subjects) == 1 else str(subjects or ""),  # a list's repr, as mail-parser
        plain=plain,
        html=html,
        attachments=tuple(attachments),
    )


def _beyond_ordinary(part: Message) -> bool:
    """A part mail-parser reads in ways _read_ordinary does not follow."""
    return (
        any(isinstance(d, StartBoundaryNotFoundDefect) for d in part.defects)  # it recovers the epilogue
        or any(not v.isascii() for k, v in part.raw_items() if k.lower() in _MIME_HEADERS)  # a UTF-8 view
        or (part.is_multipart() and part.get_content_disposition() == "attachment")  # flattened to one
    )


def _attachment_name(part: Message, disposition: str, subtype: str) -> str | None:
    """The name mail-parser gives an attachment, "" for a body; None when it makes one up at random."""
    if filename := _decoded_part(part.get_filename()):
        return filename
    if (content_id := str(part.get("Content-ID") or "")) and subtype not in {"html", "plain"}:
        return content_id
    return None if subtype in "rtf" or disposition == "attachment" else ""  # its `in ("rtf")`: a substring


def _broken_address_word(message: Message) -> bool:
    """An encoded-word in an address header that mail-parser's address parser would raise on."""
    for name in _ADDRESS_HEADERS:
        for value in message.get_all(name, []):
            for word in _ENCODED_WORD.finditer(str(value)):
                try:
                    decode_header(word.group())
                except HeaderParseError:
                    return True
    return False


def _decoded_part(value: str | Header | None) -> str:
    """mail-parser's decode_header_part: encoded-words decoded, undecodable bytes dropped."""
    if not value:
        return ""
    try:
        decoded = "".join(_text(data, charset or "utf-8") for data, charset in decode_header(value))
    except (HeaderParseError, UnicodeError):
        decoded = str(value)
    try:
        decoded.encode("utf-8")
    except UnicodeEncodeError:
        return str(value).encode("utf-8", "backslashreplace").decode("utf-8").strip()
    return decoded.strip()


def _text(data: bytes | str, charset: str) -> str:
    """mail-parser's ported_string: NFC, as it returns all text it decodes."""
    if isinstance(data, str):
        return normalize("NFC", data)
    try:
        text = data.decode(charset)
    except (LookupError, UnicodeError):
        text = data.decode("utf-8", "ignore")
    return normalize("NFC", text)


def _attached_size(part: Message) -> int:
    """The length of the attachment as mail-parser keeps it: base64 text, as sent or re-encoded."""
    if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        try:
            return len(part.get_payload())
        except (LookupError, UnicodeError):  # a charset that refuses to decode: the bytes re-encoded
            pass
    payload = part.get_payload(decode=True)
    return len(b64encode(payload)) if isinstance(payload, bytes) else 0


def _body_text(part: Message, charset: str) -> str:
    """mail-parser's body text: 7/8-bit ASCII as it is, else the declared charset, else UTF-8."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes) or not payload:
        return ""
    if (
        str(part.get("Content-Transfer-Encoding", "")).strip().lower() in {"", "7bit", "8bit"}
        and payload.isascii()
    ):
        return payload.decode("ascii")
    try:
        text = payload.decode(charset)
        text.encode("utf-8")  # some codecs can yield lone surrogates
    except (LookupError, UnicodeError):
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = payload.decode("utf-8", "replace")
    return normalize("NFC", text)


def _read_with_stdlib(message: Message) -> _Content:
    # compat32 keeps header values as the raw strings the helpers below expect (policy.default parses
    # them lazily, and its header parser raises on hostile mail in ways compat32 never reaches).
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() == "multipart":  # or one it could not split
            continue
        kind = part.get_content_type()
        payload = part.get_payload(decode=True)
        payload = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename or part.get_content_disposition() == "attachment" or kind not in _BODY_TYPES:
            attachments.append(
                Attachment(filename=_decode_words(filename or "", 300), content_type=kind, size=len(payload))
            )
        elif text := _decode_text(payload, part.get_content_charset()).strip():
            (html if kind == "text/html" else plain).append(text)
    return _Content(
        message=message,
        subject=_decode_words(_header(message, "Subject"), _MAX_SUBJECT),
        plain=plain,
        html=html,
        attachments=tuple(attachments),
    )


def _decode_text(payload: bytes, charset: str | None) -> str:
    """The declared charset, else UTF-8; never raises, never returns a lone surrogate."""
    try:
        text = payload.decode(charset or "utf-8", "replace")
        text.encode("utf-8")  # some codecs (utf-16, unicode_escape) can yield lone surrogates
    except (LookupError, UnicodeError):
        return payload.decode("utf-8", "replace")
    return text


def _build(content: _Content, fingerprint: str, archive_key: str, limits: Limits) -> ParsedEmail:
    message = content.message
    message_id = normalise_message_id(_header(message, "Message-ID"))
    body = "\n".join(content.plain).strip()
    if not body and content.html:
        body = _html_to_text("\n".join(content.html))
    return ParsedEmail(
        fingerprint=fingerprint,
        archive_key=archive_key,
        message_id=message_id or f"{fingerprint}@mailsync.invalid",
        in_reply_to=normalise_message_id(_header(message, "In-Reply-To")),
        references=tuple(_MSGIDS.findall(_header(message, "References")))[-_MAX_REFS:],
        sender=next(iter(_addresses(message, "From")), None),
        to=_addresses(message, "To"),
        cc=_addresses(message, "Cc"),
        subject=" ".join(content.subject.split())[:_MAX_SUBJECT],
        sent_at=_date(_header(message, "Date")),
        body_text=body[: limits.max_body_chars],
        attachments=content.attachments,
        auto_submitted=_header(message, "Auto-Submitted") or None,
        precedence=(_header(message, "Precedence") or "").lower() or None,
        list_id=_header(message, "List-Id") or None,
        content_type=message.get_content_type(),
        mailsync_digest=_header(message, "X-Mailsync-Digest")[:_MAX_TOKEN] or None,
    )


def _check_tree(message: Message, limits: Limits) -> None:
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
            found.append(Address(name=_decode_words(display, 200), email=addr))
    return tuple(found)


def _decode_words(value: str, limit: int) -> str:
    """RFC 2047 encoded-words decoded, whitespace squashed; the value as it is when they are broken."""
    try:
        decoded = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, MessageError):  # HeaderParseError, CharsetError
        decoded = value
    return " ".join(decoded.split())[:limit]


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _html_to_text(html: str) -> str:
    try:
        return _converted(html)
    except AssertionError:
        # Python 3.11's html.parser asserts on a marked section it does not know ("<![A: ..."): read
        # every such opening as text, as later Pythons do.
        return _converted(_MARKED_SECTION.sub("&lt;![", html))


def _converted(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.ignore_images = True
    converter.ignore_links = True
    converter.body_width = 0
    return str(converter.handle(html)).strip()
