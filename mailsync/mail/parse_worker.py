"""The parse edge: runs parse_message in a separate, killable process.

Hostile mail makes parsers raise anything, recurse without end or spin in a regex. The worker turns
every failure into a ParseError: an exception in the worker, its death (memory limit, crash), or a
timeout, after which it is killed and replaced. The caller only ever sees a ParsedEmail or ParseError.
Logging is off in the worker, so it sends back whether the fallback parser stood in, and the
daemon side logs it.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import threading
from typing import TYPE_CHECKING, Any, Self

import structlog

from config.errors import ParseError
from mailsync.mail.parse import parse_with_fallback

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from config.settings import ParseLimits
    from mailsync.mail.parse import ParserFailure
    from storage.records import ParsedEmail

log = structlog.get_logger()
_STARTUP_TIMEOUT = 60.0
_MEMORY_LIMIT = 2 * 1024**3  # address space of the worker; a bomb dies there, not in the daemon


def _serve(conn: Connection, limits: ParseLimits) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    logging.disable(logging.WARNING)  # mail-parser warns about every defect of hostile mail
    conn.send(("ready", None))  # start-up (imports) must not count against a message's time limit
    while True:
        try:
            raw, fingerprint, archive_key = conn.recv()
        except EOFError:
            return
        try:
            result: tuple[str, Any] = (
                "ok",
                parse_with_fallback(raw, fingerprint=fingerprint, archive_key=archive_key, limits=limits),
            )
        except ParseError as exc:
            result = ("error", str(exc))
        except BaseException as exc:  # noqa: BLE001 - the parse edge: any failure is this message's fault
            result = ("error", f"parser failed: {type(exc).__name__}: {str(exc)[:300]}")
        del raw
        conn.send(result)


class ParseWorker:
    """One parser process, started on first use, replaced after a timeout or a crash."""

    def __init__(self, limits: ParseLimits, timeout: float = 30.0) -> None:
        self.limits = limits
        self.timeout = timeout
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded daemon
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one request at a time on the pipe; mailbox threads share it

    def _start(self) -> Connection:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child, self.limits), name="mailsync-parse", daemon=True
        )
        self._process.start()
        child.close()
        if not parent.poll(_STARTUP_TIMEOUT) or parent.recv()[0] != "ready":
            self.close()
            raise ParseError("parser process did not start")
        self._conn = parent
        return parent

    def parse(self, raw: bytes, *, fingerprint: str, archive_key: str) -> ParsedEmail:
        """Parse in the worker; ParseError for a bad message, a timeout or a dead worker."""
        with self._lock:
            return self._parse(raw, fingerprint, archive_key)

    def _parse(self, raw: bytes, fingerprint: str, archive_key: str) -> ParsedEmail:
        conn = self._conn or self._start()
        try:
            conn.send((raw, fingerprint, archive_key))
            if not conn.poll(self.timeout):
                self.close()
                raise ParseError(f"parser timed out after {self.timeout:g} s")
            status, value = conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise ParseError("parser process died (memory limit or crash)") from exc
        if status == "ok":
            result: tuple[ParsedEmail, ParserFailure | None] = value
            parsed, failure = result
            if failure is not None:
                log.info("parsed_with_fallback", mail_parser_error=failure.error_class, detail=failure.detail)
            return parsed
        raise ParseError(str(value))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
            self._process = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
