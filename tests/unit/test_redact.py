"""Redaction of a forgotten person from raw mail: every case and encoding, and a stub when it fails."""

from __future__ import annotations

import base64
import quopri
from email import message_from_bytes
from email.policy import default

from mailsync.mail.redact import Redaction, addresses_anywhere, people

ADDRESS = "rachel.kim@acme.example"
NAME = "Rachel Kim"


def redaction() -> Redaction:
    return Redaction({ADDRESS: "forgotten-abc@forgotten.invalid"}, {NAME})


def _mail(headers: str, body: bytes, encoding: str) -> bytes:
    head = (
        f"{headers}Subject: hello\r\nMessage-ID: <m1@x.example>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode() + body


def _clean(raw: bytes) -> bytes:
    r = redaction()
    assert r.mentions(raw)
    out = r.message(raw)
    assert not r.mentions(out)
    low = out.lower()
    assert ADDRESS.encode() not in low
    assert b"rachel kim" not in low
    return out


def test_plain_headers_and_body_any_case_and_plus_tag():
    raw = _mail(
        "From: Tom <tom@acme.example>\r\nTo: RACHEL KIM <Rachel.Kim+Deals@ACME.example>\r\n",
        b"Ask rachel.kim@acme.example or Rachel  Kim.\r\n",
        "7bit",
    )
    out = _clean(raw)
    assert b"forgotten-abc@forgotten.invalid" in out
    assert b"tom@acme.example" in out  # nobody else is touched


def test_encoded_words_base64_and_quoted_printable_bodies():
    name = "=?utf-8?b?" + base64.b64encode(NAME.encode()).decode() + "?="
    body = f"Contact {NAME} at {ADDRESS}, thanks. " * 3
    for encoding, data in (
        ("base64", base64.encodebytes(body.encode())),
        ("quoted-printable", quopri.encodestring(body.encode())),
    ):
        raw = _mail(f"From: {name} <{ADDRESS}>\r\nTo: dana@northwind.example\r\n", data, encoding)
        out = _clean(raw)
        parsed = message_from_bytes(out, policy=default)
        assert "thanks" in parsed.get_content()
        assert parsed["To"] == "dana@northwind.example"


def test_an_address_split_by_a_soft_line_break_is_found():
    raw = _mail(
        "From: tom@acme.example\r\n", b"x" * 60 + b" rachel.kim=\r\n@acme.example\r\n", "quoted-printable"
    )
    _clean(raw)


def test_a_multipart_with_an_attached_message():
    inner = _mail(f"From: {NAME} <{ADDRESS}>\r\n", b"inner text\r\n", "7bit")
    raw = (
        b"From: tom@acme.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b'--B\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<a href="mailto:rachel.kim@acme.example">x</a>\r\n'
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--B--\r\n"
    )
    _clean(raw)


def test_hostile_mail_loses_the_person_and_the_stub_keeps_what_identifies_it():
    r = redaction()
    garbage = b"From: " + ADDRESS.encode() + b"\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n\xff\xfe"
    assert ADDRESS.encode() not in r.message(garbage).lower()
    raw = _mail(f"From: {NAME} <{ADDRESS}>\r\nIn-Reply-To: <{ADDRESS}>\r\n", b"secret\r\n", "7bit")
    stub = r.stub(raw)
    assert not r.mentions(stub)
    assert b"Message-ID: <m1@x.example>" in stub
    assert b"secret" not in stub


def test_people_and_addresses():
    raw = _mail(f"From: {NAME} <{ADDRESS}>\r\nCc: a@b.example, Tom <TOM@acme.example>\r\n", b"x\r\n", "7bit")
    assert people(raw) == [(NAME, ADDRESS), ("", "a@b.example"), ("Tom", "tom@acme.example")]
    assert {ADDRESS, "a@b.example", "tom@acme.example", "m1@x.example"} <= addresses_anywhere(raw)


def test_values_and_text():
    r = redaction()
    value = {"key": f"new_contact:{ADDRESS}", "list": [f"Add {NAME} <{ADDRESS.upper()}>"], "n": 3}
    assert r.in_value(value)
    clean = r.value(value)
    assert not r.in_value(clean)
    assert clean["n"] == 3
    assert not r.in_value(("a", ["b"], {"c": 1}))


def test_a_one_word_name_is_redacted_where_it_names_someone_only():
    r = Redaction({ADDRESS: "forgotten-abc@forgotten.invalid"}, {"Sales"})
    raw = _mail(f"From: Sales <{ADDRESS}>\r\nTo: dana@northwind.example\r\n", b"Sales are up.\r\n", "7bit")
    out = r.message(raw)
    assert b"From: [forgotten] <forgotten-abc@forgotten.invalid>" in out
    assert b"Sales are up." in out  # the word in the text is not the person
    assert not r.mentions(out)
    assert not r.in_text("Sales are up")
