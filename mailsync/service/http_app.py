"""The daemon's operations HTTP app: /healthz and /metrics, served from a background thread.

    GET /healthz   200 {"status": "ok", "checks": {...}}  or  503 {"status": "unhealthy", "checks": {...}}
    GET /metrics   Prometheus text format (OpenMetrics when the scraper asks) from the daemon's registry
    other paths    404;  other methods on these paths  405

It binds to 127.0.0.1 unless configured otherwise: metrics and health are for the local monitoring agent
or a reverse proxy, not the internet. Requests are logged (structlog `http_request`, debug) with method,
path and status only: no client address, query string or headers.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import make_wsgi_app

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from _typeshed import OptExcInfo

    from mailsync.service.metrics import Metrics

log = structlog.get_logger()

DEFAULT_HOST = "127.0.0.1"  # loopback: the ops app is for a local agent or a reverse proxy, not the network
STALE_AFTER_POLLS = 3  # a mailbox is unhealthy once its last success is older than this many poll intervals


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The outcome of the health rule: `ok`, and one line per check ("ok" or why not)."""

    ok: bool
    checks: dict[str, str]


def evaluate_health(
    now: float,
    db_ok: bool,
    last_success: dict[str, float | None],
    poll_interval: float,
    started_at: float,
    *,
    failing: Mapping[str, str] | None = None,
) -> HealthReport:
    """Apply the health rule at Unix time `now`.

    Unhealthy when the database is unreachable, when a mailbox fails for a reason that will not pass by
    itself (`failing` maps it to a short reason, e.g. `auth_failed`: unhealthy at once, until it syncs
    again), or when a mailbox's last success is more than STALE_AFTER_POLLS poll intervals old. A mailbox
    that has never succeeded is unhealthy only once the daemon has been up for more than that long (a
    fresh start is not an outage). Keys of `last_success` are config mailbox names; they become check
    names `mailbox:<name>`.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval}")
    limit = STALE_AFTER_POLLS * poll_interval
    failing = failing or {}
    checks = {"database": "ok" if db_ok else "unreachable"}
    ok = db_ok
    for mailbox, success in sorted(last_success.items()):
        key = f"mailbox:{mailbox}"
        if mailbox in failing:
            checks[key] = f"failing: {failing[mailbox]}"
            ok = False
        elif success is None:
            uptime = now - started_at
            if uptime > limit:
                checks[key] = f"never succeeded in {uptime:.0f}s (limit {limit:.0f}s)"
                ok = False
            else:
                checks[key] = "ok: waiting for the first sync"
        elif now - success > limit:
            checks[key] = f"stale: last success {now - success:.0f}s ago (limit {limit:.0f}s)"
            ok = False
        else:
            checks[key] = "ok"
    return HealthReport(ok=ok, checks=checks)


def make_app(metrics: Metrics, health: Callable[[], HealthReport]) -> WSGIApplication:
    """The WSGI app behind OpsServer, usable on its own (any WSGI server, or a test client)."""
    metrics_app = cast("WSGIApplication", make_wsgi_app(metrics.registry))

    def healthz(_environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            report = health()
        except Exception as exc:  # a health probe that raises means an unhealthy daemon, not a 500
            log.exception("health_check_failed")
            report = HealthReport(ok=False, checks={"health": f"check raised {type(exc).__name__}"})
        body = {"status": "ok" if report.ok else "unhealthy", "checks": report.checks}
        status = "200 OK" if report.ok else "503 Service Unavailable"
        return _reply(start_response, status, json.dumps(body).encode(), "application/json")

    routes: dict[str, WSGIApplication] = {"/healthz": healthz, "/metrics": metrics_app}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        seen: list[str] = []

        def recording_start(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            seen.append(status)
            return start_response(status, headers, exc_info)

        route = routes.get(path)
        result: Iterable[bytes]
        if route is None:
            result = _reply(recording_start, "404 Not Found", b"not found\n")
        elif method != "GET":
            result = _reply(
                recording_start,
                "405 Method Not Allowed",
                b"method not allowed\n",
                extra=[("Allow", "GET")],
            )
        else:
            result = route(environ, recording_start)
        log.debug(
            "http_request", method=method[:16], path=path[:200], status=int(seen[-1][:3]) if seen else None
        )
        return result

    return app


def _reply(
    start_response: StartResponse,
    status: str,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra: list[tuple[str, str]] | None = None,
) -> list[bytes]:
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
    start_response(status, headers + (extra or []))
    return [body]


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck client never holds up stop()

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); an ops port has no use for it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds; a client that stalls mid-request loses its connection, not a thread forever

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Drop http.server's stderr access log (it carries the client address); the app logs instead."""


class OpsServer:
    """The ops HTTP app on `host:port` in a daemon thread; port 0 picks a free port (see `.port`)."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Callable[[], HealthReport]) -> None:
        """Prepare the server; nothing is bound until start()."""
        self.host = host
        self._port = port
        self._app = make_app(metrics, health)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only while started."""
        if self._server is None:
            raise RuntimeError("OpsServer is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The bound port (the one picked by the OS when constructed with port 0); only while started."""
        return self.address[1]

    def start(self) -> None:
        """Bind and serve in a background daemon thread; returns once the socket is listening."""
        if self._server is not None:
            raise RuntimeError("OpsServer is already started")
        server_class = _Server6 if ":" in self.host else _Server
        self._server = make_server(self.host, self._port, self._app, server_class, _QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="mailsync-ops-http",
            daemon=True,
        )
        self._thread.start()
        log.info("ops_server_started", host=self.address[0], port=self.port)

    def stop(self) -> None:
        """Stop serving, close the listening socket (the port is free again) and join the thread."""
        if self._server is None:
            return
        server, thread = self._server, self._thread
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        log.info("ops_server_stopped")

    def __enter__(self) -> Self:
        """Start, for `with OpsServer(...) as server:`."""
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop."""
        self.stop()
