"""Approval by digest link through the real web app (Flask on waitress, loopback HTTP, real database).

GET shows and changes nothing; the POST from the page applies once; every refusal is a clear 4xx page
and a `link_refused` warning that never carries the token.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select
from structlog.testing import capture_logs

from config.errors import ConfigError
from config.settings import load_settings
from mailsync.approval.decisions import DecisionRequest, decide
from mailsync.approval.links import LINK_SALT, LinkSigner
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.health import HealthReport
from mailsync.service.link_pages import LinkPages
from mailsync.service.metrics import Metrics
from mailsync.service.web import DEFAULT_HOST, WebServer, make_app
from storage import models as m
from storage.archive import Archive
from storage.eventlog import EventLog
from storage.repo import Repo
from tests.conftest import write_config

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask import Response

SECRET = "web-test-link-key-0123456789abcdef"
DANA, SAM, LEE = "dana@northwind.example", "sam@northwind.example", "lee@northwind.example"
TOKEN = "d" * 32  # dana's digest
CONTACT = "new_contact:jane@acme.example"
STAGE = "stage:thread-1:1"
DEAL = "new_opportunity:thread-2"
SAMS = "new_contact:otto@acme.example"


@dataclass
class Site:
    """The web app on loopback, its database and event log, and a signer with the app's key."""

    server: WebServer
    repo: Repo
    events: EventLog
    signer: LinkSigner

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.server.port}/a/{token}"

    def link(self, action, rep=DANA, key=None, digest=TOKEN) -> str:
        return self.url(self.signer.token(action, rep, key, digest))

    def status(self, key: str) -> str:
        with self.repo.session() as session:
            return session.scalar(select(m.Suggestion.status).where(m.Suggestion.key == key))

    def decisions(self) -> list[tuple[str, str, str, str, str | None, dict]]:
        with self.repo.session() as session:
            rows = session.execute(
                select(m.Suggestion.key, m.Decision.verdict, m.Decision.who, m.Decision.how)
                .add_columns(m.Decision.digest_token, m.Decision.edits)
                .join(m.Suggestion, m.Suggestion.id == m.Decision.suggestion_id)
                .order_by(m.Decision.id)
            )
            return [tuple(row) for row in rows]

    def used_links(self) -> int:
        with self.repo.session() as session:
            return session.scalar(select(func.count()).select_from(m.UsedLink))


def fetch(url: str, form: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, dict, str]:
    """(status, headers, body) of a GET, or a POST of `form` (urlencoded) or `raw` bytes."""
    data = raw if raw is not None else (urllib.parse.urlencode(form).encode() if form is not None else None)
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read().decode()


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


def seed(repo: Repo) -> None:
    """Dana (lead Lee) and Sam, an account with a deal, and proposals: three in Dana's digest, one Sam's."""
    with repo.session() as s:
        s.add_all([m.Rep(email=DANA, name="Dana", lead=LEE), m.Rep(email=SAM, name="Sam"), m.Rep(email=LEE)])
        acme = m.Account(name="Acme")
        s.add(acme)
        s.flush()
        s.add(m.AccountDomain(domain="acme.example", account_id=acme.id))
        opp = m.Opportunity(account_id=acme.id, name="Acme – rollout", stage="discovery", owner_rep=DANA)
        s.add(opp)
        s.flush()
        evidence = [
            {"fingerprint": "f1", "sent_at": "2026-11-20T09:00:00", "quote": "Happy to talk <b>Thursday</b>"},
            {"fingerprint": "f2", "sent_at": "2026-11-21T09:00:00", "quote": "Happy to talk <b>Thursday</b>"},
        ]
        s.add_all(
            [
                m.Suggestion(
                    key=CONTACT,
                    kind="new_contact",
                    summary="Add Jane Doe <jane@acme.example> as a contact at Acme",
                    payload={"email": "jane@acme.example", "name": "Jane Doe", "account_id": acme.id,
                             "account": "Acme"},
                    confidence=0.9,
                    evidence=evidence,
                    owner_rep=DANA,
                ),
                m.Suggestion(
                    key=STAGE,
                    kind="stage_change",
                    summary="Move Acme – rollout from discovery to proposal",
                    payload={"opportunity_id": opp.id, "opportunity": opp.name, "from_stage": "discovery",
                             "to_stage": "proposal"},
                    confidence=0.6,
                    evidence=evidence[:1],
                    owner_rep=DANA,
                ),
                m.Suggestion(
                    key=DEAL,
                    kind="new_opportunity",
                    summary="New opportunity: Acme – expansion",
                    payload={"name": "Acme – expansion", "account_id": acme.id, "account": "Acme",
                             "amount": "41650.00", "currency": "USD", "first_seen_at": "2026-11-20"},
                    confidence=0.8,
                    evidence=evidence[:1],
                    owner_rep=DANA,
                ),
                m.Suggestion(
                    key=SAMS,
                    kind="new_contact",
                    summary="Add Otto <otto@acme.example> as a contact at Acme",
                    payload={"email": "otto@acme.example", "name": "Otto", "account_id": acme.id,
                             "account": "Acme"},
                    confidence=0.9,
                    evidence=evidence[:1],
                    owner_rep=SAM,
                ),
            ]
        )  # fmt: skip
        s.add(
            m.DigestSend(
                token=TOKEN,
                rep=DANA,
                kind="rep",
                period="2026-11-30",
                message_id=f"<digest.{TOKEN}@northwind.example>",
                status="sent",
                items=[{"n": 1, "key": CONTACT}, {"n": 2, "key": STAGE}, {"n": 3, "key": DEAL}],
            )
        )


@contextlib.contextmanager
def serve(repo: Repo, events_dir: Path) -> Iterator[Site]:
    seed(repo)
    events = EventLog(events_dir)
    signer = LinkSigner(SECRET, "https://crm-digest.example", max_age_days=14)
    pages = LinkPages(repo, events, signer, "en_US")
    app = make_app(Metrics(), lambda: HealthReport(ok=True, checks={"database": "ok"}), pages)
    with WebServer(DEFAULT_HOST, 0, app) as server:
        yield Site(server, repo, events, signer)


@pytest.fixture
def site(repo: Repo, settings) -> Iterator[Site]:
    with serve(repo, settings.events_dir) as running:
        yield running


def refused(logs: list[dict]) -> list[str]:
    return [e["reason"] for e in logs if e["event"] == "link_refused"]


def test_approve_by_link_get_shows_post_applies_a_second_post_is_refused(site: Site) -> None:
    link = site.link("approve", key=CONTACT)
    for _ in range(3):  # a scanner following the link, then the rep opening it: nothing changes
        status, headers, page = fetch(link)
        assert status == 200
    assert "Jane Doe" in page
    assert "Confirm: approve" in page
    assert "Happy to talk &lt;b&gt;Thursday&lt;/b&gt;" in page  # mail text is escaped...
    assert page.count("Happy to talk") == 1  # ... and the same sentence quoted twice is shown once
    assert headers["Referrer-Policy"] == "no-referrer"  # the token is in the URL
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none': no scripts
    assert site.status(CONTACT) == "open"
    assert list(site.events) == []

    status, _, done = fetch(link, {"csrf": csrf_of(page)})
    assert status == 200, done
    assert "Done" in done
    assert site.status(CONTACT) == "approved"
    assert site.decisions() == [(CONTACT, "approve", DANA, "link", TOKEN, {})]
    assert [e.kind for e in site.events] == ["decision"]
    assert site.used_links() == 1

    with capture_logs() as logs:
        status, _, again = fetch(link, {"csrf": csrf_of(page)})
        assert status == 409
        assert "already used" in again
        assert fetch(link)[0] == 409  # the page says so too, instead of a form that can only fail
    assert refused(logs) == ["reused", "reused"]
    assert len(site.decisions()) == 1


def test_reject_by_link(site: Site) -> None:
    link = site.link("reject", key=STAGE)
    status, _, page = fetch(link)
    assert status == 200
    assert "Confirm: reject" in page
    assert "proposal" in page  # the stage it asks to move to
    status, _, _ = fetch(link, {"csrf": csrf_of(page)})
    assert status == 200
    assert site.status(STAGE) == "rejected"
    assert site.decisions() == [(STAGE, "reject", DANA, "link", TOKEN, {})]


def test_edit_shows_the_fields_and_applies_the_changes(site: Site) -> None:
    link = site.link("edit", key=DEAL)
    status, _, page = fetch(link)
    assert status == 200
    assert 'name="amount" inputmode="decimal" value="41650.00"' in page
    assert 'name="stage"' in page
    assert site.status(DEAL) == "open"
    form = {"csrf": csrf_of(page), "amount": "50000", "stage": "proposal", "name": "Acme – expansion"}
    status, _, done = fetch(link, form)
    assert status == 200, done
    assert site.status(DEAL) == "approved"
    # Only what changed is an edit: the unchanged name is not.
    assert site.decisions() == [
        (DEAL, "approve", DANA, "link", TOKEN, {"amount": "50000.00", "stage": "proposal"})
    ]
    with site.repo.session() as session:
        created = session.scalar(select(m.Opportunity).where(m.Opportunity.name == "Acme – expansion"))
        assert (created.amount, created.stage, created.owner_rep) == (50000, "proposal", DANA)


def test_a_bad_edit_shows_the_form_again_and_the_link_still_works(site: Site) -> None:
    link = site.link("edit", key=DEAL)
    page = fetch(link)[2]
    with capture_logs() as logs:
        status, _, again = fetch(link, {"csrf": csrf_of(page), "amount": "fifty grand"})
    assert status == 422
    assert "amount" in again
    assert 'value="fifty grand"' in again  # what the rep typed is kept
    assert refused(logs) == ["bad_edit"]
    assert site.status(DEAL) == "open"
    assert site.used_links() == 0  # nothing was done: the link is not used up
    status, _, _ = fetch(link, {"csrf": csrf_of(again), "amount": "50000"})
    assert status == 200
    assert site.decisions()[-1][-1] == {"amount": "50000.00"}


def test_approve_all_lists_the_digests_open_proposals_and_one_post_approves_them(site: Site) -> None:
    decide(site.repo, site.events, DecisionRequest(key=STAGE, verdict="reject", who=DANA, how="reply"))
    link = site.link("approve_all")
    status, _, page = fetch(link)
    assert status == 200
    assert "Approve all 2?" in page
    assert "Jane Doe" in page
    assert "Acme – expansion" in page
    assert "Otto" not in page  # Sam's, not in this digest
    assert site.status(CONTACT) == site.status(DEAL) == "open"
    status, _, done = fetch(link, {"csrf": csrf_of(page)})
    assert status == 200, done
    assert (site.status(CONTACT), site.status(DEAL), site.status(STAGE)) == (
        "approved",
        "approved",
        "rejected",
    )
    assert [d[:5] for d in site.decisions()[1:]] == [
        (CONTACT, "approve", DANA, "link", TOKEN),
        (DEAL, "approve", DANA, "link", TOKEN),
    ]
    assert fetch(link, {"csrf": csrf_of(page)})[0] == 409  # single-use too


def test_approve_all_for_someone_elses_digest_is_refused(site: Site) -> None:
    with capture_logs() as logs:
        status, _, page = fetch(site.link("approve_all", rep=SAM))
    assert status == 403
    assert "someone else" in page
    assert refused(logs) == ["not_yours"]


def test_one_click_unsubscribe_post_pauses_and_a_get_does_not(site: Site) -> None:
    link = site.link("unsubscribe")

    def paused() -> datetime | None:
        with site.repo.session() as session:
            return session.scalar(select(m.Rep.paused_at).where(m.Rep.email == DANA))

    status, _, page = fetch(link)
    assert status == 200
    assert "Pause my digest" in page
    assert paused() is None
    assert fetch(link, raw=b"")[0] == 400  # a POST that does not say One-Click pauses nothing
    assert paused() is None
    # RFC 8058: what a mail client sends, with no cookie, page or CSRF token.
    status, _, done = fetch(link, raw=b"List-Unsubscribe=One-Click")
    assert status == 200, done
    assert "paused" in done
    assert paused() is not None
    assert [e.kind for e in site.events] == ["rep_paused"]
    status, _, again = fetch(link, raw=b"List-Unsubscribe=One-Click")  # a second click is harmless
    assert status == 200
    assert "already paused" in again
    assert [e.kind for e in site.events] == ["rep_paused"]


def test_the_full_list_shows_the_reps_open_proposals_with_links_that_work(site: Site) -> None:
    status, _, page = fetch(site.link("list", digest=None))
    assert status == 200
    assert "3 open proposals" in page
    assert "Otto" not in page
    approve = re.search(r'href="https://crm-digest\.example/a/([^"]+)">Approve<', page)
    assert approve, page
    assert site.signer.verify(approve.group(1)).key == CONTACT  # most confident first
    confirm = fetch(site.url(approve.group(1)))[2]
    assert fetch(site.url(approve.group(1)), {"csrf": csrf_of(confirm)})[0] == 200
    assert site.status(CONTACT) == "approved"
    assert fetch(site.link("list", digest=None), {})[0] == 405  # the list only shows


# Refusals: each a clear page with a 4xx status, and a warning with the reason and never the token.


def test_a_forged_link_is_refused(site: Site) -> None:
    token = site.signer.token("approve", DANA, CONTACT, TOKEN)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    other_key = LinkSigner("someone-elses-key-0123456789", "https://x.example", 14).token(
        "approve", DANA, CONTACT
    )
    for bad in (forged, other_key):
        with capture_logs() as logs:
            status, _, page = fetch(site.url(bad))
            assert fetch(site.url(bad), {"csrf": "x"})[0] == 403
        assert status == 403
        assert "This link is not valid" in page
        assert refused(logs) == ["forged", "forged"]
        assert all(bad not in str(event) for event in logs)
    assert site.status(CONTACT) == "open"


def test_an_expired_link_is_refused(site: Site) -> None:
    class SignedFifteenDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 15 * 86400

    old = URLSafeTimedSerializer(SECRET, salt=LINK_SALT, signer=SignedFifteenDaysAgo)
    token = old.dumps({"a": "approve", "r": DANA, "k": CONTACT, "d": TOKEN, "n": "nonce-old"})
    assert site.signer.verify(token, now=datetime.now(UTC).replace(year=2000)).key == CONTACT  # genuine
    with capture_logs() as logs:
        status, _, page = fetch(site.url(token))
        assert fetch(site.url(token), {"csrf": "x"})[0] == 410
    assert status == 410
    assert "expired on" in page
    assert refused(logs) == ["expired", "expired"]
    assert all(token not in str(event) for event in logs)
    assert site.status(CONTACT) == "open"


def test_a_link_of_one_rep_cannot_decide_another_reps_proposal(site: Site) -> None:
    token = site.signer.token("approve", DANA, SAMS, TOKEN)  # signed for Dana, about Sam's proposal
    csrf = site.signer.form_token(site.signer.verify(token))  # as if the page had offered a form
    with capture_logs() as logs:
        status, _, page = fetch(site.url(token))
        posted, _, refusal = fetch(site.url(token), {"csrf": csrf})
    assert (status, posted) == (403, 403)
    assert "This is not yours to decide" in page
    assert "This is not yours to decide" in refusal
    assert refused(logs) == ["not_yours", "not_yours"]
    assert site.status(SAMS) == "open"
    assert site.used_links() == 0
    lead = site.link("approve", rep=LEE, key=CONTACT)  # Dana's team lead may decide for her
    assert fetch(lead, {"csrf": csrf_of(fetch(lead)[2])})[0] == 200
    assert site.decisions() == [(CONTACT, "approve", LEE, "link", TOKEN, {})]


def test_a_link_to_a_proposal_that_no_longer_exists_gets_a_clear_page(site: Site) -> None:
    link = site.link("approve", key="new_contact:gone@acme.example")  # e.g. after a rebuild
    with capture_logs() as logs:
        status, _, page = fetch(link)
    assert status == 404
    assert "no longer exists" in page
    assert refused(logs) == ["unknown"]


def test_a_link_to_a_proposal_decided_by_reply_says_by_whom_and_when(site: Site) -> None:
    decide(site.repo, site.events, DecisionRequest(key=CONTACT, verdict="approve", who=DANA, how="reply"))
    link = site.link("reject", key=CONTACT)
    with capture_logs() as logs:
        status, _, page = fetch(link)
    assert status == 409
    assert f"approved by {DANA} by reply on" in page
    assert refused(logs) == ["decided"]
    assert site.status(CONTACT) == "approved"


def test_a_post_without_the_pages_csrf_token_is_refused_and_uses_nothing_up(site: Site) -> None:
    link = site.link("approve", key=CONTACT)
    other_page = fetch(site.link("approve", key=CONTACT))[2]  # another link's form token
    with capture_logs() as logs:
        assert fetch(link, {})[0] == 400
        status, _, page = fetch(link, {"csrf": csrf_of(other_page)})
    assert status == 400
    assert "nothing was done" in page
    assert refused(logs) == ["bad_csrf", "bad_csrf"]
    assert site.status(CONTACT) == "open"
    assert site.used_links() == 0
    assert fetch(link, {"csrf": csrf_of(fetch(link)[2])})[0] == 200  # the genuine page still works


@pytest.mark.usefixtures("debug_logging")
def test_link_requests_are_logged_without_the_token(site: Site) -> None:
    token = site.signer.token("approve", DANA, CONTACT, TOKEN)
    with capture_logs() as logs:
        fetch(site.url(token))
    assert [e for e in logs if e["event"] == "http_request"] == [
        {"event": "http_request", "log_level": "debug", "method": "GET", "path": "/a/<token>", "status": 200}
    ]


def test_a_failing_page_is_a_500_logged_by_its_type_never_with_the_token(repo: Repo, tmp_path: Path) -> None:
    class Broken(LinkPages):
        def page(self, token: str) -> Response:
            raise RuntimeError(f"bug while serving {token}")  # a bug's message may quote anything

    seed(repo)
    signer = LinkSigner(SECRET, "https://crm-digest.example", max_age_days=14)
    pages = Broken(repo, EventLog(tmp_path / "events"), signer, "en_US")
    app = make_app(Metrics(), lambda: HealthReport(ok=True, checks={"database": "ok"}), pages)
    token = signer.token("approve", DANA, CONTACT, TOKEN)
    with WebServer(DEFAULT_HOST, 0, app) as server, capture_logs() as logs:
        status, _headers, body = fetch(f"http://{DEFAULT_HOST}:{server.port}/a/{token}")
    assert status == 500
    assert token not in body
    assert [e["error"] for e in logs if e["event"] == "web_request_failed"] == ["RuntimeError"]
    assert token not in repr(logs)


def test_approve_by_link_on_postgresql(pg_fresh_url: str, tmp_path: Path) -> None:
    repo = Repo(pg_fresh_url)
    try:
        with serve(repo, tmp_path / "events") as site:
            link = site.link("approve", key=CONTACT)
            page = fetch(link)[2]
            assert fetch(link, {"csrf": csrf_of(page)})[0] == 200
            assert fetch(link, {"csrf": csrf_of(page)})[0] == 409
            assert site.status(CONTACT) == "approved"
            assert site.decisions() == [(CONTACT, "approve", DANA, "link", TOKEN, {})]
    finally:
        repo.dispose()


# The daemon builds the app from its settings and serves it on [web] listen.


def daemon_for(tmp_path: Path, parse_worker, web: str) -> Daemon:
    settings = load_settings(write_config(tmp_path, f'\n[web]\nlisten = "127.0.0.1:0"\n{web}'))
    repo = Repo(settings.database_url)
    repo.upgrade()
    return Daemon(settings, Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker), Metrics())


@pytest.mark.usefixtures("debug_logging")  # to see daemon_started
def test_the_daemon_serves_the_link_pages_with_the_key_from_the_environment(
    tmp_path: Path, parse_worker, monkeypatch
) -> None:
    monkeypatch.setenv("TEST_LINK_KEY", SECRET)
    daemon = daemon_for(tmp_path, parse_worker, 'secret_key_env = "TEST_LINK_KEY"\n')
    repo = daemon.pipeline.repo
    seed(repo)
    runner = threading.Thread(target=daemon.run)
    with capture_logs() as logs:
        runner.start()
        try:
            assert wait_for(lambda: any(e["event"] == "daemon_started" for e in logs))
            base = f"http://127.0.0.1:{daemon.web.port}"
            token = LinkSigner(SECRET, "https://x.example", 14).token("approve", DANA, CONTACT, TOKEN)
            page = fetch(f"{base}/a/{token}")[2]
            assert fetch(f"{base}/a/{token}", {"csrf": csrf_of(page)})[0] == 200
            assert fetch(f"{base}/healthz")[0] == 200
        finally:
            daemon.request_stop()
            runner.join(30)
    assert not runner.is_alive()
    assert [e.kind for e in EventLog(daemon.settings.events_dir)] == ["decision"]
    repo.dispose()


def test_without_a_key_the_daemon_serves_health_and_metrics_only(tmp_path: Path, parse_worker) -> None:
    daemon = daemon_for(tmp_path, parse_worker, "")
    token = LinkSigner(SECRET, "https://x.example", 14).token("list", DANA)
    with daemon.web:
        assert fetch(f"http://127.0.0.1:{daemon.web.port}/a/{token}")[0] == 404
        assert fetch(f"http://127.0.0.1:{daemon.web.port}/healthz")[0] == 200
    daemon.pipeline.repo.dispose()


@pytest.mark.parametrize(
    ("web", "named"),
    [
        ("", r"\[web\] secret_key_env is not set"),  # digests would carry links nobody can sign
        ('secret_key_env = "TEST_LINK_KEY_UNSET"\n', "environment variable TEST_LINK_KEY_UNSET is not set"),
    ],
    ids=["no_key", "key_not_in_the_environment"],
)
def test_a_missing_link_key_stops_the_daemon_at_start_naming_the_key(
    tmp_path: Path, parse_worker, monkeypatch, web: str, named: str
) -> None:
    monkeypatch.delenv("TEST_LINK_KEY_UNSET", raising=False)
    smtp = '\n[smtp]\nhost = "127.0.0.1"\nport = 2525\nsecurity = "plain"\n'
    with pytest.raises(ConfigError, match=named) as caught:
        daemon_for(tmp_path, parse_worker, web + smtp)
    assert caught.value.fix


def wait_for(predicate, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False
