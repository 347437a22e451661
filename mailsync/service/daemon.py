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

Several processes may run on one PostgreSQL (storage/leases.py): every process schedules every
mailbox, and a poll first takes (or renews) the mailbox's lease; while another process holds it, or
this one holds its share of the mailboxes, the poll does nothing. The lease is renewed by each capture
batch (which verifies it in its own transaction: a batch that finds it lost fails, lease_lost) and
taken again between IDLE slices. The drain that ends a pass is not covered by it (it moves no cursor;
`job:drain` fences processing), so a drain longer than the lease is no fault: the poll takes the lease
again after it, or, when another process has taken the mailbox meanwhile, leaves it to that one and
ends (lease_handed_over). A clean stop gives every lease back. The digest job runs in the process
holding the `job:digests` lease, and the no-reply job once a day across all processes (a `job_run`
row inserted first).

With an `[smtp] host`, a job every minute sends each rep whose digest time has passed today and whose
period has no sent digest (mailsync/approval/send.py), so a restart catches up on the day's digests.
With a `[digest] reply_mailbox`, each sync pass of that mailbox ends by applying and answering the reps'
replies it captured (mailsync/approval/inbox.py).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from config.errors import ArchiveError, CaptureError, LeaseLost, SourceUnavailable, StorageError
from mailsync import faults
from mailsync.admin.retention import apply_retention
from mailsync.admin.webhook import deliver
from mailsync.approval.decisions import apply_decision_events
from mailsync.approval.inbox import ReplyInbox
from mailsync.approval.links import LinkSigner
from mailsync.approval.send import DigestSender
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline.active import skip_inactive
from mailsync.pipeline.followups import flag_unanswered
from mailsync.pipeline.sync import sync_mailbox
from mailsync.pipeline.sync_state import load_cursor
from mailsync.service.health import evaluate_health
from mailsync.service.link_pages import LinkPages
from mailsync.service.stopping import watch_stop
from mailsync.service.web import WebServer, make_app
from storage.eventlog import EventLog
from storage.leases import Leases, claim_run, finish_run, holding

if TYPE_CHECKING:
    from types import FrameType

    from structlog.typing import FilteringBoundLogger as BoundLogger

    from config.settings import MailboxSettings, Settings
    from mailsync.pipeline.ingest import Pipeline
    from mailsync.service.health import HealthReport
    from mailsync.service.metrics import Metrics

log = structlog.get_logger()
DIGEST_EVERY = 60.0  # seconds between looks for reps whose digest is due
SERVICE_JOBS = 5  # heartbeat, no-reply, retention, webhook, digests
WEBHOOK_EVERY = 60.0  # seconds between webhook rounds (new activity queued, due deliveries sent)
IDLE_SLICE = 5.0  # seconds per IDLE wait, so a stop request is seen promptly
STOP_TICK = 0.2  # seconds between the main thread's looks at the stop request
MAX_BACKOFF = 60.0
# The digest job's lease: longer than a run of it (a relay can be slow), so that no other process
# resends a digest this one is still sending; taken over that long after this process died.
DIGEST_LEASE = 300.0
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
        self.leases = Leases(pipeline.repo, settings.daemon.lease_seconds, len(self.mailboxes))
        self._elsewhere: dict[str, float] = {}  # mailbox -> when another process was last seen holding it
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
            last_success={
                m.name: self._last_success(m.name)
                for m in self.mailboxes
                if not self.metrics.is_inactive(m.name)  # not polled by design: no staleness
            },
            poll_interval=self.settings.daemon.poll_interval + self.settings.daemon.jitter,
            started_at=self.started_at,
            failing={m.name: f.reason for m in self.mailboxes if (f := self._failures.get(m.name))},
        )

    def _last_success(self, mailbox: str) -> float | None:
        """This process's last sync of `mailbox`, or when another process was last found holding it
        (that one reports its own failures)."""
        times = [t for t in (self.metrics.last_success(mailbox), self._elsewhere.get(mailbox)) if t]
        return max(times, default=None)

    def request_stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        self.stop.set()

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        if threading.current_thread() is threading.main_thread():  # only there can Python take signals
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self.request_stop)
        self.catch_up_decisions()
        self.heartbeat()  # counted among the live processes before the first poll (a failure is logged)
        self.web.start()
        # A poll holds its thread while it IDLEs (the whole interval): one thread per mailbox, plus the
        # jobs', or the 11th mailbox would wait for APScheduler's default pool of 10 to free a thread.
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(len(self.mailboxes) + SERVICE_JOBS)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
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
        scheduler.add_job(
            self.heartbeat, "interval", seconds=self.settings.daemon.lease_seconds / 3,
            id="heartbeat", name="leases: this process is alive",
        )  # fmt: skip
        scheduler.add_job(  # lost signals from follow-ups nobody answered: once a day, before the digests
            self.no_reply_job, "cron", hour=6, minute=15, jitter=600, id="no-reply",
            name="lost signals: unanswered follow-ups",
        )  # fmt: skip
        if self.settings.retention.keep_years:
            scheduler.add_job(
                self.retention_job, "cron", hour=3, minute=30, jitter=600, id="retention",
                name="retention: mail older than keep_years",
            )  # fmt: skip
        if self.settings.webhook.url:
            scheduler.add_job(
                self.webhook_job, "interval", seconds=WEBHOOK_EVERY, next_run_time=datetime.now(UTC),
                id="webhook", name="webhook: activity and decisions to the other CRM",
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
            holder=self.leases.holder,
        )
        # Not stop.wait(): a SIGTERM the kernel hands to another thread runs its handler only when this
        # thread next runs Python, which a lock wait never does (python/cpython#85300); and the
        # handler's stop.set() takes the Event's lock, which must never be this thread's at that moment.
        while not self.stop.is_set():
            time.sleep(STOP_TICK)
        finished = threading.Event()
        watch_stop(finished)
        scheduler.shutdown(wait=True)  # lets running polls finish their current batch
        with contextlib.suppress(StorageError):  # unreachable: the leases expire by themselves
            self.leases.release_all()
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

    def heartbeat(self) -> None:
        try:
            self.leases.heartbeat()
        except StorageError as exc:  # the polls say so too; the member row expires meanwhile
            log.warning("heartbeat_failed", error=str(exc))

    def no_reply_job(self) -> None:
        """Once a day, `flag_unanswered` at now, in one process (the first to claim the day); a failure
        is logged and the daemon carries on. A run killed half-way is not retried that day: the next
        day's run looks at the same follow-ups again."""
        pipeline = self.pipeline
        now = datetime.now(UTC)
        period = now.date().isoformat()
        try:
            with pipeline.repo.session() as session:
                if not claim_run(session, "no-reply", period, self.leases.holder):
                    log.info("no_reply_job_skipped", period=period, reason="run by another process")
                    return
            changed = flag_unanswered(pipeline.repo, pipeline.crm, self.settings.matching, now)
            with pipeline.repo.session() as session:
                finish_run(session, "no-reply", period)
        except CaptureError as exc:
            log.error("no_reply_job_failed", error=str(exc), fix=exc.fix)
            return
        log.info("no_reply_job_done", changed=changed)

    def retention_job(self) -> None:
        """Once a day, in one process (the first to claim the day): delete mail older than
        [retention] keep_years, archive included (admin/retention.py); a failure is logged."""
        period = datetime.now(UTC).date().isoformat()
        try:
            with self.pipeline.repo.session() as session:
                if not claim_run(session, "retention", period, self.leases.holder):
                    return
            report = apply_retention(
                self.pipeline.repo, self.pipeline.archive, self.settings, actor="mailsync"
            )
            with self.pipeline.repo.session() as session:
                finish_run(session, "retention", period)
        except CaptureError as exc:
            log.error("retention_job_failed", error=str(exc), fix=exc.fix)
            return
        log.info("retention_job_done", messages=report.messages_deleted, blobs=report.blobs_deleted)

    def webhook_job(self) -> None:
        """Every minute: queue new activity and decisions and POST what is due (admin/webhook.py). Any
        number of processes may run it: a delivery is claimed before it is sent, and queued once."""
        try:
            deliver(self.pipeline.repo, self.settings.webhook)
        except CaptureError as exc:  # the database or the secret is away: the next minute tries again
            log.error("webhook_job_failed", error=str(exc), fix=exc.fix)

    def digest_job(self) -> None:
        """Every minute: send the rep and manager digests that are due (failures are logged by the sender),
        in the one process holding the digest job's lease, so that one process walks the reps. Each
        rep's send also holds that rep's lease (approval/send.py): that is what keeps a `digest --send`
        beside the daemon, or a daemon whose job lease ran out, from resending a digest being sent."""
        if self.digests is None:
            return
        try:
            if self.leases.job("digests", max(DIGEST_LEASE, self.settings.daemon.lease_seconds)) is None:
                return
            self.digests.send_due()
        except CaptureError as exc:  # the reps could not even be read: the database is away
            log.error("digest_job_failed", error=str(exc), fix=exc.fix)

    def poll(self, mailbox: MailboxSettings) -> None:
        """One scheduled poll: sync, then IDLE until the interval ends; retry with backoff on faults
        that pass by themselves (server away, archive disk full, database locked or down); skipped
        while a mailbox that fails for good waits out its backoff."""
        if skip_inactive(self.pipeline.repo, mailbox, self.metrics):  # its owner left (pipeline/active.py)
            self._failures.pop(mailbox.name, None)  # a departed rep's disabled login is no outage
            return
        failure = self._failures.get(mailbox.name)
        if failure is not None and not failure.due():
            return
        bound = log.bind(mailbox=mailbox.name)
        deadline = time.monotonic() + self.settings.daemon.poll_interval
        backoff = 1.0
        while True:  # a database locked or away when the lease is asked for: retry, backing off
            try:
                lease = self.leases.mailbox(mailbox.name)
                break
            except StorageError as exc:
                self.metrics.error(mailbox.name, exc)
                self._paused(bound, mailbox, exc, backoff)
                if self.stop.wait(backoff) or time.monotonic() >= deadline:
                    return
                backoff = min(backoff * 2, MAX_BACKOFF)
        if lease is None:  # another process syncs it (or will: this one has its share)
            self._elsewhere[mailbox.name] = time.time()
            return
        if self._elsewhere.pop(mailbox.name, None) is not None:
            bound.info("lease_taken", fence=lease.token)
        try:
            with holding(lease):
                self._poll(mailbox, bound)
        except LeaseLost as exc:
            bound.warning("lease_lost", error=str(exc), fence=lease.token)

    def _poll(self, mailbox: MailboxSettings, bound: BoundLogger) -> None:
        deadline = time.monotonic() + self.settings.daemon.poll_interval
        backoff = 1.0
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                if backoff > 1.0 and not self.leases.renew():  # it may have run out during the wait
                    bound.info("lease_handed_over", reason="another process took the mailbox")
                    return
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
            except LeaseLost:
                raise
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
        idle_slice = min(IDLE_SLICE, self.settings.daemon.lease_seconds / 3)  # renewed between slices
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if not self.leases.renew():  # the pass's drain may have outlasted it: see the module doc
                log.info("lease_handed_over", mailbox=mailbox.name, reason="another process took the mailbox")
                return
            if not news:
                faults.point("before_idle")
                news = source.idle_wait(min(idle_slice, left))
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
