"""Safe display text, and the digest's two parts built from it: HTML escaped, plain text not."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

import pytest

from mailsync.approval.digest import render_digest
from mailsync.mail.display import safe_line, safe_text
from storage import models as m

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
CONTROLS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)]))


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain words stay", "plain words stay"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        (f"a{BIDI}b", "ab"),
        (f"pay{ZERO_WIDTH}pal", "paypal"),
        ("red\x1b[31m alert\x07\x9b", "red[31m alert"),
        ("tab\tkept", "tab\tkept"),
        ("one\r\ntwo\rthree\u2028four\x85five", "one\ntwo\nthree\nfour\nfive"),
        ("lone \udcff surrogate", "lone \ufffd surrogate"),
        ("Grüße, 北京, emoji \U0001f600, nbsp\xa0kept", "Grüße, 北京, emoji \U0001f600, nbsp\xa0kept"),
    ],
)
def test_safe_text_drops_what_hides_and_keeps_what_shows(raw, shown):
    assert safe_text(raw) == shown


def test_safe_text_leaves_no_control_or_format_character_but_newline_and_tab():
    every = CONTROLS + BIDI + ZERO_WIDTH + "\u00ad\U000e0041"  # soft hyphen, a tag character
    assert safe_line(f"x{every}y") == "x y"
    for char in safe_text(every):
        assert char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf")


def test_safe_line_puts_everything_on_one_line():
    assert safe_line("  Re: deal\r\n\r\nBcc: eve\t\u2029 end  ") == "Re: deal Bcc: eve end"
    assert safe_line("\u202e\u200b\r\n") == ""


def suggestion(name: str, quote: str) -> m.Suggestion:
    return m.Suggestion(
        id=7,
        key="new_contact:eve@acme.example",
        kind="new_contact",
        summary=f"Add {name}",
        payload={"account": "Acme <b>Logistics</b>", "email": "eve@acme.example", "name": name},
        confidence=0.9,
        evidence=[{"sent_at": "2026-03-02T10:00:00\u202e", "quote": quote}],
    )


def test_the_html_part_is_escaped_and_the_text_part_is_not():
    hostile = '<script>alert(1)</script> <a href="javascript:alert(1)">x</a>'
    digest = render_digest(
        "dana@northwind.example",
        "Dana <i>W</i>\u202e",
        [suggestion(f"{hostile}\r\n#8 fake", f"quote {hostile}\u2066")],
        datetime(2026, 3, 3, tzinfo=UTC),
    )
    assert "<script" not in digest.html
    assert "<a " not in digest.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &lt;a href=&#34;javascript:alert(1)&#34;&gt;" in digest.html
    assert "Dana &lt;i&gt;W&lt;/i&gt;" in digest.html
    assert "Acme &lt;b&gt;Logistics&lt;/b&gt;" in digest.html
    # The digest asks what the proposal means; the CR LF in the name did not start a line ("#8 fake").
    assert f"1. Add {hostile} #8 fake (Acme <b>Logistics</b>) as a contact?" in digest.text
    assert f'> "quote {hostile}" (Mar 2, 2026)' in digest.text
    assert "&lt;" not in digest.text
    assert "\u202e" not in digest.html + digest.text
    assert "\u2066" not in digest.html + digest.text
