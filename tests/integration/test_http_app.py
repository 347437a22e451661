"""The web app's ops side over real loopback HTTP (waitress): /healthz, /metrics, 404/405, binding, stopping."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest
from structlog.testing import capture_logs

from config.errors import ConfigError
from mailsync.service.health import HealthReport, evaluate_health
from mailsync.service.metrics import Metrics
from mailsync.service.web import DEFAULT_HOST, WebServer, make_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

POLL = 60.0
HEALTHY = HealthReport(ok=True, checks={"database": "ok"})


def request(server: WebServer, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of one real HTTP request to the server on loopback."""
    data = b"" if method in {"POST", "PUT"} else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read().decode()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(mailboxes=["dana", "sam"])


@pytest.fixture
def serve(metrics: Metrics) -> Iterator[Callable[[Callable[[], HealthReport]], WebServer]]:
    """Start WebServers on 127.0.0.1 port 0 with a given health function; all stopped at teardown."""
    servers: list[WebServer] = []

    def start(health: Callable[[], HealthReport]) -> WebServer:
        server = WebServer(DEFAULT_HOST, 0, make_app(metrics, health))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_healthz_is_200_with_the_checks_when_healthy(serve) -> None:
    server = serve(lambda: HEALTHY)
    status, headers, body = request(server, "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body == '{"status": "ok", "checks": {"database": "ok"}}'


def test_healthz_is_503_when_the_database_is_down(serve) -> None:
    server = serve(
        lambda: evaluate_health(
            now=1000.0, db_ok=False, last_success={"dana": 990.0}, poll_interval=POLL, started_at=0.0
        )
    )
    status, _, body = request(server, "/healthz")
    assert status == 503
    assert '"status": "unhealthy"' in body
    assert '"database": "unreachable"' in body


def test_healthz_is_503_when_a_mailbox_is_stale(serve, metrics: Metrics) -> None:
    clock = {"now": 10_000.0}
    metrics.succeeded("dana", at=10_000.0)
    metrics.succeeded("sam", at=10_000.0)

    def health() -> HealthReport:
        last = {name: metrics.last_success(name) for name in ("dana", "sam")}
        return evaluate_health(
            now=clock["now"], db_ok=True, last_success=last, poll_interval=POLL, started_at=0.0
        )

    server = serve(health)
    clock["now"] += 3 * POLL  # exactly three intervals: not yet "older than"
    assert request(server, "/healthz")[0] == 200
    metrics.succeeded("sam", at=clock["now"])
    clock["now"] += 1
    status, _, body = request(server, "/healthz")
    assert status == 503
    assert '"mailbox:dana": "stale: last success 181s ago (limit 180s)"' in body
    assert '"mailbox:sam": "ok"' in body


def test_healthz_is_503_when_the_health_function_raises(serve) -> None:
    def broken() -> HealthReport:
        raise ConnectionResetError("db gone")

    status, _, body = request(serve(broken), "/healthz")
    assert status == 503
    assert '"health": "check raised ConnectionResetError"' in body


def test_metrics_exposes_counters_by_mailbox_name_and_no_addresses(serve, metrics: Metrics) -> None:
    metrics.fetched("dana", 3)
    metrics.archived("dana")
    metrics.archived("dana")
    metrics.quarantined("dana")
    metrics.error("dana", ConnectionRefusedError("login failed for dana@northwind.example"))
    metrics.succeeded("dana", at=1_700_000_000.0)
    metrics.lag("dana", 42.5)
    status, headers, body = request(serve(lambda: HEALTHY), "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    lines = body.splitlines()
    assert 'mailsync_messages_fetched_total{mailbox="dana"} 3.0' in lines
    assert 'mailsync_messages_archived_total{mailbox="dana"} 2.0' in lines
    assert 'mailsync_messages_quarantined_total{mailbox="dana"} 1.0' in lines
    assert 'mailsync_sync_errors_total{kind="ConnectionRefusedError",mailbox="dana"} 1.0' in lines
    assert 'mailsync_last_success_timestamp_seconds{mailbox="dana"} 1.7e+09' in lines
    assert 'mailsync_sync_lag_seconds{mailbox="dana"} 42.5' in lines
    assert (
        'mailsync_messages_fetched_total{mailbox="sam"} 0.0' in lines
    )  # configured, exported from the start
    assert "mailsync_up 1.0" in lines
    assert any(line.startswith("mailsync_info{version=") for line in lines)
    assert "@" not in body


def test_metrics_are_per_instance(metrics: Metrics) -> None:
    other = Metrics()
    metrics.fetched("dana")
    assert other.registry.get_sample_value("mailsync_messages_fetched_total", {"mailbox": "dana"}) is None
    assert metrics.registry.get_sample_value("mailsync_messages_fetched_total", {"mailbox": "dana"}) == 1.0
    assert other.last_success("dana") is None


@pytest.mark.parametrize("path", ["/", "/health", "/metrics/extra", "/healthz/"])
def test_unknown_paths_are_404(serve, path: str) -> None:
    assert request(serve(lambda: HEALTHY), path)[0] == 404


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/healthz"), ("PUT", "/metrics"), ("DELETE", "/healthz")]
)
def test_other_methods_are_405(serve, method: str, path: str) -> None:
    status, headers, _ = request(serve(lambda: HEALTHY), path, method)
    assert status == 405
    assert headers["Allow"] == "GET"


@pytest.mark.usefixtures("debug_logging")
def test_requests_are_logged_with_method_path_and_status_only(serve) -> None:
    server = serve(lambda: HEALTHY)
    with capture_logs() as logs:
        request(server, "/healthz?token=secret")
        request(server, "/nope", "POST")
        request(server, "/a/eyJhIjoiYXBwcm92ZSJ9.secret-signature")  # a link's token is never logged
    events = [e for e in logs if e["event"] == "http_request"]
    assert events == [
        {"event": "http_request", "log_level": "debug", "method": "GET", "path": "/healthz", "status": 200},
        {"event": "http_request", "log_level": "debug", "method": "POST", "path": "/nope", "status": 404},
        {"event": "http_request", "log_level": "debug", "method": "GET", "path": "/a/<token>", "status": 404},
    ]


def test_binds_to_loopback_by_default_and_stop_frees_the_port(metrics: Metrics) -> None:
    assert DEFAULT_HOST == "127.0.0.1"
    first = WebServer(DEFAULT_HOST, 0, make_app(metrics, lambda: HEALTHY))
    first.start()
    host, port = first.address
    assert (host, port) == ("127.0.0.1", first.port)
    assert port != 0
    with pytest.raises(OSError), socket.create_server(("127.0.0.1", port)):  # the port is taken while serving
        pass
    first.stop()
    first.stop()  # idempotent
    with pytest.raises(RuntimeError):
        _ = first.port
    with WebServer(DEFAULT_HOST, port, make_app(metrics, lambda: HEALTHY)) as second:
        assert second.port == port
        assert request(second, "/healthz")[0] == 200


def test_a_port_in_use_is_a_config_error_naming_the_setting(metrics: Metrics) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = WebServer(DEFAULT_HOST, port, make_app(metrics, lambda: HEALTHY))
        with pytest.raises(ConfigError, match=rf"\[web\] listen 127.0.0.1:{port}: ") as caught:
            server.start()
    assert caught.value.fix
    with pytest.raises(RuntimeError):
        _ = server.port  # nothing was started


# evaluate_health on its own: pure, with controlled times.


def test_healthy_when_db_is_up_and_every_mailbox_is_fresh() -> None:
    report = evaluate_health(
        now=1000.0,
        db_ok=True,
        last_success={"dana": 950.0, "sam": 1000.0},
        poll_interval=POLL,
        started_at=0.0,
    )
    assert report == HealthReport(
        ok=True, checks={"database": "ok", "mailbox:dana": "ok", "mailbox:sam": "ok"}
    )


def test_database_down_is_unhealthy_even_with_fresh_mailboxes() -> None:
    report = evaluate_health(
        now=1000.0, db_ok=False, last_success={"dana": 1000.0}, poll_interval=POLL, started_at=0.0
    )
    assert not report.ok
    assert report.checks["database"] == "unreachable"


def test_never_succeeded_mailbox_is_fine_for_the_first_three_intervals() -> None:
    started = 5000.0
    for uptime in (0.0, POLL, 3 * POLL):
        report = evaluate_health(
            now=started + uptime,
            db_ok=True,
            last_success={"dana": None},
            poll_interval=POLL,
            started_at=started,
        )
        assert report.ok, uptime
        assert report.checks["mailbox:dana"] == "ok: waiting for the first sync"


def test_never_succeeded_mailbox_is_unhealthy_after_three_intervals() -> None:
    started = 5000.0
    report = evaluate_health(
        now=started + 3 * POLL + 1,
        db_ok=True,
        last_success={"dana": None, "sam": 5100.0},
        poll_interval=POLL,
        started_at=started,
    )
    assert not report.ok
    assert report.checks["mailbox:dana"] == "never succeeded in 181s (limit 180s)"
    assert report.checks["mailbox:sam"] == "ok"


def test_failing_mailbox_is_unhealthy_at_once_with_its_reason() -> None:
    report = evaluate_health(
        now=1000.0,
        db_ok=True,
        last_success={"dana": 990.0, "sam": 990.0},  # fresh: a failure counts, not the age
        poll_interval=POLL,
        started_at=900.0,
        failing={"dana": "auth_failed"},
    )
    assert report == HealthReport(
        ok=False, checks={"database": "ok", "mailbox:dana": "failing: auth_failed", "mailbox:sam": "ok"}
    )


def test_stale_is_strictly_older_than_three_intervals() -> None:
    assert evaluate_health(
        now=1180.0, db_ok=True, last_success={"dana": 1000.0}, poll_interval=POLL, started_at=0.0
    ).ok
    assert not evaluate_health(
        now=1180.5, db_ok=True, last_success={"dana": 1000.0}, poll_interval=POLL, started_at=0.0
    ).ok


def test_no_mailboxes_means_only_the_database_matters() -> None:
    assert evaluate_health(
        now=1e9, db_ok=True, last_success={}, poll_interval=POLL, started_at=0.0
    ) == HealthReport(ok=True, checks={"database": "ok"})


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        evaluate_health(now=0.0, db_ok=True, last_success={}, poll_interval=0.0, started_at=0.0)
