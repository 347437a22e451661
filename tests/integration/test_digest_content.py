"""The digest of the real demo, and of a mailbox too big to show: what it asks, in whose words, how bounded.

The demo is imported as `make demo` does it; every open proposal must be in its rep's digest, as a
question with its evidence (sender and date), and never as something already done. Then the bounds:
3,000 ordinary proposals make a digest that is ranked, cut at max_items, summarised with a link to the
full list and under 100 KB as a sent message; one mail copied to 5,000 people proposes ten contacts
and the digest says why not the rest.
"""

from __future__ import annotations

import html as html_lib
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from mailsync.approval.digest import BUDGET, build_digest
from storage import models as m
from storage.mailstore import open_suggestions
from storage.overview import RepLine
from tests.conftest import shared_pg_url
from tests.support.demo import import_demo

NOW = datetime(2026, 6, 1, 7, 30, tzinfo=ZoneInfo("America/New_York"))
DANA = RepLine("dana@northwind.example", "Dana Whitfield")
TOKEN = "0f" * 16
COMMAND_WORD = re.compile(
    r"^\W*(?:approve|accept|ok|okay|yes|reject|decline|no|edit|change)\b", re.IGNORECASE
)


class Links:
    """A LinkMaker with long URLs like real signed ones (~350 characters), recording what it made."""

    def __init__(self) -> None:
        self.made: list[tuple[str, str, str | None, str | None]] = []

    def url(self, action, rep, key=None, digest_token=None):
        self.made.append((action, rep, key, digest_token))
        return f"https://crm-digest.northwind.example/a/{action}/{len(self.made)}." + "Sig_-" * 60


class PageText(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        del attrs
        if tag in {"br", "p", "div", "blockquote", "h1", "h2"}:
            self.parts.append(" ")  # a line or block of its own, as a browser shows it

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join("".join(self.parts).split())


@pytest.fixture(scope="module")
def demo(tmp_path_factory, db_backend, request):
    """The demo imported once per backend; the tests only read it."""
    with pytest.MonkeyPatch.context() as patch:
        if db_backend == "postgresql":
            patch.setenv("MAILSYNC_DATABASE_URL", shared_pg_url(request))
        repo = import_demo(tmp_path_factory.mktemp(f"demo-{db_backend}"))
    yield repo
    repo.dispose()


def digest_of(repo, rep=DANA, **options):
    settings = {"now": NOW, "links": None, "token": None, "locale": "en_US", "max_items": 25} | options
    with repo.session() as session:
        return build_digest(session, rep, **settings)


@pytest.mark.both_dbs
def test_every_open_proposal_of_the_demo_is_in_its_reps_digest(demo):
    with demo.session() as session:
        reps = [RepLine(r.email, r.name) for r in session.scalars(select(m.Rep))]
        wanted = {rep.email: [s.key for s in open_suggestions(session, rep.email)] for rep in reps}
    assert sum(map(len, wanted.values())) == 15  # the demo's open proposals, for Dana and Sam
    for rep in reps:
        digest = digest_of(demo, rep)
        assert sorted(entry.key for entry in digest.items) == sorted(wanted[rep.email])
        assert [entry.n for entry in digest.items] == list(range(1, len(wanted[rep.email]) + 1))
        shown = PageText(digest.html).text
        for entry in digest.items:
            assert f"\n{entry.n}. " in digest.text  # a numbered item in the plain text
            assert f"approve {entry.n}" in shown
        assert "Linked" not in digest.text + shown
        assert digest.subject.startswith("CRM digest")
        # A reply that carries the digest unquoted must not hold a command the digest wrote.
        assert not [line for line in digest.text.splitlines() if COMMAND_WORD.match(line)]


@pytest.mark.both_dbs
def test_the_demo_digest_asks_in_words_with_evidence_dated_and_signed(demo):
    digest = digest_of(demo)
    shown = PageText(digest.html).text
    for ask in (
        (
            "Create the opportunity Granite Peak Builders – FleetSense info for Granite Peak for $41,650.00, "
            "starting Jan 22, 2026?"
        ),
        "Mark Acme Logistics - FleetSense rollout (40 vans) as won?",
        "Mark Harbor Cold Chain - reefer monitoring (60 units) as lost?",
        "Link this conversation to Summit Agri - RouteIQ harvest pilot?",
        "Add Nadia Petrova (Acme Logistics) as a contact?",
    ):
        assert ask in digest.text
        assert ask in shown
    assert digest.text.startswith("CRM digest for Mon, Jun 1 - Dana Whitfield\n\n12 proposals to review: 3 new "
                                  "opportunities, 3 stage changes, 5 conversations to link and 1 new contact.\n")  # fmt: skip
    assert "\n1. Create the opportunity Granite Peak Builders" in digest.text
    assert (
        '> "Could you send me a brochure and some rough pricing?" (Jake Moreno, Jan 22, 2026)' in digest.text
    )
    assert "“Could you send me a brochure and some rough pricing?” Jake Moreno, Jan 22, 2026" in shown
    assert "Confidence: very likely" in digest.text
    # Luis Ortega's question, quoted twice in his mail, is one piece of evidence.
    assert digest.text.count("How much would it be for 3 of the FleetSense units?") == 1
    assert digest.subject == "CRM digest for Mon, Jun 1: 12 proposals to review"


@pytest.mark.both_dbs
def test_the_demo_digest_in_german_money_and_dates(demo):
    digest = digest_of(demo, locale="de_DE")
    assert "for 12.500,00\xa0€, starting 26.05.2026?" in digest.text  # the words stay English
    assert "41.650,00\xa0$" in digest.text
    assert "(Jake Moreno, 22.01.2026)" in digest.text


@pytest.mark.both_dbs
def test_with_links_every_card_has_its_buttons_for_its_own_key_and_digest(demo):
    links = Links()
    digest = digest_of(demo, links=links, token=TOKEN)
    keys = {entry.key for entry in digest.items}
    for action in ("approve", "reject", "edit"):
        assert {key for a, _, key, _ in links.made if a == action} == keys
    assert {(rep, token) for _, rep, _, token in links.made} == {(DANA.email, TOKEN)}
    assert {a for a, *_ in links.made} == {
        "approve",
        "reject",
        "edit",
        "approve_all",
        "unsubscribe",
    }  # no list: nothing cut
    assert digest.html.count(">Approve</a>") == len(keys)
    assert "Approve all 12 above" in digest.html
    assert "Pause these digests" in digest.html


def ordinary(n: int) -> m.Suggestion:
    """One of 3,000 ordinary proposals: contacts, links and small deals, each with three long quotes."""
    kind = ("new_contact", "new_contact", "link_thread", "new_opportunity")[n % 4]
    payload = {
        "new_contact": {"email": f"person{n}@customer{n % 97}.example", "name": f"Person {n}", "account": f"Customer {n % 97}"},
        "link_thread": {"opportunity_id": 1, "opportunity": f"Deal {n % 50}", "because": "words, recency",
                        "candidates": f"Deal {n % 50} (0.40); Deal {n % 49} (0.35)"},
        "new_opportunity": {"name": f"Customer {n} – order", "amount": f"{n * 10}.00", "currency": "USD", "first_seen_at": "2026-03-02"},
    }[kind]  # fmt: skip
    quote = (
        f"Message {n}: we would like to talk about fleet tracking for our vans and trucks next quarter. " * 3
    )
    evidence = [
        {"fingerprint": f"f{n}-{i}", "sent_at": "2026-03-02T10:00:00", "quote": f"{i} {quote}"}
        for i in range(3)
    ]
    return m.Suggestion(key=f"{kind}:{n}", kind=kind, summary="", payload=payload, confidence=0.5 + (n % 5) / 10,
                        evidence=evidence, owner_rep=DANA.email)  # fmt: skip


def as_sent(digest) -> bytes:
    """The digest as a sender composes it (multipart/alternative, stdlib defaults): its size on the wire."""
    message = EmailMessage()
    message["Subject"] = digest.subject
    message.set_content(digest.text)
    message.add_alternative(digest.html, subtype="html")
    return message.as_bytes()


def test_three_thousand_proposals_make_a_ranked_digest_under_100_kb(repo):
    with repo.session() as session:
        session.add_all(ordinary(n) for n in range(3000))
        session.commit()
    links = Links()
    digest = digest_of(repo, links=links, token=TOKEN)
    assert len(digest.html.encode()) + len(digest.text.encode()) <= BUDGET
    assert len(as_sent(digest)) < 100_000
    assert 10 <= len(digest.items) <= 25
    # The most valuable first: the 750 new opportunities, the largest amounts on top.
    assert [e.key for e in digest.items[:3]] == [
        "new_opportunity:2999",
        "new_opportunity:2995",
        "new_opportunity:2991",
    ]
    rest = 3000 - len(digest.items)
    assert f"{rest:,} more: " in digest.text
    assert (
        "3,000 proposals to review: 750 new opportunities, 750 conversations to link and 1,500 new contacts."
        in digest.text
    )
    assert ("list", DANA.email, None, None) in links.made
    assert "See the full list" in digest.html
    without_links = digest_of(repo)
    assert "The full list: mailsync proposals --rep dana@northwind.example" in without_links.text
    assert len(as_sent(without_links)) < 100_000


def copied_to_thousands(directory) -> None:
    """A customer's mail to Dana with 5,000 of the customer's people in Cc, a few addresses per line."""
    people = [f"Person {i:04} <person{i:04}@acme.example>" for i in range(5000)]
    cc = ",\r\n ".join(", ".join(people[i : i + 3]) for i in range(0, 5000, 3))
    mail = (
        "Message-ID: <mailing-1@acme.example>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        "From: Rachel Kim <rachel.kim@acme.example>\r\nTo: Dana Whitfield <dana@northwind.example>\r\n"
        f"Cc: {cc}\r\nSubject: Spring all-hands\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nHello everyone, see you at the spring all-hands.\r\n"
    )
    directory.mkdir()
    (directory / "mailing.eml").write_bytes(mail.encode())


def test_one_mail_to_five_thousand_people_proposes_ten_contacts_and_the_digest_says_so(tmp_path):
    copied_to_thousands(tmp_path / "mailing")
    repo = import_demo(tmp_path / "db", tmp_path / "mailing")
    with repo.session() as session:
        contacts = session.scalars(select(m.Suggestion).where(m.Suggestion.kind == "new_contact")).all()
    from_mailing = [s for s in contacts if s.payload.get("not_proposed")]
    assert len(from_mailing) == 10
    assert {s.payload["not_proposed"] for s in from_mailing} == {4990}
    digest = digest_of(repo)
    assert "4,990 more people copied on 1 large message are not proposed as contacts" in digest.text
    assert "4,990 more people copied on 1 large message" in PageText(digest.html).text
    assert len(as_sent(digest)) < 100_000


@pytest.mark.both_dbs
def test_a_digest_with_nothing_open_says_so(repo):
    digest = digest_of(repo, now=datetime(2026, 6, 1, tzinfo=UTC))
    assert digest.items == ()
    assert "Nothing to review" in digest.text
    assert "Nothing to review" in html_lib.unescape(digest.html)
    assert digest.subject == "CRM digest for Mon, Jun 1: 0 proposals to review"
