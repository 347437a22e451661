"""Message identity: the same email as different bytes is one message; different emails never are."""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import compat32

from hypothesis import given
from hypothesis import strategies as st

from mailsync.mail.identity import (
    _normalise_lines,
    _plain_headers,
    identify,
    identify_stream,
    normalise_message_id,
    split_message,
)

MAIL = (
    b"Received: from mx1.example by mx2.example; Mon, 2 Mar 2026 10:00:01 +0000\n"
    b"From: Rachel <rachel@acme.example>\nTo: dana@northwind.example\n"
    b"Subject: pricing\nDate: Mon, 2 Mar 2026 10:00:00 +0000\nMessage-ID: <abc@acme.example>\n\n"
    b"Hello Dana,\nFrom now on we talk prices.\n"
)


def test_crlf_nul_and_transit_headers_do_not_change_identity():
    base = identify(MAIL).fingerprint
    crlf = MAIL.replace(b"\n", b"\r\n")
    with_nul = MAIL.replace(b"Hello", b"Hel\x00lo")
    other_copy = b"Delivered-To: sam@northwind.example\n" + MAIL.replace(b"mx1", b"mx9")
    assert identify(crlf).fingerprint == base
    assert identify(with_nul).fingerprint == base
    assert identify(other_copy).fingerprint == base


def test_mbox_from_quoting_is_undone():
    quoted = MAIL.replace(b"\nFrom now on", b"\n>From now on")
    assert identify(quoted).fingerprint == identify(MAIL).fingerprint


def test_different_body_or_message_id_is_a_different_message():
    assert identify(MAIL.replace(b"prices", b"terms")).fingerprint != identify(MAIL).fingerprint
    assert identify(MAIL.replace(b"<abc@", b"<abd@")).fingerprint != identify(MAIL).fingerprint


def test_without_message_id_identity_is_the_content_minus_transit_headers():
    bare = MAIL.replace(b"Message-ID: <abc@acme.example>\n", b"")
    copy = b"Received: from elsewhere\n" + bare
    assert identify(bare).message_id is None
    assert identify(copy).fingerprint == identify(bare).fingerprint
    assert identify(bare.replace(b"pricing", b"terms")).fingerprint != identify(bare).fingerprint


def test_files_that_are_not_mail_do_not_collide():
    assert identify(b"garbage one").fingerprint != identify(b"garbage two").fingerprint
    assert identify(b"").fingerprint != identify(b"x").fingerprint


def test_message_id_normalisation():
    assert normalise_message_id("  <a.b@c>  ") == "a.b@c"
    assert normalise_message_id("junk <x@y> <z@w>") == "x@y"
    assert normalise_message_id("bare@id") == "bare@id"
    assert normalise_message_id("two words") is None
    assert normalise_message_id(None) is None


def _in_pieces(data: bytes, size: int):
    return lambda: iter([data[i : i + size] for i in range(0, len(data), size)] or [b""])


def test_identity_read_in_pieces_is_the_identity_of_the_whole(corpora):
    """Huge mail is identified from a spool file in pieces: any chunking must give the same fingerprint."""
    samples = sorted(p for p in corpora.rglob("*") if p.is_file())[::7]
    edge_cases = [
        b"",
        b"\n\n",
        b"From: a\r\n\r",
        b"From: a\r\n\r\nbody \r\n\r\n  ",
        b"no headers at all\n\n>From x",
    ]
    for data in [p.read_bytes() for p in samples] + edge_cases + [MAIL, MAIL.replace(b"\n", b"\r\n")]:
        whole = identify(data)
        for size in (1, 2, 3, 5, 4096):
            assert identify_stream(_in_pieces(data, size)) == whole, (size, data[:80])


def _parser_fields(head: bytes) -> dict[str, str]:
    headers = BytesHeaderParser(policy=compat32).parsebytes(head)
    return {k: str(headers[k]) for k in ("message-id", "date", "from") if headers[k] is not None}


def _head(data: bytes) -> bytes:
    return split_message(data)[0].replace(b"\x00", b"")


def test_plain_header_read_is_the_parsers_on_the_corpora(corpora):
    """The fast header read serves most mail; where it answers, it answers as the parser does."""
    answered = 0
    for path in sorted(p for p in corpora.rglob("*") if p.is_file()):
        head = _head(path.read_bytes())
        fast = _plain_headers(head)
        if fast is not None:
            answered += 1
            assert fast == _parser_fields(head), path.name
    assert answered > 100


_HEADER_TEXT = st.text(alphabet=st.sampled_from(list("ab:<>@ \t\r\n-From\x00\x1c\x85é")), max_size=120)


@given(
    st.lists(
        st.tuples(st.sampled_from(["Message-ID", "message-id", "Date", "From", "X-A", ""]), _HEADER_TEXT)
    )
)
def test_plain_header_read_is_the_parsers_on_hostile_headers(pairs):
    head = "".join(f"{name}:{value}\r\n" for name, value in pairs).encode("utf-8", "surrogateescape")
    head = _head(head)
    fast = _plain_headers(head)
    if fast is not None:
        assert fast == _parser_fields(head)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b">", b"From ", b"\x00", b"a"])).map(b"".join))
def test_line_normalisation_is_the_plain_regexes(lines):
    """The cheap searches in front of each step change nothing: the same as the regexes alone."""
    lines = lines if not lines or lines.startswith(b"\n") else b"\n" + lines
    reference = re.sub(rb"\r+\n", b"\n", lines.replace(b"\x00", b""))
    reference = re.sub(rb"^>+(>*From )", rb"\1", reference, flags=re.MULTILINE)
    assert _normalise_lines(lines) == reference
