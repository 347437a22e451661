"""Hostile mail through the real pipeline into the digest: nothing it says becomes markup or hides itself.

The mail is ours: a new contact at a customer (Acme) and a buyer at a new domain write subjects, display
names and bodies full of HTML injection, bidi overrides, zero-width and control characters. `mailsync
import` turns them into proposals whose summaries and evidence quote that text; `mailsync digest` renders
it. The HTML part may hold only the template's own tags and attributes; the text part is not escaped;
neither holds a control or invisible character. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mailsync.cli import main
from tests.conftest import DEMO, ROOT, write_config

pytestmark = pytest.mark.both_dbs

TEMPLATE = ROOT / "mailsync" / "approval" / "templates" / "digest.html.j2"
INJECTIONS = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">here</a>',
    '"><svg onload=alert(1)>',
)
HIDDEN = (
    "\u202e\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u200b\u200c\u200d\u2060\ufeff"
)
SUBJECT = (
    f"Order 40 FleetSense units {INJECTIONS[0]} \u202egnp.exe\u202c \u2066x\u2069 zero\u200bwidth\r\nBcc: eve"
)
NAME = f"{INJECTIONS[1]} Mallory \u202eyrallaM"
BODY = (
    "Hi Dana,\r\n\r\n"
    f"We want to order 40 more FleetSense units {INJECTIONS[0]} for $48,000 by March.\r\n"
    f"Please send the contract {INJECTIONS[1]} and the invoice {INJECTIONS[2]}.\r\n"
    f"Our budget {INJECTIONS[3]} is approved \u202eevil\u202c and {HIDDEN}the purchase\u200b order\ufeff is "
    "ready\x1b[31m\x07\x9b\x85.\r\n\r\nThanks,\r\nMallory\r\n"
)


def _encoded(text: str) -> str:
    """An RFC 2047 encoded word: how a header carries any character, CR and LF included."""
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def hostile_mail(number: int, sender: str, date: str) -> bytes:
    head = (
        f"Message-ID: <hostile-{number}@evil.example>\r\nDate: {date}\r\n"
        f"From: {_encoded(NAME)} <{sender}>\r\nTo: Dana Whitfield <dana@northwind.example>\r\n"
        f"Subject: {_encoded(SUBJECT)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode() + BODY.encode()


class Markup(HTMLParser):
    """Every tag with its attributes, and everything that is not a tag or text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[tuple[str, tuple[tuple[str, str | None], ...]]] = set()
        self.other: list[str] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add((tag, tuple(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.other.append(f"comment {data}")

    def handle_pi(self, data: str) -> None:
        self.other.append(f"processing instruction {data}")

    def unknown_decl(self, data: str) -> None:
        self.other.append(f"declaration {data}")


@pytest.fixture
def digest(tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str | None) -> tuple[str, str]:
    inbox = tmp_path / "hostile"
    inbox.mkdir()
    (inbox / "contact.eml").write_bytes(
        hostile_mail(1, "mallory@acme.example", "Mon, 02 Mar 2026 10:00:00 +0000")
    )
    (inbox / "buyer.eml").write_bytes(
        hostile_mail(2, "buyer@evilcorp.example", "Tue, 03 Mar 2026 10:00:00 +0000")
    )
    config = str(write_config(tmp_path, database_url=db_url))
    for argv in (
        ["db", "upgrade"],
        ["crm", "import", str(DEMO / "crm")],
        ["import", str(inbox), "--mailbox", "dana"],
        ["digest", "--preview", str(tmp_path / "digests")],
    ):
        assert main(["-c", config, *argv]) == 0, capsys.readouterr().err
    html = (tmp_path / "digests" / "digest-dana.html").read_text(encoding="utf-8")
    text = (tmp_path / "digests" / "digest-dana.txt").read_text(encoding="utf-8")
    return html, text


def test_hostile_mail_reaches_the_digest_as_text(digest: tuple[str, str]) -> None:
    html, text = digest
    # The proposals quote the hostile mail: a new contact, a linked thread and a new opportunity.
    for shown in ("Mallory", "Order 40 FleetSense units", "We want to order 40 more", "Our budget"):
        assert shown in html
        assert shown in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;a href=&#34;javascript:alert(1)&#34;&gt;" in html
    assert "&#34;&gt;&lt;svg onload=alert(1)&gt;" in html
    for injection in INJECTIONS:
        assert injection in text  # plain text is not escaped: "&lt;" would show as such
    assert "&lt;" not in text


def test_the_html_digest_holds_only_the_templates_own_markup(digest: tuple[str, str]) -> None:
    html, _ = digest
    ours = Markup(TEMPLATE.read_text(encoding="utf-8"))
    rendered = Markup(html)
    assert rendered.tags <= ours.tags  # same tags, same literal attribute values: no mail text in any
    assert not rendered.other
    assert "<script" not in html
    shown = "".join(rendered.text)
    for injection in INJECTIONS:
        assert injection in shown  # escaped in the source, so a mail client shows it as text


def test_no_control_or_invisible_character_survives(digest: tuple[str, str]) -> None:
    for part in digest:
        assert not set(part) & set(HIDDEN)
        assert not [c for c in part if unicodedata.category(c) in ("Cc", "Cf") and c != "\n"]
    _, text = digest
    # The CR LF in the subject did not start a line of its own.
    assert not [line for line in text.splitlines() if line.lstrip().startswith("Bcc:")]
    assert "Bcc: eve" in text
