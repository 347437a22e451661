"""Redaction of a forgotten person from mail and text: their address and display name replaced, in
headers and bodies, whatever the encoding (pure; `mailsync forget` and the tombstone purge use it).

    raw bytes ─> MIME tree (compat32, as the parser sees it) ─> every header decoded (encoded words),
    every leaf part decoded (base64, quoted-printable, its charset) ─> replaced ─> re-encoded the same
    way ─> bytes ─> one byte-level pass over the whole (preamble, broken MIME) ─> checked: a trace
    left anywhere (mentions()) and the message becomes a stub that keeps only what identifies it

Matching is case-insensitive; an address also matches with a plus tag (jo+deals@x), a name across
folded whitespace. Hostile mail can make the email package raise anything: it then gets the byte pass
and the check, and the stub when that is not enough. Nothing here reads a key or a database.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import quopri
import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import Header, decode_header, make_header
from email.policy import compat32
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from email.message import Message

FORGOTTEN_NAME = "[forgotten]"
FORGOTTEN_DOMAIN = "forgotten.invalid"
PEOPLE_HEADERS = ("from", "sender", "reply-to", "to", "cc", "bcc", "resent-from", "resent-to")
MIN_NAME = 3  # shorter display names ("Al") would redact half the words of every message
_ADDRESS_LIKE = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_STUB_KEEP = ("message-id", "date", "in-reply-to", "references")


def replacement_address(tombstone: str) -> str:
    """What a forgotten address becomes: distinct per person (part of the keyed hash), never theirs."""
    return f"forgotten-{tombstone[:16]}@{FORGOTTEN_DOMAIN}"


def addresses_in(text: str) -> set[str]:
    """Every address-like token of `text`, lower-cased, with each tail of its local part after a dot
    (`hash.git.jo@x` names jo@x): candidates for a tombstone check."""
    found: set[str] = set()
    for token in _ADDRESS_LIKE.findall(text):
        local, _, domain = token.lower().rpartition("@")
        parts = local.split(".")
        found |= {f"{'.'.join(parts[i:])}@{domain}" for i in range(len(parts)) if parts[i]}
    return found


@dataclass
class Redaction:
    """Who to remove: addresses (each with its replacement) and display names."""

    addresses: dict[str, str]  # address (any case) -> replacement address
    names: set[str] = field(default_factory=set)
    name_replacement: str = FORGOTTEN_NAME

    def __post_init__(self) -> None:
        self._text: list[tuple[re.Pattern[str], str]] = []
        self._bytes: list[tuple[re.Pattern[bytes], bytes]] = []
        self._people: list[tuple[re.Pattern[str], str]] = []  # one-word names, for address headers only
        for address, replacement in sorted(self.addresses.items()):
            local, _, domain = address.strip().lower().rpartition("@")
            if not local or not domain:
                continue
            local = local.split("+", 1)[0]
            pattern = (
                rf"(?<![\w+'-]){re.escape(local)}(?:\+[^\s@<>\"',;]*)?@{re.escape(domain)}(?![\w-]|\.\w)"
            )
            self._text.append((re.compile(pattern, re.IGNORECASE), replacement))
            self._bytes.append((re.compile(pattern.encode(), re.IGNORECASE), replacement.encode()))
        for name in sorted({" ".join(n.split()) for n in self.names}, key=len, reverse=True):
            if len(name) < MIN_NAME or "@" in name:
                continue
            words = r"\s+".join(re.escape(w) for w in name.split())
            named = re.compile(rf"(?<!\w){words}(?!\w)", re.IGNORECASE)
            if len(name.split()) == 1:  # "Rachel", "Sales": only where it names someone, in address headers
                self._people.append((named, self.name_replacement))
                continue
            self._text.append((named, self.name_replacement))
            for charset in ("utf-8", "latin-1"):
                try:
                    encoded = [re.escape(w.encode(charset)) for w in name.split()]
                except UnicodeEncodeError:
                    continue
                raw = rb"(?<![A-Za-z0-9])" + rb"\s+".join(encoded) + rb"(?![A-Za-z0-9])"
                self._bytes.append((re.compile(raw, re.IGNORECASE), self.name_replacement.encode()))

    # -- text and values ---------------------------------------------------------------------------

    def text(self, value: str) -> str:
        for pattern, replacement in self._text:
            value = pattern.sub(replacement, value)
        return value

    def value(self, value: Any) -> Any:
        """`value` (JSON-like: str, list, dict at any depth, keys included) with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def in_text(self, value: str) -> bool:
        return any(pattern.search(value) for pattern, _ in self._text)

    def in_value(self, value: Any) -> bool:
        """Does any string in `value` (JSON-like, keys included) name the person?"""
        if isinstance(value, str):
            return self.in_text(value)
        if isinstance(value, dict):
            return any(self.in_value(k) or self.in_value(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(self.in_value(v) for v in value)
        return False

    def _in_header(self, name: str, value: str) -> bool:
        people = self._people if name.lower() in PEOPLE_HEADERS else []
        return self.in_text(value) or any(pattern.search(value) for pattern, _ in people)

    def _header(self, name: str, value: str) -> str:
        if name.lower() in PEOPLE_HEADERS:
            for pattern, replacement in self._people:
                value = pattern.sub(replacement, value)
        return self.text(value)

    def data(self, raw: bytes) -> bytes:
        """Byte-level replacement (plain headers and 7/8-bit bodies; not encoded ones)."""
        for pattern, replacement in self._bytes:
            raw = pattern.sub(replacement, raw)
        return raw

    # -- mail --------------------------------------------------------------------------------------

    def mentions(self, raw: bytes) -> bool:
        """Is the person anywhere in `raw`: in its bytes, a decoded header or a decoded part?"""
        if any(pattern.search(raw) for pattern, _ in self._bytes):
            return True
        try:
            msg = message_from_bytes(raw, policy=compat32)
            for part in msg.walk():
                if any(self._in_header(name, _decoded(value)) for name, value in part.items()):
                    return True
                body = _leaf_text(part)
                if body is not None and self.in_text(body):
                    return True
        except Exception:  # noqa: BLE001 - hostile mail: what the email package cannot read is checked as bytes
            return False
        return False

    def message(self, raw: bytes) -> bytes:
        """`raw` with the person replaced everywhere; a stub (identifying headers only) when some trace
        could not be removed."""
        try:
            msg = message_from_bytes(raw, policy=compat32)
            for part in msg.walk():
                self._headers(part)
                self._body(part)
            redacted = self.data(msg.as_bytes())
        except Exception:  # noqa: BLE001 - hostile mail: the byte pass and the check below decide
            redacted = self.data(raw)
        if self.mentions(redacted):
            return self.stub(raw)
        return redacted

    def stub(self, raw: bytes) -> bytes:
        """What is left of a message whose content cannot be cleaned: its identifying headers, redacted."""
        lines = [b"From: " + self.name_replacement.encode() + f" <nobody@{FORGOTTEN_DOMAIN}>".encode()]
        try:
            head = message_from_bytes(raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0], policy=compat32)
            for name, value in head.items():
                if name.lower() in _STUB_KEEP:
                    clean = self.text(_decoded(value)).encode("ascii", "replace")
                    lines.append(name.encode("ascii", "replace") + b": " + clean)
        except Exception:  # noqa: BLE001, S110 - hostile headers: the stub keeps none of them
            pass
        lines += [b"Subject: [redacted]", b"", b"[This message was redacted by `mailsync forget`.]", b""]
        stub = b"\r\n".join(lines)
        return self.data(stub)

    def _headers(self, part: Message) -> None:
        items = part.items()
        changed = False
        fresh: list[tuple[str, str]] = []
        for name, value in items:
            text = _decoded(value)
            if self._in_header(name, text):
                changed = True
                clean = self._header(name, text)
                fresh.append((name, clean if clean.isascii() else Header(clean, "utf-8").encode()))
            else:
                fresh.append((name, value))
        if changed:
            for name in {n for n, _ in items}:
                del part[name]
            for name, value in fresh:
                part[name] = value

    def _body(self, part: Message) -> None:
        if part.is_multipart():
            return
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            return
        charset = part.get_content_charset() or "utf-8"
        try:
            text = data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            fresh = self.data(data)
        else:
            clean = self.text(text)
            try:
                fresh = clean.encode(charset) if clean != text else data
            except (LookupError, UnicodeEncodeError):
                fresh = clean.encode("utf-8")
                part.set_param("charset", "utf-8")
            fresh = self.data(fresh)
        if fresh == data:
            return
        encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
        if encoding == "base64":
            part.set_payload(base64.encodebytes(fresh).decode("ascii"))
        elif encoding == "quoted-printable":
            part.set_payload(quopri.encodestring(fresh).decode("ascii"))
        else:
            part.set_payload(fresh.decode("ascii", "surrogateescape"))


def people(raw: bytes) -> list[tuple[str, str]]:
    """(display name, lower-cased address) of everyone in the header block's address headers."""
    try:
        msg = message_from_bytes(raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0], policy=compat32)
        values = [_decoded(v) for k, v in msg.items() if k.lower() in PEOPLE_HEADERS]
        return [
            (name.strip(), addr.strip().lower()) for name, addr in email.utils.getaddresses(values) if addr
        ]
    except Exception:  # noqa: BLE001 - hostile headers name nobody we can read
        return []


def texts(raw: bytes) -> list[str]:
    """The message as text: its bytes (latin-1), every decoded header and every decoded part."""
    found = [raw.decode("latin-1")]
    try:
        msg = message_from_bytes(raw, policy=compat32)
        for part in msg.walk():
            found += [_decoded(value) for value in part.values()]
            body = _leaf_text(part)
            if body is not None:
                found.append(body)
    except Exception:  # noqa: BLE001, S110 - hostile mail: the bytes are what there is
        pass
    return found


def addresses_anywhere(raw: bytes) -> set[str]:
    """Every address-like token in the bytes, the decoded headers and the decoded text parts."""
    found: set[str] = set()
    for text in texts(raw):
        found |= addresses_in(text)
    return found


def word_runs(text: str, longest: int = 4) -> set[str]:
    """Every run of 2 to `longest` consecutive words of `text` (candidates for a name tombstone)."""
    words = re.findall(r"[^\W\d_][\w'-]*", text)
    return {" ".join(words[i : i + n]) for n in range(2, longest + 1) for i in range(len(words) - n + 1)}


def _decoded(value: Any) -> str:
    """A header value as text, encoded words decoded; undecodable ones kept as written."""
    text = str(value)
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError, binascii.Error, AssertionError):
        return text


def _leaf_text(part: Message) -> str | None:
    if part.is_multipart():
        return None
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return None
    try:
        return data.decode(part.get_content_charset() or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return data.decode("latin-1")


def _iter_names(pairs: Iterable[tuple[str, str]], wanted: set[str]) -> Iterator[str]:
    for name, address in pairs:
        if address in wanted and name:
            yield name


def names_for(raw: bytes, addresses: set[str]) -> set[str]:
    """The display names the header block pairs with any of `addresses` (lower-cased)."""
    return set(_iter_names(people(raw), addresses))
