"""`mailsync run` against a real Dovecot: IDLE wake-up, health, SIGTERM, a failing mailbox.

Capture with health, the service's start and SIGTERM, and a reconnect after an outage run on SQLite and
on PostgreSQL (both_dbs); the rest, about IMAP timing and backoff, on SQLite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from config.settings import load_settings
from mailsync import faults
from mailsync.pipeline.ingest import Pipeline
from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import write_config
from tests.support.config import PASSWORD_ENV, imap_config, imap_mailbox
from tests.support.database import use_database
from tests.support.mail import plain_mail as mail


@pytest.fixture(autouse=True)
def _database(monkeypatch, db_url):
    """The daemon's config, and `mailsync` run as a service, on the test's database."""
    use_database(monkeypatch, db_url)


def wait_for(predicate, timeout, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def messages(repo):
    with repo.session() as s:
        return s.scalar(select(func.count()).select_from(m.Message))


def daemon_config(tmp_path, dovecot, user, monkeypatch):
    daemon = '\n[daemon]\npoll_interval = 600\njitter = 0\n[web]\nlisten = "127.0.0.1:0"\n'
    return imap_config(
        tmp_path, dovecot, user.name, user.password, monkeypatch, folders=["INBOX"], extra=daemon
    )


@contextlib.contextmanager
def running(daemon):
    """Run the daemon in a thread for the with-block, then stop it; it must stop within 30 s."""
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        yield runner
    finally:
        daemon.request_stop()
        runner.join(30)
    assert not runner.is_alive()


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.both_dbs
def test_idle_captures_new_mail_within_seconds_and_health_is_ok(
    tmp_path, dovecot, imap_user, monkeypatch, repo, pipeline
):
    settings = load_settings(daemon_config(tmp_path, dovecot, imap_user, monkeypatch))
    dovecot.append(imap_user.name, "INBOX", mail("before start"))
    daemon = Daemon(settings, pipeline, Metrics(["imap"]))
    with running(daemon):
        assert wait_for(lambda: daemon.metrics.last_success("imap") is not None, 15)
        assert messages(repo) == 1
        base = f"http://127.0.0.1:{daemon.web.port}"
        status, body = get(base + "/healthz")
        assert status == 200, body
        time.sleep(1.0)  # the poller is now in IDLE; the next poll is 10 minutes away
        appended = time.monotonic()
        dovecot.append(imap_user.name, "INBOX", mail("while idling"))
        assert wait_for(lambda: messages(repo) == 2, 5.0), "new mail not captured within 5 s"
        took = time.monotonic() - appended
        status, text = get(base + "/metrics")
        assert status == 200
        assert 'mailsync_messages_fetched_total{mailbox="imap"} 2.0' in text
        print(f"IDLE capture took {took:.2f} s")


@pytest.mark.parametrize(
    "point",
    [
        "after_sync",  # mail in the view of the SELECT before IDLE: only a check of the folder finds it
        # mail after that SELECT: Dovecot announces it only with its reply to DONE, at the end of the
        # IDLE slice (5 s), not when IDLE starts; idle_wait must read that reply
        "before_idle",
    ],
)
def test_mail_arriving_between_a_sync_pass_and_idle_is_captured_within_seconds(
    point, tmp_path, dovecot, imap_user, monkeypatch, repo, pipeline
):
    settings = load_settings(daemon_config(tmp_path, dovecot, imap_user, monkeypatch))
    dovecot.append(imap_user.name, "INBOX", mail("before start"))
    appended = threading.Event()

    def arrive():  # from another IMAP connection, the first time the daemon reaches the point
        if not appended.is_set():
            dovecot.append(imap_user.name, "INBOX", mail(f"arrived at {point}"))
            appended.set()

    daemon = Daemon(settings, pipeline, Metrics(["imap"]))
    with faults.on(point, arrive), running(daemon):
        assert appended.wait(15), f"the daemon never reached {point}"
        # The next poll is 600 s away: only a re-check or the IDLE's announcement captures it in time.
        assert wait_for(lambda: messages(repo) == 2, 10.0), f"mail appended at {point} not captured"


def test_newest_mail_expunged_during_a_pass_does_not_make_the_daemon_sync_in_a_loop(
    tmp_path, dovecot, imap_user, monkeypatch, repo, pipeline
):
    settings = load_settings(daemon_config(tmp_path, dovecot, imap_user, monkeypatch))
    dovecot.append(imap_user.name, "INBOX", mail("kept"))
    passes = []
    idling = threading.Event()

    def come_and_go():  # UIDNEXT moves past the cursor, yet nothing new is left to fetch
        if not passes:
            uid = dovecot.append(imap_user.name, "INBOX", mail("deleted at once"))
            with dovecot.client(imap_user.name) as client:
                client.select_folder("INBOX")
                client.delete_messages([uid])
                client.expunge()
        passes.append(1)

    daemon = Daemon(settings, pipeline, Metrics(["imap"]))
    with faults.on("after_sync", come_and_go), faults.on("before_idle", idling.set), running(daemon):
        assert idling.wait(15), "the daemon never got to IDLE"
    assert len(passes) == 1  # the first pass only: no second pass for mail that is not there
    assert messages(repo) == 1


def test_health_is_503_when_the_database_is_unreachable(
    tmp_path, dovecot, imap_user, monkeypatch, parse_worker
):
    settings = load_settings(daemon_config(tmp_path, dovecot, imap_user, monkeypatch))
    nowhere = Repo("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2")
    daemon = Daemon(
        settings, Pipeline(settings, nowhere, Archive(settings.archive_dir), parse_worker), Metrics(["imap"])
    )
    report = daemon.health()
    assert not report.ok
    assert report.checks["database"] != "ok"
    daemon.web.start()
    try:
        status, body = get(f"http://127.0.0.1:{daemon.web.port}/healthz")
    finally:
        daemon.web.stop()
    assert status == 503
    assert json.loads(body)["status"] == "unhealthy"


# A line on stdin makes the daemon's process send SIGTERM to one of its own threads that is not the main
# one: the kernel may hand a signal sent to the process to any thread, and Python runs the handler in
# the main thread only when that thread next runs Python code.
_SIGNAL_A_THREAD = (
    "import signal, sys, threading\n"
    "from mailsync.cli import run\n"
    "def kick():\n"
    "    sys.stdin.readline()\n"
    "    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)\n"
    "threading.Thread(target=kick, daemon=True).start()\n"
    "run()"
)


@pytest.mark.both_dbs
@pytest.mark.parametrize("received_by", ["process", "another thread"])
def test_run_as_a_service_exits_0_on_sigterm(tmp_path, dovecot, imap_user, monkeypatch, received_by):
    config = daemon_config(tmp_path, dovecot, imap_user, monkeypatch)
    dovecot.append(imap_user.name, "INBOX", mail("service"))
    mailsync = [sys.executable, "-c", "from mailsync.cli import run; run()", "-c", str(config)]
    assert subprocess.run([*mailsync, "db", "upgrade"], check=False, capture_output=True).returncode == 0
    env = {**os.environ, "MAILSYNC_LOG_FORMAT": "json"}
    if received_by == "another thread":
        mailsync[2] = _SIGNAL_A_THREAD
    proc = subprocess.Popen(
        [*mailsync, "run"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        port = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            event = json.loads(line)
            if event["event"] == "daemon_started":
                port = int(event["http"].rsplit(":", 1)[1])
            if event["event"] == "folder_synced":
                break
        assert port, "".join(lines)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        if received_by == "process":
            proc.send_signal(signal.SIGTERM)
        else:
            proc.stdin.write("kick\n")
            proc.stdin.flush()
        try:
            rest = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"no exit 30 s after SIGTERM; its log:\n{proc.communicate()[1][-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    events = [json.loads(line)["event"] for line in rest.splitlines() if line.startswith("{")]
    assert "stop_requested" in events
    assert events[-1] == "daemon_stopped", rest[-6000:]  # "stop_overdue" carries every thread's stack
    assert imap_user.password not in "".join(lines) + rest


@pytest.mark.both_dbs
def test_daemon_reconnects_with_backoff_after_the_server_goes_away(
    tmp_path, dovecot_factory, monkeypatch, repo, pipeline
):
    server = dovecot_factory(users={"rita": "ritapw"})

    class User:
        name, password = "rita", "ritapw"

    settings = load_settings(daemon_config(tmp_path, server, User, monkeypatch))
    server.append("rita", "INBOX", mail("before the outage"))
    metrics = Metrics(["imap"])
    daemon = Daemon(settings, pipeline, metrics)
    with running(daemon):
        assert wait_for(lambda: messages(repo) == 1, 15)
        server.stop()
        assert wait_for(
            lambda: (
                "mailsync_sync_errors_total" in get(f"http://127.0.0.1:{daemon.web.port}/metrics")[1]
                and 'kind="SourceUnavailable"' in get(f"http://127.0.0.1:{daemon.web.port}/metrics")[1]
            ),
            15,
        )
        server.start()
        server.append("rita", "INBOX", mail("after the outage"))
        assert wait_for(lambda: messages(repo) == 2, 30), "not recaptured after the server came back"


@pytest.mark.usefixtures("debug_logging")
def test_wrong_password_is_503_at_once_backs_off_and_recovers_when_fixed(
    tmp_path, dovecot, imap_user, monkeypatch, repo, pipeline
):
    wrong = "wrong-" + imap_user.password  # what the mailbox is configured with (its env var)
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    mailbox = imap_mailbox(dovecot, imap_user.name, password_env=PASSWORD_ENV)
    quick = '\n[daemon]\npoll_interval = 1\njitter = 0\n[web]\nlisten = "127.0.0.1:0"\n'  # the backoff counts polls
    dovecot.append(imap_user.name, "INBOX", mail("waiting behind a bad password"))
    daemon = Daemon(load_settings(write_config(tmp_path, mailbox + quick)), pipeline, Metrics(["imap"]))
    with capture_logs() as logs, running(daemon):
        assert wait_for(lambda: any(e["event"] == "web_server_started" for e in logs), 5)
        base = f"http://127.0.0.1:{daemon.web.port}"
        assert wait_for(lambda: get(base + "/healthz")[0] == 503, 5), get(base + "/healthz")
        status, body = get(base + "/healthz")
        assert status == 503
        assert json.loads(body)["checks"]["mailbox:imap"] == "failing: auth_failed"
        text = get(base + "/metrics")[1]
        assert 'mailsync_mailbox_up{mailbox="imap"} 0.0' in text
        assert 'kind="AuthFailed"' in text
        dovecot.add_user(imap_user.name, wrong)  # the fix: now the server takes that password
        assert wait_for(lambda: get(base + "/healthz")[0] == 200, 20), get(base + "/healthz")
        assert messages(repo) == 1
        assert 'mailsync_mailbox_up{mailbox="imap"} 1.0' in get(base + "/metrics")[1]
    failed = [e for e in logs if e["event"] == "mailbox_failed"]
    assert [e["log_level"] for e in failed][:1] == ["error"]  # one clear line with the fix, then quiet
    assert all(e["log_level"] == "debug" for e in failed[1:])
    assert failed[0]["reason"] == "auth_failed"
    assert "password_env" in failed[0]["fix"]
    assert any(e["event"] == "mailbox_recovered" and e["after"] == "auth_failed" for e in logs)
    assert wrong not in repr(logs)
