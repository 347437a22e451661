"""The manager digest: a lead sees each rep's pipeline, late entries, honest win ratio, stale proposals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from mailsync.approval.links import LinkSigner
from mailsync.approval.manager import leads, manager_report, render_manager_digest, with_links
from storage import models as m

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC).replace(tzinfo=None)  # naive UTC, as the database keeps time
LEAD = "lena@northwind.example"
pytestmark = pytest.mark.both_dbs


def suggestion(key, kind, owner, *, age_days, payload=None, summary=None):
    return m.Suggestion(
        key=key, kind=kind, status="open", summary=summary or key, payload=payload or {}, confidence=0.8,
        evidence=[], owner_rep=owner, created_at=NOW - timedelta(days=age_days),
    )  # fmt: skip


def seed(session):
    session.add_all([
        m.Rep(email="dana@northwind.example", name="Dana", lead=LEAD),
        m.Rep(email="sam@northwind.example", name="Sam", lead=LEAD, active=False),
        m.Rep(email="mia@northwind.example", name="Mia", lead="other@northwind.example"),
    ])  # fmt: skip
    account = m.Account(external_id="A1", name="Acme")
    session.add(account)
    session.flush()

    def deal(name, owner, *, outcome=None, stage="proposal", first_seen=None, created=None, amount=None):
        session.add(m.Opportunity(account_id=account.id, name=name, stage=stage, owner_rep=owner, outcome=outcome,
                                  first_seen_at=first_seen, created_at=created, amount=amount, currency="EUR"))  # fmt: skip

    dana = "dana@northwind.example"
    deal("Acme – rollout", dana, first_seen=NOW - timedelta(days=40), created=NOW - timedelta(days=10),
         amount=Decimal(41650))  # fmt: skip
    deal("Acme – pilot", dana, outcome="won", stage="closed_won", first_seen=NOW - timedelta(days=90),
         created=NOW - timedelta(days=20))  # fmt: skip
    deal("Acme – renewal", dana, outcome="won", stage="closed_won")
    deal("Acme – spares", dana, outcome="lost", stage="closed_lost")
    deal("Mia's deal", "mia@northwind.example")
    session.add_all([
        suggestion("new:1", "new_opportunity", dana, age_days=1, payload={"name": "Globex – <b>pumps</b>", "amount": "12500", "currency": "EUR"}),
        suggestion("lost:1", "stage_change", dana, age_days=2, payload={"to_stage": "closed_lost"}),
        suggestion("link:old", "link_thread", dana, age_days=9, summary="Link the Acme thread?"),
        suggestion("sam:1", "new_contact", "sam@northwind.example", age_days=3, summary="Add Jo (Initech)?"),
    ])  # fmt: skip


def test_a_lead_sees_pipeline_late_entries_honest_win_ratio_stale_and_departed(repo):
    with repo.session() as session:
        seed(session)
    with repo.session() as session:
        assert leads(session) == [LEAD, "other@northwind.example"]
        report = manager_report(session, LEAD, now=NOW, stale_after_days=7)
    dana, sam = report.reps
    assert [r.email for r in report.reps] == ["dana@northwind.example", "sam@northwind.example"]
    assert {(d.name, d.confirmed) for d in dana.deals} == {
        ("Acme – rollout", True),
        ("Globex – <b>pumps</b>", False),
    }
    assert dana.late_days == [30, 70]
    assert (dana.won, dana.lost, dana.detected_losses) == (2, 1, 1)
    assert dana.win_ratio == 2 / 3
    assert dana.honest_win_ratio == 2 / 4
    assert [s.key for s in dana.stale] == ["link:old"]
    assert [(rep, line.key) for rep, line in report.departed_proposals] == [
        ("sam@northwind.example", "sam:1")
    ]
    assert sam.stale == []  # a departed rep's proposals are the lead's, listed once

    html, text = render_manager_digest(report, now=NOW)
    assert "Globex – &lt;b&gt;pumps&lt;/b&gt;" in html  # CRM and mail text is escaped
    assert "<b>" not in html
    for expected in ("67%", "50%", "1 unconfirmed loss", "€41,650.00", "Link the Acme thread? (9 days)",
                     "sam@northwind.example: Add Jo (Initech)?"):  # fmt: skip
        assert expected in html
    assert "win ratio 67%, 50% with losses seen in mail; median 50 days" in text
    assert "Mia's deal" not in html + text  # another lead's team

    tags = set()

    class Tags(HTMLParser):
        def handle_starttag(self, tag, _attrs):
            tags.add(tag)

    Tags().feed(html)
    assert tags <= {
        "html",
        "head",
        "meta",
        "title",
        "body",
        "div",
        "h1",
        "h2",
        "p",
        "table",
        "tr",
        "th",
        "td",
        "span",
    }


def test_a_departed_reps_proposals_carry_links_signed_for_the_lead(repo):
    with repo.session() as session:
        seed(session)
    with repo.session() as session:
        report = manager_report(session, LEAD, now=NOW, stale_after_days=7)
    signer = LinkSigner("a-test-key", "https://crm.northwind.example", 14)
    linked = with_links(report, signer, token="t" * 32)
    [(_rep, line)] = linked.departed_proposals
    approve = signer.verify(line.approve_url.rsplit("/", 1)[1])
    assert (approve.action, approve.rep, approve.key, approve.digest_token) == (
        "approve",
        LEAD,
        "sam:1",
        "t" * 32,
    )
    assert signer.verify(line.reject_url.rsplit("/", 1)[1]).action == "reject"
    html, text = render_manager_digest(linked, now=NOW)
    assert html.count(line.approve_url.replace("&", "&amp;")) == 1
    assert f"approve: {line.approve_url}" in text
