"""Logging setup: structlog, JSON off a terminal (or when asked), pretty console on one.

JSON lines carry `timestamp` (ISO 8601, UTC), `level`, `event` and the event's key/values, plus any
context bound with `bind_contextvars` (mailbox, folder, message). Values under keys that look like
secrets are replaced before rendering, whatever the caller passed.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import MutableMapping

import structlog

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


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # sys.stderr looked up per logger, not once: it may be replaced (pytest capture, daemonising).
    return structlog.PrintLogger(sys.stderr)


def configure_logging(*, json: bool, level: str = "info") -> None:
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
