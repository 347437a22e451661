"""The fast path of parsing (issue 14): ordinary mail is read by the standard library's parser with
mail-parser's rules (mailsync/mail/parse.py, `_read_ordinary`), and what it gives must be what
mail-parser gave.

On every message of ../shared/corpora, the demo mailbox and a few hundred generated ones, the standard
library's plain reading (`_read_with_stdlib`, the stand-in when mail-parser crashes) differs from
mail-parser on 328 of 1,013: attachment sizes (mail-parser keeps base64 text, the plain reading counts
decoded bytes), parts with a Content-ID taken as attachments, message/rfc822 attachments, bodies it
strips and charsets it decodes otherwise, subjects whose encoded-words it joins otherwise. The rules
of `_read_ordinary` give mail-parser's results on all the mail they accept (972 of 1,013); the rest,
and mail mail-parser crashes on, take the way they took before.
"""

from __future__ import annotations

import email
import random
from email.policy import compat32
from functools import cache
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.mailgen import generate
from config.errors import ParseError
from config.settings import ParseLimits
from mailsync.mail.parse import (
    ParserFailure,
    _build,
    _check_tree,
    _read_ordinary,
    _read_with_mailparser,
    _read_with_stdlib,
    check_envelope,
    parse_with_fallback,
)
from tests.conftest import DEMO
from tests.unit.test_fuzz import FUZZ, hostile_mail
from tests.unit.test_parse_fallback import BOUNDARY_REUSED, BROKEN_NAME, METADATA

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from mailsync.mail.parse import _Content
    from storage.records import ParsedEmail

LIMITS = ParseLimits()
KEYS = {"fingerprint": "f" * 64, "archive_key": "k" * 64}
GENERATED = 300  # with a fixed seed: the same messages every run


@cache
def real_mail(corpora: Path) -> tuple[tuple[str, bytes], ...]:
    """(name, bytes) of every corpus file, every message of the demo mailbox, and generated mail."""
    files = sorted(p for p in corpora.rglob("*") if p.is_file() and p.name not in METADATA)
    found = [(p.relative_to(corpora).as_posix(), p.read_bytes()) for p in files]
    demo = sorted(p for p in (DEMO / "Maildir").rglob("*") if p.is_file() and p.parent.name in {"cur", "new"})
    found += [(f"demo/{p.relative_to(DEMO).as_posix()}", p.read_bytes()) for p in demo]
    found += [(f"generated/{i}", raw) for i, raw in enumerate(generate(GENERATED, seed=14, corpora=corpora))]
    return tuple(found)


def mail_parser_first(raw: bytes) -> tuple[ParsedEmail, ParserFailure | None]:
    """parse_with_fallback as it was: mail-parser for all mail, the plain reading when it crashed."""
    data = check_envelope(raw, LIMITS)
    failure = None
    try:
        content = _read_with_mailparser(data)
    except Exception as exc:  # noqa: BLE001 - as parse.py
        failure = ParserFailure.of("mail-parser", exc)
        try:
            content = _read_with_stdlib(email.message_from_bytes(data, policy=compat32))
        except Exception as second:
            raise ParseError(f"{failure}; {ParserFailure.of('stdlib email parser', second)}") from second
    _check_tree(content.message, LIMITS)
    return _build(content, KEYS["fingerprint"], KEYS["archive_key"], LIMITS), failure


def outcome(parse: Callable[[bytes], Any], raw: bytes) -> object:
    # mail-parser names an attachment without a name at random: both ways get the same random state.
    random.seed(14)
    try:
        return parse(raw)
    except ParseError:
        return ParseError


def both_ways(raw: bytes) -> tuple[Any, Any]:
    state = random.getstate()
    new = outcome(lambda r: parse_with_fallback(r, **KEYS, limits=LIMITS), raw)
    old = outcome(mail_parser_first, raw)
    random.setstate(state)
    return new, old


def ordinary(raw: bytes) -> tuple[bytes, _Content | None]:
    """The envelope-checked bytes and what the fast path made of them (None: declined)."""
    data = check_envelope(raw, LIMITS)
    return data, _read_ordinary(email.message_from_bytes(data, policy=compat32))


# -- real mail -------------------------------------------------------------------------------------


def test_ordinary_real_mail_reads_as_mail_parser_reads_it(corpora: Path) -> None:
    declined, differ, fast = [], [], 0
    for name, raw in real_mail(corpora):
        try:
            data, content = ordinary(raw)
        except ParseError:
            continue  # not mail: no parser sees it
        if content is None:
            declined.append(name)
            continue
        fast += 1
        expected = _build(_read_with_mailparser(data), KEYS["fingerprint"], KEYS["archive_key"], LIMITS)
        if _build(content, KEYS["fingerprint"], KEYS["archive_key"], LIMITS) != expected:
            differ.append(name)
    assert differ == []
    assert fast > 900  # 972 of 1,013 before the corpora change
    assert [n for n in declined if n.startswith(("demo/", "generated/"))] == []  # all ordinary
    assert len(declined) < 0.08 * len(real_mail(corpora))  # 37: epilogues, 8-bit MIME headers, ...


def test_parse_gives_on_real_mail_what_mail_parser_first_gave(corpora: Path) -> None:
    """Results and failure reports, message by message: byte-identical ParsedEmail, or both ParseError."""
    differ = [name for name, raw in real_mail(corpora) if (pair := both_ways(raw))[0] != pair[1]]
    assert differ == []


# -- what the fast path leaves to mail-parser ------------------------------------------------------

HEAD = b"From: Dana Reyes <dana@acme.example>\nSubject: Renewal\nMessage-ID: <r1@acme.example>\n"


def multipart(*parts: bytes) -> bytes:
    body = b"".join(b"--b\n" + part + b"\n" for part in parts)
    return HEAD + b"Content-Type: multipart/mixed; boundary=b\n\n" + body + b"--b--\n"


TEXT = b"Content-Type: text/plain; charset=utf-8\n\nWe renew for 40 seats.\n"
ORDINARY = {
    "plain": HEAD + b"\nWe renew for 40 seats.\n",
    "encoded sender and subject": HEAD.replace(b"Dana Reyes", b"=?utf-8?q?J=C3=BCrgen?=").replace(
        b"Renewal", b"=?utf-8?b?R3LDvMOfZQ==?="
    ),
    "two subjects": HEAD + b"Subject: second\n\nbody\n",
    "a base64 PDF": multipart(
        TEXT,
        b"Content-Type: application/pdf\nContent-Disposition: attachment; filename=q.pdf\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n",
    ),
    "an inline image by Content-ID": multipart(
        b"Content-Type: text/html\n\n<p>Hi <img src=cid:i1></p>\n",
        b"Content-Type: image/png\nContent-ID: <i1@acme.example>\nContent-Transfer-Encoding: base64\n\niVBORw==\n",
    ),
    "named inline text": multipart(
        b"Content-Type: text/plain\nContent-Disposition: inline; filename=a.txt\n\nhi\n"
    ),
    "a UTF-8 body, NFC": multipart(
        b"Content-Type: text/plain; charset=utf-8\n\nE\xcc\x81t\xc3\xa9 \xef\xa4\x80\n"
    ),
}
UNUSUAL = {
    "an epilogue mail-parser recovers": BOUNDARY_REUSED,
    "a broken encoded-word in the sender's name": BROKEN_NAME,
    "an attachment mail-parser names at random": multipart(
        TEXT, b"Content-Type: application/octet-stream\nContent-Disposition: attachment\n\nxx\n"
    ),
    "an rtf part mail-parser names at random": multipart(TEXT, b"Content-Type: text/rtf\n\n{\\rtf1 hi}\n"),
    "an attached multipart mail-parser flattens": multipart(
        b"Content-Type: multipart/alternative; boundary=c\nContent-Disposition: attachment\n\n--c\n\nx\n--c--\n"
    ),
    "an 8-bit filename": multipart(
        TEXT, b'Content-Type: application/pdf; name="Gr\xc3\xbc\xc3\x9fe.pdf"\n\nx\n'
    ),
}


@pytest.mark.parametrize("raw", ORDINARY.values(), ids=ORDINARY.keys())
def test_ordinary_mail_takes_the_fast_path_with_mail_parsers_result(raw: bytes) -> None:
    data, content = ordinary(raw)
    assert content is not None
    expected = _build(_read_with_mailparser(data), KEYS["fingerprint"], KEYS["archive_key"], LIMITS)
    assert _build(content, KEYS["fingerprint"], KEYS["archive_key"], LIMITS) == expected
    new, old = both_ways(raw)
    assert new == old
    assert new[1] is None


@pytest.mark.parametrize("raw", UNUSUAL.values(), ids=UNUSUAL.keys())
def test_mail_beyond_the_rules_is_left_to_mail_parser(raw: bytes) -> None:
    assert ordinary(raw)[1] is None
    new, old = both_ways(raw)
    assert new == old


def test_the_fast_path_reports_no_failure_and_mail_parser_crashes_still_are() -> None:
    # BROKEN_NAME: mail-parser still runs on it, crashes, and the plain reading stands in.
    parsed, failure = parse_with_fallback(BROKEN_NAME, **KEYS, limits=LIMITS)
    assert failure is not None
    assert (failure.parser, failure.error_class) == ("mail-parser", "HeaderParseError")
    assert parsed.subject == "Angebot für 40 Lizenzen"
    assert parse_with_fallback(ORDINARY["a base64 PDF"], **KEYS, limits=LIMITS)[1] is None


# -- properties ------------------------------------------------------------------------------------

_headers = st.sampled_from(
    [
        b"Content-Type: text/plain; charset=utf-8\n",
        b"Content-Type: text/html; charset=iso-8859-1\n",
        b"Content-Type: text/plain; charset=utf-16\nContent-Transfer-Encoding: base64\n",
        b"Content-Type: text/plain; charset=x-unknown\nContent-Transfer-Encoding: quoted-printable\n",
        b'Content-Type: text/plain\nContent-Disposition: inline; filename="=?utf-8?q?f=C3=BCr.txt?="\n',
        b"Content-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n",
        b"Content-Type: image/png\nContent-ID: <i1@x>\nContent-Transfer-Encoding: base64 \n",
        b"Content-Type: text/calendar\nContent-Disposition: attachment; filename=i.ics\n",
        b"Content-Type: message/rfc822\n",
        b"Content-Type: application/octet-stream\nContent-Disposition: attachment; filename==?utf-8?B?A?=\n",
    ]
)
_bodies = st.sampled_from(["Hallo", "Gr\u00fc\u00dfe", "\uf900 e\u0301", "  \n", "SGk=", "<p>x</p>"]).map(
    lambda text: text.encode("utf-8")
) | st.binary(max_size=40)


@st.composite
def mime_mail(draw: st.DrawFn) -> bytes:
    parts = draw(st.lists(st.tuples(_headers, _bodies), min_size=1, max_size=4))
    boundary = draw(st.sampled_from([b"b", b"c"]))  # a nested part may reuse its parent's boundary
    body = b"".join(b"--b\n" + head + b"\n" + text + b"\n" for head, text in parts)
    if draw(st.booleans()):
        body = (
            b"--b\nContent-Type: multipart/alternative; boundary="
            + boundary
            + b"\n\n"
            + body.replace(b"--b\n", b"--" + boundary + b"\n")
        )
    sender = draw(st.sampled_from([b"a@b.example", b"=?utf-8?q?J=C3=BCrgen?= <j@b.example>"]))
    return b"From: " + sender + b"\nContent-Type: multipart/mixed; boundary=b\n\n" + body + b"--b--\n"


@FUZZ
@given(mime_mail())
def test_parse_gives_on_mime_mail_what_mail_parser_first_gave(raw: bytes) -> None:
    new, old = both_ways(raw)
    assert new == old


@FUZZ
@given(hostile_mail)
def test_parse_gives_on_hostile_mail_what_mail_parser_first_gave(raw: bytes) -> None:
    new, old = both_ways(raw)
    assert new == old
