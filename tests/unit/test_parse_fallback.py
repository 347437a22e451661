"""Real mail that must parse, not sit in quarantine: mbox envelope lines and mail-parser crashes.

Over IMAP, some mail arrives with the `From ` line of the mbox it was appended from; mail-parser 4.8.0
raises on some real mail, and then the standard library's parser reads it (mailsync/mail/parse.py).
Ordinary mail never reaches mail-parser (tests/unit/test_parse_fast_path.py); the mail here does.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from config.errors import ParseError
from config.settings import ParseLimits
from mailsync.mail.identity import identify
from mailsync.mail.parse import parse_with_fallback
from storage.records import Provenance, RawMessage
from tests.unit.test_parse import nested

LIMITS = ParseLimits()

ENVELOPE = b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\r\n"
RENEWAL = (
    b"From: Dana Reyes <dana@acme.example>\r\nTo: sam@northwind.example\r\nSubject: Renewal\r\n"
    b"Message-ID: <r1@acme.example>\r\nDate: Fri, 8 Jul 2011 12:08:34 +0000\r\n\r\nWe renew for 40 seats.\r\n"
)
# A nested multipart that reuses its parent's boundary: AttributeError in mailparser's find_between.
BOUNDARY_REUSED = (
    b"From: Dana Reyes <dana@acme.example>\nSubject: Renewal for 40 seats\n"
    b"Content-Type: multipart/mixed; boundary=b\n\n"
    b"--b\nContent-Type: multipart/alternative; boundary=b\n\n"
    b"--b\nContent-Type: text/plain; charset=iso-8859-1\n\nWe renew for 40 seats, Gr\xfc\xdfe.\n"
)
# A broken base64 encoded-word in the sender's display name: HeaderParseError in mailparser.
BROKEN_NAME = (
    b"From: =?utf-8?B?A?= <dana@acme.example>\nSubject: =?utf-8?q?Angebot_f=C3=BCr_40_Lizenzen?=\n\n"
    b"Hallo Sam,\nwir nehmen 40 Lizenzen.\n"
)


def parse(raw: bytes, limits: ParseLimits = LIMITS):
    return parse_with_fallback(raw, fingerprint="f" * 64, archive_key="k" * 64, limits=limits)


# -- the mbox envelope line ----------------------------------------------------------------------


def test_a_message_with_its_mbox_envelope_line_parses_like_the_one_without():
    parsed, failure = parse(ENVELOPE + RENEWAL)
    assert failure is None
    assert parsed == parse(RENEWAL)[0]
    assert parsed.sender is not None
    assert parsed.sender.email == "dana@acme.example"
    assert (parsed.subject, parsed.message_id, parsed.body_text) == (
        "Renewal",
        "r1@acme.example",
        "We renew for 40 seats.",
    )


def test_the_envelope_line_leaves_the_identity_alone():
    assert identify(ENVELOPE + RENEWAL) == identify(RENEWAL)
    no_id = RENEWAL.replace(b"Message-ID: <r1@acme.example>\r\n", b"")
    assert identify(ENVELOPE + no_id) == identify(no_id)


@pytest.mark.parametrize(
    ("path", "sender", "subject", "body_start"),
    [
        (
            "malformed/flanker/bounce/zed.eml",
            "mailer-daemon@example.com.com",
            "Undelivered Mail Returned to Sender",
            "This is the mail system at host mail.example.com.",
        ),
        (
            "malformed/notmuch/insert/mbox-attachment.eml",
            "david@tethera.net",
            "Re: [RFC PATCH v2 12/12] emacs: whitespace cleanup for keybindings",
            "I figured out the race condition in the tests.",
        ),
    ],
)
def test_real_mail_from_an_mbox_file_parses_with_its_headers(
    corpora, parse_worker, path, sender, subject, body_start
):
    raw = (corpora / path).read_bytes()
    assert raw.startswith(b"From ")
    parsed = parse_worker.parse(raw, fingerprint=identify(raw).fingerprint, archive_key="k")
    assert parsed.sender is not None
    assert parsed.sender.email == sender
    assert parsed.subject == subject
    assert parsed.body_text.startswith(body_start)
    assert parsed.sent_at is not None


# -- the standard library's parser when mail-parser fails -----------------------------------------


@pytest.mark.parametrize(
    ("name", "body"),
    [("001.eml", "--a"), ("003.eml", "body"), ("013.eml", "\n".join(["hello, world"] * 4))],
)
def test_corpus_mail_mail_parser_crashes_on_is_read_by_the_stdlib_parser(corpora, name, body):
    # Dovecot's test cases: nested multiparts reusing a boundary, with neither From nor Subject.
    parsed, failure = parse((corpora / "malformed/stalwart-mail-parser/malformed" / name).read_bytes())
    assert failure is not None
    assert (failure.parser, failure.error_class) == ("mail-parser", "AttributeError")
    assert (parsed.sender, parsed.subject, parsed.body_text) == (None, "", body)
    assert parsed.content_type == "multipart/mixed"


def test_a_reused_boundary_parses_with_sender_subject_and_the_declared_charset():
    parsed, failure = parse(BOUNDARY_REUSED)
    assert failure is not None
    assert failure.error_class == "AttributeError"
    assert parsed.sender is not None
    assert (parsed.sender.name, parsed.sender.email) == ("Dana Reyes", "dana@acme.example")
    assert parsed.subject == "Renewal for 40 seats"
    assert parsed.body_text == "We renew for 40 seats, Grüße."


def test_a_broken_encoded_word_in_the_display_name_keeps_the_sender():
    parsed, failure = parse(BROKEN_NAME)
    assert failure is not None
    assert failure.error_class == "HeaderParseError"
    assert parsed.sender is not None
    assert parsed.sender.email == "dana@acme.example"
    assert parsed.subject == "Angebot für 40 Lizenzen"
    assert parsed.body_text == "Hallo Sam,\nwir nehmen 40 Lizenzen."


def test_the_fallback_reads_html_unknown_charsets_and_attachments():
    raw = BOUNDARY_REUSED.replace(
        b"--b\nContent-Type: text/plain; charset=iso-8859-1\n\nWe renew for 40 seats, Gr\xfc\xdfe.\n",
        b"--b\nContent-Type: text/html; charset=x-unknown\n\n<p>We renew for <b>40</b> seats \xe2\x80\x93 ok?</p>\n"
        b"--b\nContent-Type: application/pdf; name=quote.pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0=\n",
    )
    parsed, failure = parse(raw)
    assert failure is not None
    assert parsed.body_text == "We renew for **40** seats \u2013 ok?"  # unknown charset: read as UTF-8
    assert [(a.filename, a.content_type, a.size) for a in parsed.attachments] == [
        ("quote.pdf", "application/pdf", 5)
    ]


def test_the_limits_hold_for_the_fallback_too():
    more_parts = BOUNDARY_REUSED + b"--b\n\ntwo\n--b\n\nthree\n"
    assert parse(more_parts)[0].body_text.endswith("two\nthree")
    with pytest.raises(ParseError, match="more than 3 MIME parts"):
        parse(more_parts, ParseLimits(max_parts=3))


@pytest.mark.usefixtures("debug_logging")
def test_the_worker_logs_that_the_fallback_parsed(parse_worker):
    with capture_logs() as logs:
        parsed = parse_worker.parse(BROKEN_NAME, fingerprint="f", archive_key="k")
    assert parsed.subject == "Angebot für 40 Lizenzen"
    events = [e for e in logs if e["event"] == "parsed_with_fallback"]
    assert [(e["failed_parser"], e["parser_error"]) for e in events] == [("mail-parser", "HeaderParseError")]
    assert events[0]["detail"] == "Base64 decoding error"


def test_mail_both_parsers_fail_on_is_quarantined_with_both_reasons(pipeline):
    # Nested deeper than either parser recurses (the depth limit is checked on the parsed tree).
    raw = RawMessage(data=nested(3000), provenance=Provenance(mailbox="dana", path="deep.eml"))
    result = pipeline.ingest(raw, "dana@northwind.example")
    assert result.outcome == "quarantined"
    assert result.reason is not None
    # In the order they were tried: the standard library's parser first, as for all mail.
    assert result.reason.startswith(
        "stdlib email parser failed: RecursionError: maximum recursion depth exceeded"
    )
    assert "; mail-parser failed: MailParserRecursionError: " in result.reason


# -- the whole corpus ------------------------------------------------------------------------------

# Files of ../shared/corpora that are rightly quarantined, by the start of their reason.
NOT_MAIL = {
    "malformed/cpython-test_email/msg_19.txt": "no header block",  # a digest's body, without headers
    "malformed/flanker/big.eml": "empty message",  # its blob was missing upstream (SOURCES.md)
    "malformed/flanker/enclosed-endless.eml": "more than 1000 MIME parts",
    "malformed/spamscope-mail-parser/mail_outlook_1": "no header block",  # an Outlook .msg, not RFC 822
}
METADATA = {"README", "README.md", "SOURCES.md", "COPYING"}


def test_every_corpus_file_parses_but_what_is_not_mail(corpora, parse_worker):
    """Each file as one message, as IMAP serves it (before: 627 of 660 parsed; 33 quarantined)."""
    files = sorted(p for p in corpora.rglob("*") if p.is_file() and p.name not in METADATA)
    quarantined = {}
    for path in files:
        raw = path.read_bytes()
        try:
            parse_worker.parse(raw, fingerprint=identify(raw).fingerprint, archive_key="k")
        except ParseError as exc:
            quarantined[path.relative_to(corpora).as_posix()] = str(exc)
    assert len(files) > 600
    assert sorted(quarantined) == sorted(NOT_MAIL), quarantined
    assert all(quarantined[path].startswith(reason) for path, reason in NOT_MAIL.items()), quarantined
