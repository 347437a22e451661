"""Prometheus metrics of the capture daemon, in a registry of their own.

Every metric that has labels is labelled by `mailbox`: the mailbox's NAME from the config (`dana`), which
the config restricts to `[A-Za-z0-9_.-]`. Labels never carry email addresses, subjects, folder names or any
other personal data or message content: a metrics endpoint is scraped, stored and graphed far beyond the
reach of the archive's access rules. Errors add `kind`, the exception's class name, never its message.

The registry is owned by the `Metrics` object, not the process-wide default one, so several daemons (or
tests) in one process do not collide. `last_success` is kept beside the gauge for the health check.

    mailsync_messages_fetched_total{mailbox}        counter  raw messages received from a source
    mailsync_messages_archived_total{mailbox}       counter  messages written to the archive
    mailsync_messages_quarantined_total{mailbox}    counter  messages that failed to parse (kept archived)
    mailsync_sync_errors_total{mailbox,kind}        counter  failed sync attempts, by exception class
    mailsync_last_success_timestamp_seconds{mailbox} gauge   Unix time of the last complete sync
    mailsync_sync_lag_seconds{mailbox}              gauge    how far the mailbox's sync is behind
    mailsync_mailbox_up{mailbox}                    gauge    1 after a complete sync, 0 while failing for good
    mailsync_mailbox_inactive{mailbox}              gauge    1 while not polled: its owner left
    mailsync_processing_backlog_messages            gauge    captured messages waiting to be processed
    mailsync_up                                     gauge    1 while the daemon runs
    mailsync_info{version}                          info     the running version
"""

from __future__ import annotations

import threading
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

if TYPE_CHECKING:
    from collections.abc import Iterable


def _version() -> str:
    try:
        return version("mailsync")
    except PackageNotFoundError:
        return "unknown"


class Metrics:
    """The daemon's counters and gauges; label values are config mailbox names only (see module doc)."""

    def __init__(self, mailboxes: Iterable[str] = ()) -> None:
        """Create the metrics in a new registry; `mailboxes` get counters exported at 0 from the start."""
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._fetched = Counter(
            "mailsync_messages_fetched", "Raw messages received from a source.", ["mailbox"], registry=reg
        )
        self._archived = Counter(
            "mailsync_messages_archived", "Messages written to the archive.", ["mailbox"], registry=reg
        )
        self._quarantined = Counter(
            "mailsync_messages_quarantined",
            "Messages that failed to parse and were quarantined (they stay in the archive).",
            ["mailbox"],
            registry=reg,
        )
        self._errors = Counter(
            "mailsync_sync_errors",
            "Failed sync attempts, by exception class name.",
            ["mailbox", "kind"],
            registry=reg,
        )
        self._last_success = Gauge(
            "mailsync_last_success_timestamp_seconds",
            "Unix time of the mailbox's last complete sync.",
            ["mailbox"],
            registry=reg,
        )
        self._lag = Gauge(
            "mailsync_sync_lag_seconds",
            "How far the mailbox's sync is behind, in seconds.",
            ["mailbox"],
            registry=reg,
        )
        self._mailbox_up = Gauge(
            "mailsync_mailbox_up",
            "1 after a complete sync; 0 while the mailbox fails for a reason that will not pass by itself "
            "(bad login, missing folder: see /healthz).",
            ["mailbox"],
            registry=reg,
        )
        self._inactive = Gauge(
            "mailsync_mailbox_inactive",
            "1 while the mailbox is not polled because its owner is an inactive (departed) rep.",
            ["mailbox"],
            registry=reg,
        )
        self._skipped: set[str] = set()
        self._backlog = Gauge(
            "mailsync_processing_backlog_messages",
            "Captured messages waiting for the processing stage (parse, match, thread, propose).",
            registry=reg,
        )
        self._up = Gauge("mailsync_up", "1 while the daemon is running.", registry=reg)
        self._up.set(1)
        Info("mailsync", "The running mailsync version.", registry=reg).info({"version": _version()})
        self._lock = threading.Lock()
        self._successes: dict[str, float] = {}
        for mailbox in mailboxes:
            for counter in (self._fetched, self._archived, self._quarantined):
                counter.labels(mailbox)

    def fetched(self, mailbox: str, n: int = 1) -> None:
        """Count `n` raw messages received from `mailbox`'s source."""
        self._fetched.labels(mailbox).inc(n)

    def archived(self, mailbox: str, n: int = 1) -> None:
        """Count `n` messages of `mailbox` written to the archive."""
        self._archived.labels(mailbox).inc(n)

    def quarantined(self, mailbox: str, n: int = 1) -> None:
        """Count `n` messages of `mailbox` quarantined by the parser."""
        self._quarantined.labels(mailbox).inc(n)

    def error(self, mailbox: str, exc: BaseException) -> None:
        """Count a failed sync of `mailbox`; only the exception's class name is recorded, never its text."""
        self._errors.labels(mailbox, type(exc).__name__).inc()

    def succeeded(self, mailbox: str, at: float) -> None:
        """Record a complete sync of `mailbox` finished at Unix time `at`."""
        with self._lock:
            self._successes[mailbox] = at
        self._last_success.labels(mailbox).set(at)
        self._mailbox_up.labels(mailbox).set(1)

    def failing(self, mailbox: str) -> None:
        """Mark `mailbox` as failing until its next complete sync (`mailsync_mailbox_up` 0)."""
        self._mailbox_up.labels(mailbox).set(0)

    def inactive(self, mailbox: str, skipped: bool) -> bool:
        """Record whether `mailbox` is skipped for an inactive owner; True when that changed."""
        self._inactive.labels(mailbox).set(int(skipped))
        with self._lock:
            changed = (mailbox in self._skipped) != skipped
            (self._skipped.add if skipped else self._skipped.discard)(mailbox)
        return changed

    def is_inactive(self, mailbox: str) -> bool:
        """Whether `mailbox` is skipped for an inactive owner (the health check leaves it out)."""
        with self._lock:
            return mailbox in self._skipped

    def lag(self, mailbox: str, seconds: float) -> None:
        """Set how far `mailbox`'s sync is behind, in seconds (0 when caught up)."""
        self._lag.labels(mailbox).set(max(0.0, seconds))

    def backlog(self, messages: int) -> None:
        """Set how many captured messages wait for the processing stage (all mailboxes)."""
        self._backlog.set(messages)

    def last_success(self, mailbox: str) -> float | None:
        """Unix time of `mailbox`'s last complete sync, or None if it has not succeeded in this process."""
        with self._lock:
            return self._successes.get(mailbox)

    def stopping(self) -> None:
        """Mark the daemon as shutting down (`mailsync_up` 0)."""
        self._up.set(0)
