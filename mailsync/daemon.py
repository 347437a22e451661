"""`mailsync run`: polls every IMAP mailbox on a schedule, waits with IDLE, serves /healthz and /metrics.

One APScheduler interval job per mailbox (max one instance, missed runs coalesced). A job connects,
runs a sync pass, then waits for new mail with IDLE (in short slices, so SIGTERM is noticed) until
its interval is over; a fault that passes by itself (dropped connection, archive disk full, database
locked or down) is logged once and retried with exponential backoff inside the job, and nothing is
lost meanwhile: a message is committed whole or not at all and the cursor only covers committed
ones. One mailbox failing never touches the others. SIGTERM/SIGINT: the current message finishes and commits,
cursors are saved, the scheduler stops, exit code 0.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from config.errors import ArchiveError, CaptureError, SourceUnavailable, StorageError
from mailsync.http_app import OpsServer, evaluate_health
from mailsync.sources.imap import ImapSource
from mailsync.sync import sync_mailbox

if TYPE_CHECKING:
    from types import FrameType

    from structlog.typing import FilteringBoundLogger as BoundLogger

    from config.settings import MailboxSettings, Settings
    from mailsync.http_app import HealthReport
    from mailsync.metrics import Metrics
    from mailsync.pipeline import Pipeline

log = structlog.get_logger()
IDLE_SLICE = 5.0  # seconds per IDLE wait, so a stop request is seen promptly
MAX_BACKOFF = 60.0
# Faults that clear by themselves: the poll retries them with backoff instead of waiting a whole interval.
_FAULT_EVENTS: dict[type[CaptureError], str] = {
    SourceUnavailable: "mailbox_unavailable",
    ArchiveError: "archive_unavailable",
    StorageError: "database_unavailable",
}
TRANSIENT = tuple(_FAULT_EVENTS)


class Daemon:
    def __init__(self, settings: Settings, pipeline: Pipeline, metrics: Metrics) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.metrics = metrics
        self.stop = threading.Event()
        self.started_at = time.time()
        self.mailboxes = [m for m in settings.mailboxes if m.host]
        self._faults: dict[str, str] = {}  # mailbox -> the event logged when its current fault began
        self.ops = OpsServer(settings.daemon.http_host, settings.daemon.http_port, metrics, self.health)

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
                next_run_time=_now(),
                id=mailbox.name,
                name=f"poll {mailbox.name}",
            )
        from mailsync.followups import daily_job  # noqa: PLC0415 - scheduled here, nowhere else

        scheduler.add_job(  # lost signals from follow-ups nobody answered: once a day, before the digests
            daily_job, "cron", args=[self.pipeline], hour=6, minute=15, jitter=600, id="no-reply",
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

    def poll(self, mailbox: MailboxSettings) -> None:
        """One scheduled poll: sync, then IDLE until the interval ends; retry with backoff on faults
        that pass by themselves (server away, archive disk full, database locked or down)."""
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
                bound.error("mailbox_failed", error=str(exc), fix=exc.fix)
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

    def _recovered(self, bound: BoundLogger, mailbox: MailboxSettings) -> None:
        fault = self._faults.pop(mailbox.name, None)
        if fault is not None:
            bound.info("mailbox_recovered", after=fault)

    def _idle(self, mailbox: MailboxSettings, source: ImapSource, deadline: float) -> None:
        """Until the poll's interval ends: IDLE on INBOX, sync when the server announces mail."""
        if not (self.settings.daemon.idle and "IDLE" in source.capabilities):
            return
        while not self.stop.is_set() and time.monotonic() < deadline:
            source.select("INBOX")
            if source.idle_wait(min(IDLE_SLICE, max(0.0, deadline - time.monotonic()))):
                self._sync(mailbox, source)

    def _sync(self, mailbox: MailboxSettings, source: ImapSource) -> None:
        structlog.contextvars.bind_contextvars(mailbox=mailbox.name)
        try:
            sync_mailbox(mailbox, self.pipeline, source, stop=self.stop, metrics=self.metrics)
        finally:
            structlog.contextvars.unbind_contextvars("mailbox")


def _now() -> object:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.now(UTC)
