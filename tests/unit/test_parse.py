"""The parse stage under limits, and its killable worker."""

from __future__ import annotations

import pytest

from config.errors import ParseError
from config.settings import ParseLimits
from mailsync.mail.identity import identify
from mailsync.mail.parse import parse_message
from mailsync.mail.parse_worker import ParseWorker
from tests.conftest import DEMO

LIMITS = ParseLimits()


def parse(raw: bytes, limits: ParseLimits = LIMITS):
    return parse_message(raw, fingerprint=identify(raw).fingerprint, archive_key="k", limits=limits)


def demo_files():
    return sorted(p for p in (DEMO / "Maildir").rglob("*") if p.is_file() and p.parent.name == "cur")


def test_demo_mail_parses_into_records():
    parsed = [parse(p.read_bytes()) for p in demo_files() if not p.name.startswith("1774960000.M99")]
    assert len(parsed) >= 50
    for email in parsed:
        assert email.sender is not None
        assert email.sender.email == email.sender.email.lower()
        assert "@" in email.sender.email
        assert email.sent_at is not None
        assert email.sent_at.tzinfo is not None
        assert email.subject
        assert email.body_text
    replies = [e for e in parsed if e.in_reply_to]
    assert replies
    assert all(e.in_reply_to != e.message_id for e in replies)


def test_rfc2047_names_and_subjects_are_decoded():
    german = [
        e
        for e in (parse(p.read_bytes()) for p in demo_files() if "M99" not in p.name)
        if "Bergmann" in (e.sender.name if e.sender else "")
    ]
    assert german
    assert any("ü" in e.sender.name or "ü" in e.subject for e in german)
    assert not any("=?" in e.subject for e in german)


def test_html_only_mail_becomes_text():
    raw = (
        b"From: a@x.example\nTo: b@y.example\nSubject: s\nMessage-ID: <h@x>\n"
        b"Content-Type: text/html; charset=utf-8\n\n<html><body><p>We need a <b>quote</b> for 40 units.</p></body></html>\n"
    )
    assert "We need a **quote** for 40 units." in parse(raw).body_text


@pytest.mark.parametrize("section", ["<![A: ", "<![: ", "<![foo[x]]>"])
def test_html_with_a_marked_section_the_html_parser_rejects_still_becomes_text(section):
    # Python 3.11's html.parser raises AssertionError on these (found by the fuzz test); the mail is read.
    raw = (
        b"Message-ID: <m1@x.example>\nFrom: a@x.example\nContent-Type: text/html\n\n"
        + section.encode()
        + b"\n<html><body><p>Please send the quote.</p></body></html>"
    )
    parsed = parse_message(raw, fingerprint="f" * 64, archive_key="k" * 64, limits=ParseLimits())
    assert "Please send the quote." in parsed.body_text


def test_missing_message_id_gets_a_synthetic_one():
    raw = b"From: a@x.example\nSubject: s\n\nbody\n"
    assert parse(raw).message_id.endswith("@mailsync.invalid")


@pytest.mark.parametrize(
    ("raw", "limits", "reason"),
    [
        (b"", LIMITS, "empty message"),
        (b"   \r\n\r\n", LIMITS, "empty message"),
        (b"R0lGODlhAQABAIAAAP///wAAACw=\nAAAAAAEAAQAAAgJEAQA7\n", LIMITS, "no header block"),
        (b"Subject: x\n\n" + b"a" * 5000, ParseLimits(max_bytes=4096), "too large"),
        (
            b"".join(b"X-H%d: v\n" % i for i in range(50)) + b"\nbody",
            ParseLimits(max_header_lines=20),
            "too many header lines",
        ),
        (
            b"Subject: x\nX-Padding: " + b"p" * 5000 + b"\n\nbody",
            ParseLimits(max_header_bytes=4096),
            "header block too large",
        ),
    ],
)
def test_cheap_limits_quarantine_before_parsing(raw, limits, reason):
    with pytest.raises(ParseError, match=reason):
        parse(raw, limits)


def nested(depth: int) -> bytes:
    head = b"From: a@x.example\nSubject: deep\nMIME-Version: 1.0\n"
    body = b"text\n"
    for level in range(depth):
        body = b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n%s\n--b%d--\n' % (
            level,
            level,
            body,
            level,
        )
    return head + body


def test_mime_depth_and_part_limits():
    assert parse(nested(5)).subject == "deep"
    with pytest.raises(ParseError, match="MIME nesting deeper than 10"):
        parse(nested(12), ParseLimits(max_mime_depth=10))
    many = (
        b'From: a@x.example\nContent-Type: multipart/mixed; boundary="q"\n\n'
        + b"--q\n\npart\n" * 50
        + b"--q--\n"
    )
    with pytest.raises(ParseError, match="more than 20 MIME parts"):
        parse(many, ParseLimits(max_parts=20))


def test_worker_returns_records_and_errors():
    with ParseWorker(LIMITS) as worker:
        raw = (DEMO / "Maildir" / "cur").iterdir().__next__().read_bytes()
        good = worker.parse(raw, fingerprint="f", archive_key="k")
        assert good.fingerprint == "f"
        with pytest.raises(ParseError, match="empty message"):
            worker.parse(b"", fingerprint="f", archive_key="k")


def test_worker_timeout_kills_and_replaces_the_parser():
    big = b"From: a@x.example\nSubject: big\nContent-Type: text/plain\n\n" + b"line of text\n" * 2_000_000
    with ParseWorker(LIMITS, timeout=0.05) as worker:
        worker.parse(
            b"From: a@x.example\n\nwarm up\n", fingerprint="f", archive_key="k"
        )  # started: not timed
        with pytest.raises(ParseError, match="timed out"):
            worker.parse(big, fingerprint="f", archive_key="k")
        worker.timeout = 30
        assert (
            worker.parse(
                b"From: a@x.example\nSubject: after\n\nok\n", fingerprint="f", archive_key="k"
            ).subject
            == "after"
        )


def test_deep_recursion_in_the_worker_is_a_parse_error():
    limits = ParseLimits(max_mime_depth=100_000, max_bytes=100 * 1024 * 1024)
    with ParseWorker(limits) as worker, pytest.raises(ParseError):
        worker.parse(nested(3000), fingerprint="f", archive_key="k")


def test_blank_lines_before_the_headers_are_tolerated():
    raw = b"   \r\n\r\nFrom: a@x.example\r\nSubject: late start\r\n\r\nbody\r\n"
    assert parse(raw).subject == "late start"
