"""`mailsync run`: polls every IMAP mailbox on a schedule, waits with IDLE, serves /healthz and /metrics.

One APScheduler interval job per mailbox (max one instance, missed runs coalesced). A job connects,
runs a sync pass, then waits for new mail with IDLE (in short slices, so SIGTERM is noticed) until
its interval is over; a fault that passes by itself (dropped connection, archive disk full, database
locked or down) is logged once and retried with exponential backoff inside the job, and nothing is
lost meanwhile: a message is committed whole or not at all and the cursor only covers committed
ones. A fault that will not pass by itself (refused login, missing folder) makes the mailbox unhealthy
at once (/healthz 503 names it and the reason) and is retried at the next poll, then every 2, 4, ...
polls up to an hour: never faster than the poll interval, never hammering a server that refuses the
password. One mailbox failing never touches the others. SIGTERM/SIGINT: the current message finishes
and commits, cursors are saved, the scheduler stops, exit code 0.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from config.errors import ArchiveError, CaptureError, SourceUnavailable, StorageError
from mailsync import faults
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline.followups import flag_unanswered
from mailsync.pipeline.sync import sync_mailbox
from mailsync.pipeline.sync_state import load_cursor
from mailsync.service.http_app import OpsServer, evaluate_health

if TYPE_CHECKING:
    from types import FrameType

    from structlog.typing import FilteringBoundLogger as BoundLogger

    from config.settings import MailboxSettings, Settings
    from mailsync.pipeline.ingest import Pipeline
    from mailsync.service.http_app import HealthReport
    from mailsync.service.metrics import Metrics

log = structlog.get_logger()
IDLE_SLICE = 5.0  # seconds per IDLE wait, so a stop request is seen promptly
MAX_BACKOFF = 60.0
MAX_RETRY_WAIT = 3600.0  # seconds: the longest wait between attempts on a mailbox that fails for good
# Faults that clear by themselves: the poll retries them with backoff instead of waiting a whole interval.
_FAULT_EVENTS: dict[type[CaptureError], str] = {
    SourceUnavailable: "mailbox_unavailable",
    ArchiveError: "archive_unavailable",
    StorageError: "database_unavailable",
}
TRANSIENT = tuple(_FAULT_EVENTS)


@dataclass(slots=True)
class Failure:
    """A mailbox failing for a reason that will not pass by itself, and its backoff counted in polls:
    attempts 1, 2, 4, ... polls apart (up to a cap), so never more often than the poll interval."""

    reason: str  # short and stable, for /healthz: auth_failed, source_error, config_error...
    polls: int = 1  # polls from this attempt to the next
    waiting: int = 0  # polls still to let pass before the next attempt

    def again(self, cap: int) -> None:
        """Another attempt failed the same way: double the wait, up to `cap` polls."""
        self.polls = min(self.polls * 2, cap)
        self.waiting = self.polls - 1

    def due(self) -> bool:
        """Asked once per scheduled poll: whether this poll tries the mailbox again."""
        if self.waiting:
            self.waiting -= 1
            return False
        return True


class Daemon:
    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.stop = threading.Event()
        self.started_at = time.time()
        self.mailboxes = [m for m in settings.mailboxes if m.host]
        self._faults: dict[str, str] = {}  # mailbox -> the event logged when its current fault began
        # Written only by the mailbox's own poll (one at a time), read by /healthz with single lookups.
        self._failures: dict[str, Failure] = {}
        self._max_polls = max(1, int(MAX_RETRY_WAIT // settings.daemon.poll_interval))
        self.ops = OpsServer(settings.web.host, settings.web.port, metrics, self.health)

    def health(self) -> HealthReport:
        try:
            with self.pipeline.repo.session() as session:
                session.execute(text("SELECT 1"))
            db_ok = True
        except StorageError:
            db_ok = False
        return evaluate_health(
            now=time.time(),
            db_ok=db_ok,
            last_success={m.name: self.metrics.last_success(m.name) for m in self.mailboxes},
            poll_interval=self.settings.daemon.poll_interval + self.settings.daemon.jitter,
            started_at=self.started_at,
            failing={m.name: f.reason for m in self.mailboxes if (f := self._failures.get(m.name))},
        )

    def request_stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stop.set()

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        if threading.current_thread() is threading.main_thread():  # only there can Python take signals
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.request_stop)
        self.ops.start()
        scheduler = BackgroundScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        )
        for mailbox in self.mailboxes:
            scheduler.add_job(
                self.poll,
                "interval",
                args=[mailbox],
                seconds=self.settings.daemon.poll_interval,
                jitter=self.settings.daemon.jitter,
                next_run_time=datetime.now(UTC),
                id=mailbox.name,
                name=f"poll {mailbox.name}",
            )
        scheduler.add_job(  # lost signals from follow-ups nobody answered: once a day, before the digests
            self.no_reply_job, "cron", hour=6, minute=15, jitter=600, id="no-reply",
            name="lost signals: unanswered follow-ups",
        )  # fmt: skip
        scheduler.start()
        log.info(
            "daemon_started",
            mailboxes=[m.name for m in self.mailboxes],
            http=f"{self.ops.host}:{self.ops.port}",
        )
        self.stop.wait()
        scheduler.shutdown(wait=True)  # lets running polls finish their current message
        self.ops.stop()
        self.pipeline.parser.close()
        log.info("daemon_stopped")
        return 0

    def no_reply_job(self) -> None:
        """Once a day, `flag_unanswered` at now; a failure is logged and the daemon carries on."""
        pipeline = self.pipeline
        try:
            changed = flag_unanswered(pipeline.repo, pipeline.crm, self.settings.matching, datetime.now(UTC))
        except CaptureError as exc:
            log.error("no_reply_job_failed", error=str(exc), fix=exc.fix)
            return
        log.info("no_reply_job_done", changed=changed)

    def poll(self, mailbox: MailboxSettings) -> None:
        """One scheduled poll: sync, then IDLE until the interval ends; retry with backoff on faults
        that pass by themselves (server away, archive disk full, database locked or down); skipped
        while a mailbox that fails for good waits out its backoff."""
        failure = self._failures.get(mailbox.name)
        if failure is not None and not failure.due():
            return
        bound = log.bind(mailbox=mailbox.name)
        deadline = time.monotonic() + self.settings.daemon.poll_interval
        backoff = 1.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                with ImapSource.configured(mailbox, self.settings) as source:
                    self._sync(mailbox, source)
                    backoff = 1.0
                    self._recovered(bound, mailbox)
                    self._idle(mailbox, source, deadline)
            except TRANSIENT as exc:
                self.metrics.error(mailbox.name, exc)
                self._paused(bound, mailbox, exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except CaptureError as exc:
                self.metrics.error(mailbox.name, exc)
                self._failed(bound, mailbox, exc)
                return
            else:
                return

    def _paused(
        self, bound: BoundLogger, mailbox: MailboxSettings, exc: CaptureError, backoff: float
    ) -> None:
        """One clear line when a fault starts (or changes); quiet retries until it clears."""
        event = next(name for kind, name in _FAULT_EVENTS.items() if isinstance(exc, kind))
        if self._faults.get(mailbox.name) == event:
            bound.debug(event, error=str(exc), retry_in=backoff)
            return
        self._faults[mailbox.name] = event
        bound.error(event, error=str(exc), fix=exc.fix, retry_in=backoff, retrying="with backoff up to 60 s")

    def _failed(self, bound: BoundLogger, mailbox: MailboxSettings, exc: CaptureError) -> None:
        """One clear line when a lasting failure starts (or changes); then quiet retries, backing off."""
        reason = _reason(exc)
        interval = self.settings.daemon.poll_interval
        failure = self._failures.get(mailbox.name)
        if failure is not None and failure.reason == reason:
            failure.again(self._max_polls)
            bound.debug("mailbox_failed", reason=reason, error=str(exc), retry_in=failure.polls * interval)
            return
        self._failures[mailbox.name] = Failure(reason)
        self.metrics.failing(mailbox.name)
        bound.error(
            "mailbox_failed",
            reason=reason,
            error=str(exc),
            fix=exc.fix,
            retry_in=interval,
            retrying=f"with backoff up to {MAX_RETRY_WAIT:.0f} s",
        )

    def _recovered(self, bound: BoundLogger, mailbox: MailboxSettings) -> None:
        fault = self._faults.pop(mailbox.name, None)
        failure = self._failures.pop(mailbox.name, None)
        if failure is not None or fault is not None:
            bound.info("mailbox_recovered", after=failure.reason if failure else fault)

    def _idle(self, mailbox: MailboxSettings, source: ImapSource, deadline: float) -> None:
        """Until the poll's interval ends: IDLE on INBOX, sync when mail arrives.

        IDLE announces only what arrives after the session's last look at the folder, so mail that came
        during a sync pass, already in the view of the SELECT that follows it, is found by checking INBOX
        against its cursor first. Mail that comes after that look and before IDLE starts (or between two
        IDLEs) is still announced: Dovecot sends it with its reply to DONE, at the end of the slice, not
        when IDLE starts (tests/integration/test_daemon.py checks this), and idle_wait reads that reply.
        """
        if not (self.settings.daemon.idle and "IDLE" in source.capabilities):
            return
        news = self._inbox_behind(mailbox, source)
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if not news:
                faults.point("before_idle")
                news = source.idle_wait(min(IDLE_SLICE, left))
            if news:
                self._sync(mailbox, source)
                news = self._inbox_behind(mailbox, source)

    def _inbox_behind(self, mailbox: MailboxSettings, source: ImapSource) -> bool:
        """Select INBOX after a sync pass; True when it holds mail that pass did not capture."""
        faults.point("after_sync")
        status = source.select("INBOX")
        with self.pipeline.repo.session() as session:
            cursor = load_cursor(session, mailbox.name, status.name)
        if cursor.uidvalidity is None:
            return False  # INBOX is not among the folders synced, so nothing there is awaited
        return cursor.uidvalidity != status.uidvalidity or source.has_new(cursor.last_uid)

    def _sync(self, mailbox: MailboxSettings, source: ImapSource) -> None:
        structlog.contextvars.bind_contextvars(mailbox=mailbox.name)
        try:
            sync_mailbox(mailbox, self.pipeline, source, stop=self.stop, metrics=self.metrics)
        finally:
            structlog.contextvars.unbind_contextvars("mailbox")


def _reason(exc: CaptureError) -> str:
    """The error's class name in snake_case (AuthFailed -> auth_failed): short, stable, no personal data."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(exc).__name__).lower()
