"""The digest in a real browser engine: headless Chromium at 375 px (a phone) and at 1280 px (a desktop).

The digest of the imported demo, plus a proposal with an address and a quote no line can break, goes
through `build_digest` with links (long, like signed ones). In Chromium, driven over the DevTools
protocol (tests/support/chromium.py; the viewport set as DevTools' device mode does), at both widths:
the screenshot is not blank, nothing scrolls sideways, no card's content overflows the card, every
button is at least 44 px high, and every proposal's question is in the page's text.

Chromium comes from scripts/install-system-deps.sh. Without it the test is skipped with the reason
printed, except under CI=true, where it fails. With MAILSYNC_DIGEST_SCREENSHOTS=DIR the two
screenshots are kept as DIR/digest-375.png and DIR/digest-1280.png. The demo is imported into SQLite
and into PostgreSQL, and the digest built from each.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailsync.approval.digest import build_digest
from storage import models as m
from storage.overview import RepLine
from tests.conftest import shared_pg_url
from tests.support.chromium import Browser, chromium_binary, decode_png
from tests.support.database import use_database
from tests.support.demo import import_demo

DANA = RepLine("dana@northwind.example", "Dana Whitfield")
LONG_ADDRESS = (
    "procurement.department.for.all.northern.european.subsidiaries." * 2
    + "x@"
    + "osprey-linen-" * 8
    + "group.example"
)
UNBROKEN = "https://portal.osprey-linen.example/quotes/" + "Q" * 160
WIDTHS = (375, 1280)

pytestmark = pytest.mark.both_dbs


class Links:
    def url(self, action, rep, key=None, digest_token=None):
        del rep, key, digest_token  # one long link shape for all: the layout is under test
        return f"https://crm-digest.northwind.example/a/{action}/" + "eyJhY3Rpb24iOiJhcHByb3ZlIn0." * 10


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if chromium_binary() is None:
        reason = "chromium is not installed: run scripts/install-system-deps.sh as root to render the digest"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    with Browser(tmp_path_factory.mktemp("chromium-profile")) as found:
        yield found


@pytest.fixture(scope="module")
def digest_page(tmp_path_factory, db_backend, request):
    """The demo's digest for Dana, with one proposal whose address and quote cannot wrap at a space."""
    with pytest.MonkeyPatch.context() as patch:  # module scope: the monkeypatch fixture is per test
        use_database(patch, shared_pg_url(request) if db_backend == "postgresql" else None)
        repo = import_demo(tmp_path_factory.mktemp(f"demo-{db_backend}"))
    with repo.session() as session:
        session.add(
            m.Suggestion(
                key=f"new_contact:{LONG_ADDRESS}", kind="new_contact", summary="", confidence=0.9,
                payload={"email": LONG_ADDRESS, "name": "", "account": "Osprey Linen " + "Z" * 90},
                evidence=[{"fingerprint": "none", "sent_at": "2026-05-02T09:00:00", "quote": f"Our portal: {UNBROKEN}"}],
                owner_rep=DANA.email,
            )
        )  # fmt: skip
        session.commit()
        digest = build_digest(
            session, DANA, now=datetime(2026, 6, 1, 7, 30, tzinfo=ZoneInfo("America/New_York")), links=Links(),
            token="ab" * 16, locale="en_US", max_items=25,
        )  # fmt: skip
    repo.dispose()
    page = tmp_path_factory.mktemp("digest") / "digest.html"
    page.write_text(digest.html, encoding="utf-8")
    asks = dict(
        re.findall(r"^(\d+)\. (.+)$", digest.text, re.MULTILINE)
    )  # number -> the question, from the text part
    assert sorted(map(int, asks)) == [entry.n for entry in digest.items] == list(range(1, 14))
    return page, list(asks.values())


OVERFLOWING = """[...document.querySelectorAll('body, body *')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).display !== 'inline')
    .map(e => e.tagName + ' ' + e.scrollWidth + '>' + e.clientWidth + ' ' + e.textContent.slice(0, 60))"""
BUTTONS = """[...document.querySelectorAll('a')].filter(a => getComputedStyle(a).display === 'inline-block')
    .map(a => [a.textContent, a.getBoundingClientRect().height])"""


@pytest.mark.parametrize("width", WIDTHS)
def test_the_digest_renders_readable_at_phone_and_desktop_width(browser, digest_page, width):
    page_file, asks = digest_page
    page = browser.open(page_file.as_uri(), width=width, height=2000)
    assert page.evaluate("window.innerWidth") == width
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing scrolls sideways
    assert page.evaluate(OVERFLOWING) == []  # long addresses and links wrap inside their card
    buttons = page.evaluate(BUTTONS)
    assert {text for text, _ in buttons} >= {"Approve", "Reject", "Edit", "Approve all 13 above"}
    assert [(text, height) for text, height in buttons if height < 44] == []
    shown = " ".join(page.evaluate("document.body.innerText").split())
    for ask in asks:
        assert " ".join(ask.split()) in shown
    assert LONG_ADDRESS in shown
    png = page.screenshot()
    keep = os.environ.get("MAILSYNC_DIGEST_SCREENSHOTS")
    if keep:
        (Path(keep) / f"digest-{width}.png").write_bytes(png)
    assert_not_blank(png, width)


def assert_not_blank(png: bytes, width: int) -> None:
    shot_width, height, rows = decode_png(png)
    assert (shot_width, height) == (width, 2000)
    step = len(rows[0]) // shot_width
    pixels = Counter(row[i : i + step] for row in rows for i in range(0, len(row), step))
    background, most = pixels.most_common(1)[0]
    assert len(pixels) >= 50, f"{len(pixels)} colours: no text was drawn"
    assert most < 0.9 * shot_width * height, f"{most} pixels of {background.hex()}: a blank page"
