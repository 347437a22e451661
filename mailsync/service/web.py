"""The daemon's web app: the confirmation pages of digest links, /healthz and /metrics.

    GET /healthz        200 {"status": "ok", "checks": {...}} or 503 {"status": "unhealthy", "checks": {...}}
    GET /metrics        Prometheus text format (OpenMetrics when the scraper asks) from the daemon's registry
    GET|POST /a/<tok>   digest links (mailsync.service.link_pages), when the daemon can sign links
    other paths         404;  other methods on these paths  405

Flask on waitress, in a background thread of the daemon: the daemon is synchronous and threaded
(APScheduler jobs, SQLAlchemy sessions), so a WSGI app in waitress's thread pool fits it with no event
loop to bridge, and prometheus_client's WSGI app mounts as it is. It binds to 127.0.0.1 unless `[web]
listen` says otherwise: a reverse proxy publishes the link pages, and metrics stay for the local agent.
Requests are logged (structlog `http_request`, debug) with method, path and status only: no client
address, query string or headers, and a link's token is logged as `<token>`.
"""

from __future__ import annotations

import json
import socket
import threading
import traceback
from typing import TYPE_CHECKING, Any, Self, cast

import structlog
from flask import Flask, Response, request
from jinja2 import StrictUndefined
from prometheus_client import make_wsgi_app
from waitress import wasyncore
from waitress.server import BaseWSGIServer, create_server
from werkzeug.exceptions import HTTPException

from config.errors import ConfigError
from mailsync.approval.links import PATH
from mailsync.service.health import HealthReport

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from _typeshed import OptExcInfo
    from werkzeug.wrappers import Response as BaseResponse

    from mailsync.service.link_pages import LinkPages
    from mailsync.service.metrics import Metrics

log = structlog.get_logger()

DEFAULT_HOST = "127.0.0.1"  # loopback: a reverse proxy or the local agent reaches it, not the network
THREADS = 4  # requests served at once; the pages are short database reads and one decision
MAX_BODY = 64 * 1024  # bytes: a confirmation form is a few hundred


def make_app(
    metrics: Metrics, health: Callable[[], HealthReport], links: LinkPages | None = None
) -> WSGIApplication:
    """The WSGI app behind WebServer, usable on its own (any WSGI server, or a test client).

    Without `links` (no key to sign links with) only /healthz and /metrics are served.
    """
    app = Flask(__name__)
    # Every template is HTML and escaped, whatever its file name; a missing variable is an error.
    app.jinja_options = {"autoescape": True, "undefined": StrictUndefined}
    metrics_app = cast("WSGIApplication", make_wsgi_app(metrics.registry))

    def healthz() -> Response:
        try:
            report = health()
        except Exception as exc:  # a health probe that raises means an unhealthy daemon, not a 500
            log.exception("health_check_failed")
            report = HealthReport(ok=False, checks={"health": f"check raised {type(exc).__name__}"})
        body = {"status": "ok" if report.ok else "unhealthy", "checks": report.checks}
        return Response(json.dumps(body), 200 if report.ok else 503, content_type="application/json")

    def prometheus() -> BaseResponse:
        return Response.from_app(metrics_app, request.environ)

    for path, view in (("/healthz", healthz), ("/metrics", prometheus)):
        app.add_url_rule(path, view.__name__, view, methods=["GET"], provide_automatic_options=False)
    if links is not None:
        links.register(app)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _not_allowed)
    app.register_error_handler(Exception, _failed)
    app.after_request(_no_store)
    return _logged(cast("WSGIApplication", app))


def _not_found(_exc: HTTPException) -> Response:
    return Response("not found\n", 404, content_type="text/plain; charset=utf-8")


def _not_allowed(exc: HTTPException) -> Response:
    allowed = getattr(exc, "valid_methods", None) or []
    shown = ", ".join(m for m in allowed if m not in {"HEAD", "OPTIONS"})  # the ones a client means
    return Response(
        "method not allowed\n", 405, content_type="text/plain; charset=utf-8", headers={"Allow": shown}
    )


def _failed(exc: Exception) -> Response:
    """A bug: logged by its type and place, never the path or message (a link's path is its token)."""
    if isinstance(exc, HTTPException):  # Flask's own 4xx: as they are
        return cast("Response", exc.get_response())
    # Where, not what: a bug's message or locals may quote the request, and a link's path is its token.
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    log.error(
        "web_request_failed", error=type(exc).__name__, at=f"{frame.filename}:{frame.lineno}" if frame else ""
    )
    return Response("internal error\n", 500, content_type="text/plain; charset=utf-8")


def _no_store(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")  # health, metrics and pages are all live
    return response


def _logged(app: WSGIApplication) -> WSGIApplication:
    """`app`, logging each request's method, path (a link's token hidden) and status at debug."""

    def logged(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        seen: list[str] = []

        def recording_start(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            seen.append(status)
            return start_response(status, headers, exc_info)

        result = app(environ, recording_start)
        shown = f"{PATH}<token>" if path.startswith(PATH) else path[:200]
        log.debug("http_request", method=method[:16], path=shown, status=int(seen[-1][:3]) if seen else None)
        return result

    return logged


class WebServer:
    """A WSGI app served by waitress on `host:port` from a daemon thread; port 0 picks a free port."""

    def __init__(self, host: str, port: int, app: WSGIApplication) -> None:
        """Prepare the server; nothing is bound until start()."""
        self.host = host
        self._port = port
        self._app = app
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._address: tuple[str, int] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); only while started."""
        if self._address is None:
            raise RuntimeError("WebServer is not started")
        return self._address

    @property
    def port(self) -> int:
        """The bound port (the one picked by the OS when constructed with port 0); only while started."""
        return self.address[1]

    def start(self) -> None:
        """Bind and serve in a background daemon thread; returns once the socket is listening.

        ConfigError when the address cannot be bound (in use, not an address of this machine).
        """
        if self._server is not None:
            raise RuntimeError("WebServer is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            sock = socket.create_server((self.host, self._port), family=family)
        except OSError as exc:
            raise ConfigError(
                f"[web] listen {self.host}:{self._port}: {exc.strerror or exc}",
                fix="pick a free port on an address of this machine in [web] listen, or stop what uses it",
            ) from exc
        socket_map: dict[int, Any] = {}  # waitress's: the listening socket and every connection
        server = create_server(
            self._app,
            map=socket_map,
            sockets=[sock],
            threads=THREADS,
            channel_timeout=30,  # seconds: an idle or stalled client loses its connection, not a thread
            max_request_body_size=MAX_BODY,
            ident="mailsync",
        )
        if not isinstance(server, BaseWSGIServer):  # one socket makes one server
            raise TypeError(type(server).__name__)
        host, port = sock.getsockname()[:2]
        self._server, self._address = server, (str(host), int(port))
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(server, socket_map), name="mailsync-web", daemon=True
        )
        self._thread.start()
        log.info("web_server_started", host=host, port=port)

    def _serve(self, server: BaseWSGIServer, socket_map: dict[int, Any]) -> None:
        """waitress's loop, a turn at a time so stop() ends it; then everything closes in this thread."""
        while not self._stopping.is_set():
            wasyncore.loop(timeout=1.0, map=socket_map, count=1)
        server.task_dispatcher.shutdown()
        wasyncore.close_all(socket_map)

    def stop(self) -> None:
        """Stop serving, close the listening socket (the port is free again) and join the thread."""
        if self._server is None:
            return
        server, thread = self._server, self._thread
        self._server = self._thread = self._address = None
        self._stopping.set()
        server.pull_trigger()  # wakes the loop at once
        if thread is not None:
            thread.join()
        log.info("web_server_stopped")

    def __enter__(self) -> Self:
        """Start, for `with WebServer(...) as server:`."""
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        """Stop."""
        self.stop()
