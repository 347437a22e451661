"""`mailsync run`: polls every IMAP mailbox on a schedule, waits with IDLE, serves the web app (web.py).

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

With an `[smtp] host`, a job every minute sends each rep whose digest time has passed today and whose
period has no sent digest (mailsync/approval/send.py), so a restart catches up on the day's digests.
With a `[digest] reply_mailbox`, each sync pass of that mailbox ends by applying and answering the reps'
replies it captured (mailsync/approval/inbox.py).
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
from mailsync.approval.decisions import apply_decision_events
from mailsync.approval.inbox import ReplyInbox
from mailsync.approval.links import LinkSigner
from mailsync.approval.send import DigestSender
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline.followups import flag_unanswered
from mailsync.pipeline.sync import sync_mailbox
from mailsync.pipeline.sync_state import load_cursor
from mailsync.service.health import evaluate_health
from mailsync.service.link_pages import LinkPages
from mailsync.service.stopping import watch_stop
from mailsync.service.web import WebServer, make_app
from storage.eventlog import EventLog

if TYPE_CHECKING:
    from types import FrameType

    from structlog.typing import FilteringBoundLogger as BoundLogger

    from config.settings import MailboxSettings, Settings
    from mailsync.pipeline.ingest import Pipeline
    from mailsync.service.health import HealthReport
    from mailsync.service.metrics import Metrics

log = structlog.get_logger()
DIGEST_EVERY = 60.0  # seconds between looks for reps whose digest is due
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
        self.web = WebServer(
            settings.web.host, settings.web.port, make_app(metrics, self.health, self._links())
        )
        # No [smtp] host: nothing to send digests through (previews still work). With one, a missing
        # link key is a ConfigError now, at start, not at the first digest.
        self.digests = (
            DigestSender(settings, pipeline.repo, LinkSigner.from_settings(settings.web))
            if settings.smtp.host
            else None
        )
        # Reps' replies to digests: read after each sync pass of the reply mailbox, which captured them.
        self.replies = (
            ReplyInbox(
                settings, pipeline.repo, pipeline.archive, pipeline.parser, EventLog(settings.events_dir)
            )
            if settings.digest.reply_mailbox
            else None
        )

    def _links(self) -> LinkPages | None:
        """The digest links' pages, when links can be signed: a key is configured or digests are sent
        (then a key missing is a ConfigError now, at start). Otherwise only /healthz and /metrics."""
        web = self.settings.web
        if not (web.secret_key_env or web.secret_key_file or self.settings.smtp.host):
            return None
        signer = LinkSigner.from_settings(web)
        events = EventLog(self.settings.events_dir)
        return LinkPages(self.pipeline.repo, events, signer, self.settings.digest.locale)

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
        self.catch_up_decisions()
        self.web.start()
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
        if self.digests is not None:
            scheduler.add_job(
                self.digest_job, "interval", seconds=DIGEST_EVERY, next_run_time=datetime.now(UTC),
                id="digests", name="digests: every rep whose time has come",
            )  # fmt: skip
        scheduler.start()
        log.info(
            "daemon_started",
            mailboxes=[m.name for m in self.mailboxes],
            http=f"{self.web.host}:{self.web.port}",
        )
        self.stop.wait()
        finished = threading.Event()
        watch_stop(finished)
        scheduler.shutdown(wait=True)  # lets running polls finish their current batch
        self.web.stop()
        self.pipeline.parser.close()
        finished.set()
        log.info("daemon_stopped")
        return 0

    def catch_up_decisions(self) -> None:
        """Apply decisions the event log holds but the database lacks: a process killed between logging
        a decision and applying it (the log is the record; applying one twice is a no-op)."""
        replay = apply_decision_events(self.pipeline.repo, EventLog(self.settings.events_dir))
        if replay.applied:
            log.info("decisions_caught_up", applied=[r.key for r in replay.applied])

    def no_reply_job(self) -> None:
        """Once a day, `flag_unanswered` at now; a failure is logged and the daemon carries on."""
        pipeline = self.pipeline
        try:
            changed = flag_unanswered(pipeline.repo, pipeline.crm, self.settings.matching, datetime.now(UTC))
        except CaptureError as exc:
            log.error("no_reply_job_failed", error=str(exc), fix=exc.fix)
            return
        log.info("no_reply_job_done", changed=changed)

    def digest_job(self) -> None:
        """Every minute: send the rep and manager digests that are due (failures are logged by the sender)."""
        if self.digests is None:
            return
        try:
            self.digests.send_due()
        except CaptureError as exc:  # the reps could not even be read: the database is away
            log.error("digest_job_failed", error=str(exc), fix=exc.fix)

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
            if self.replies is not None and mailbox.name == self.replies.mailbox:
                self.replies.process()
        finally:
            structlog.contextvars.unbind_contextvars("mailbox")


def _reason(exc: CaptureError) -> str:
    """The error's class name in snake_case (AuthFailed -> auth_failed): short, stable, no personal data."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(exc).__name__).lower()
