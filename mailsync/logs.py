"""Logging setup: structlog, JSON off a terminal (or when asked), pretty console on one.

JSON lines carry `timestamp` (ISO 8601, UTC), `level`, `event` and the event's key/values, plus any
context bound with `bind_contextvars` (mailbox, folder, message). Values under keys that look like
secrets are replaced before rendering, whatever the caller passed.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import MutableMapping

_SECRET_KEYS = ("password", "passwd", "secret", "token", "api_key", "authorization")


def _redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def wants_json(flag: bool, log_format: str = "auto") -> bool:
    """JSON when --log-json, MAILSYNC_LOG_FORMAT=json or log_format=json, or stderr is not a terminal."""
    chosen = os.environ.get("MAILSYNC_LOG_FORMAT", log_format).lower()
    if flag or chosen == "json":
        return True
    if chosen == "console":
        return False
    return not sys.stderr.isatty()


# One lock for every line written to stderr: structlog's events and the standard library's records come
# from different threads (the daemon's polls, APScheduler, the web app), and two writers with their own
# locks can interleave one line into another, which breaks a JSON stream.
_WRITE = threading.RLock()


class _StderrLogger:
    """structlog's logger: one whole line per event, under the shared lock, to whatever sys.stderr is at
    the time (it may be replaced: pytest capture, daemonising)."""

    def msg(self, message: str) -> None:
        with _WRITE:
            stream = sys.stderr
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = err = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time of the record, under the same lock as _StderrLogger."""

    def __init__(self) -> None:
        super().__init__()

    def createLock(self) -> None:  # noqa: N802 - logging's name
        self.lock = _WRITE

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(*, json: bool, level: str = "info") -> None:
    """structlog for our events, and the standard library's loggers (APScheduler, Alembic, mail-parser)
    rendered by the same processors, so a JSON stream never holds a plain-text line."""
    import structlog  # noqa: PLC0415 - ~0.1 s (it loads rich's tracebacks): not for `mailsync --help`

    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:  # configured again: replace
        root.removeHandler(old)
    # Libraries speak at info about their own routine (Alembic per migration, APScheduler per job run).
    handler.setLevel(max(numeric, logging.WARNING))
    root.setLevel(handler.level)
    root.addHandler(handler)
    # mail-parser warns about every part it leaves to us ("calendar", "rfc822-headers"): routine, not news.
    logging.getLogger("mailparser").setLevel(max(numeric, logging.ERROR))
