"""The outbound webhook against a real local HTTP server that fails, goes away and recovers: every
record arrives once, in order, signed; every attempt is in the delivery log; the secret is never logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
from structlog.testing import capture_logs

from config.settings import WebhookSettings
from mailsync.admin import export_rows
from mailsync.admin.webhook import deliver
from mailsync.approval.decisions import DecisionRequest, decide
from mailsync.cli import main
from storage import models as m
from storage.eventlog import EventLog
from storage.repo import Repo
from tests.conftest import pg_copy_url, shared_pg_url, write_config
from tests.support.demo import import_demo

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


pytestmark = pytest.mark.integration

SECRET = "webhook-secret-4f1c9a"
SECRET_ENV = "TEST_WEBHOOK_SECRET"
DANA = "dana@northwind.example"
START = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).replace(tzinfo=None)  # naive UTC, as the database keeps


class Receiver:
    """A CRM's webhook endpoint on loopback: answers each POST with the next scripted status (200 once
    the script is used up) and keeps what it received."""

    def __init__(self) -> None:
        self.script: list[int] = []
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.script.pop(0) if receiver.script else 200
                receiver.received.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._serve()

    def _serve(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def restart(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.server.RequestHandlerClass)
        self._serve()

    def delivered(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body, status in self.received if status == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def decided_demo(directory: Path) -> Repo:
    """The demo captured, with two decisions taken (on PostgreSQL when MAILSYNC_DATABASE_URL says so)."""
    repo = import_demo(directory)
    with repo.session() as session:
        keys = [s.key for s in session.query(m.Suggestion).order_by(m.Suggestion.id).limit(2)]
    events = EventLog(directory / "var" / "events")
    for key, verdict in zip(keys, ("approve", "reject"), strict=True):
        decide(repo, events, DecisionRequest(key, verdict, DANA, "cli"), START.replace(tzinfo=UTC))
    repo.dispose()
    return repo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo, decided, in SQLite: copied per test."""
    directory = tmp_path_factory.mktemp("webhook-demo")
    decided_demo(directory)
    return directory


@pytest.fixture(scope="module")
def demo_pg(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """The demo, decided, in a PostgreSQL database of its own: its directory and URL, copied per test."""
    directory = tmp_path_factory.mktemp("webhook-demo-pg")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAILSYNC_DATABASE_URL", shared_pg_url(request))
        return directory, decided_demo(directory).url


@pytest.fixture
def repo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_backend: str, request: pytest.FixtureRequest
) -> Iterator[Repo]:
    """A copy of the demo in tmp_path/demo, on the test's backend."""
    monkeypatch.setenv(SECRET_ENV, SECRET)
    if db_backend == "postgresql":  # the CLI in a test finds the copy through the environment
        demo, demo_url = request.getfixturevalue("demo_pg")
        url = pg_copy_url(request, demo_url)
        monkeypatch.setenv("MAILSYNC_DATABASE_URL", url)
    else:
        demo = request.getfixturevalue("demo")
        url = f"sqlite:///{tmp_path / 'demo' / 'var' / 'mailsync.db'}"
    shutil.copytree(demo, tmp_path / "demo")
    found = Repo(url)
    yield found
    found.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def settings_for(receiver: Receiver, **changes: Any) -> WebhookSettings:
    return WebhookSettings(
        url=f"http://127.0.0.1:{receiver.port}/hooks/mailsync", secret_env=SECRET_ENV, batch=20,
        timeout_seconds=5, retry_after_seconds=60, max_delay_seconds=600, **changes,
    )  # fmt: skip


@pytest.mark.both_dbs
def test_deliveries_survive_errors_and_an_outage_and_arrive_once_in_order_signed(
    repo: Repo, receiver: Receiver
) -> None:
    clock = Clock()
    settings = settings_for(receiver)
    receiver.script = [503, 500]  # the first activities batch, then the first decisions batch
    with capture_logs() as logs:
        first = deliver(repo, settings, now=clock)
        assert (first.delivered, first.retrying, first.failed) == (0, 2, 0)  # each kind stops at its first
        assert deliver(repo, settings, now=clock).attempts == []  # not due yet: nothing is sent
        clock.now += timedelta(seconds=61)
        receiver.stop()  # the CRM goes away
        down = deliver(repo, settings, now=clock)
        assert down.retrying == 2
        assert all("ConnectError" in (a["error"] or "") for a in down.attempts)
        clock.now += timedelta(seconds=61)
        assert deliver(repo, settings, now=clock).attempts == []  # the delay doubled: 120 s
        receiver.restart()
        clock.now += timedelta(seconds=60)
        final = deliver(repo, settings, now=clock)
        assert final.failed == 0
        assert final.retrying == 0
    again = deliver(repo, settings, now=clock)
    assert (again.queued, again.attempts) == (0, [])

    with repo.session() as session:
        refs = export_rows.References(session)
        activities = [row["message_id"] for row in export_rows.activities_between(session, refs, 0, 10**9)]
        decisions = [row["id"] for row in export_rows.decisions_between(session, refs, 0, 10**9)]
        logged = session.query(m.WebhookAttempt).count()
    bodies = receiver.delivered()
    sent = {
        kind: [r for b in bodies if b["kind"] == kind for r in b["records"]]
        for kind in ("activities", "decisions")
    }
    assert [r["message_id"] for r in sent["activities"]] == activities  # every record once, in order
    assert len(activities) > 20
    assert [r["id"] for r in sent["decisions"]] == decisions
    assert len(decisions) == 2
    assert logged == len(receiver.received) + 2  # + the two refused connections
    for headers, body, _ in receiver.received:
        stamp = headers["X-Mailsync-Timestamp"]
        expected = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Mailsync-Signature"], f"sha256={expected}")
        assert headers["X-Mailsync-Delivery"] == str(json.loads(body)["delivery"])
    retried = [h["X-Mailsync-Delivery"] for h, _, status in receiver.received if status != 200]
    delivered = [h["X-Mailsync-Delivery"] for h, _, status in receiver.received if status == 200]
    assert set(retried) <= set(delivered)  # a retried delivery went out again under its own id
    assert SECRET not in repr(logs)
    assert "webhook_retrying" in {e["event"] for e in logs}


@pytest.mark.both_dbs
def test_a_delivery_fails_for_good_after_max_attempts_and_retry_queues_it_again(
    repo: Repo, receiver: Receiver, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock()
    settings = settings_for(receiver, max_attempts=2, send=("decisions",))
    receiver.script = [500, 500]
    assert deliver(repo, settings, now=clock).retrying == 1
    clock.now += timedelta(seconds=61)
    assert deliver(repo, settings, now=clock).failed == 1
    clock.now += timedelta(hours=1)
    assert deliver(repo, settings, now=clock).attempts == []  # failed: left alone

    config = write_config(
        tmp_path / "demo",
        f'\n[webhook]\nurl = "{settings.url}"\nsecret_env = "{SECRET_ENV}"\nsend = ["decisions"]\n',
    )
    assert main(["-c", str(config), "webhook", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["deliveries"]["failed"] == 1
    assert [a["status_code"] for a in status["attempts"]] == [500, 500]
    assert main(["-c", str(config), "webhook", "retry", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"requeued": 1, "dry_run": True}
    assert main(["-c", str(config), "webhook", "retry"]) == 0
    capsys.readouterr()
    assert main(["-c", str(config), "webhook", "deliver", "--json"]) == 0  # the receiver recovered
    report = json.loads(capsys.readouterr().out)
    assert (report["delivered"], report["failed"]) == (1, 0)
    assert len(receiver.delivered()) == 1
