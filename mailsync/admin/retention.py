"""Retention: mail older than `[retention] keep_years` deleted, archive blobs included.

    cutoff = today (UTC) minus keep_years ─> messages dated before it (sent, else captured) ─>
    "retention_applied" event (cutoff, count) appended ─> a batch at a time: rows deleted, commit,
    then the blob files no row names any more (storage/forget.py, the code `forget` deletes with)

CRM records, suggestions and decisions stay (they are the company's record, not mail); threads left
without a message go, their suggestions kept unthreaded. Off unless keep_years is set. Run by
`mailsync retention apply`, or daily by the daemon.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import func, select

from config.errors import ConfigError
from mailsync.pipeline.forgetting import Treated, rewrite_journal
from storage import forget as tombstones
from storage import models as m
from storage.eventlog import EventLog
from storage.journal import Journal
from storage.models import db_time

if TYPE_CHECKING:
    from collections.abc import Callable

    from config.settings import Settings
    from storage.archive import BlobStore
    from storage.repo import Repo

log = structlog.get_logger()
BATCH = 500  # messages per transaction


@dataclass
class RetentionReport:
    keep_years: int
    cutoff: str  # ISO date: mail dated before it goes
    dry_run: bool
    messages_deleted: int = 0
    blobs_deleted: int = 0
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cutoff_for(keep_years: int, now: datetime | None = None) -> datetime:
    """Midnight UTC of today's date `keep_years` ago (29 February becomes the 28th)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    try:
        then = today.replace(year=today.year - keep_years)
    except ValueError:
        then = today.replace(year=today.year - keep_years, day=28)
    return datetime(then.year, then.month, then.day, tzinfo=UTC)


def apply_retention(
    repo: Repo,
    archive: BlobStore,
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    actor: str = "cli",
    progress: Callable[[int], None] | None = None,
) -> RetentionReport:
    """Delete the mail older than the retention period (see the module doc); `progress(n)` per batch."""
    years = settings.retention.keep_years
    if years is None:
        raise ConfigError(
            "retention is off: [retention] keep_years is not set",
            fix="set [retention] keep_years = N in the config (mail older than N years is deleted)",
        )
    cutoff = cutoff_for(years, now)
    report = RetentionReport(keep_years=years, cutoff=cutoff.date().isoformat(), dry_run=dry_run)
    dated = func.coalesce(m.Message.sent_at, m.Message.captured_at)
    old = select(m.Message.id).where(dated < db_time(cutoff)).order_by(m.Message.id)
    with repo.session() as session:
        total = session.scalar(select(func.count()).select_from(old.subquery())) or 0
    if dry_run or not total:
        report.messages_deleted = total
        return report
    event = EventLog(settings.events_dir).append(
        "retention_applied", {"keep_years": years, "cutoff": report.cutoff, "messages": total}, actor=actor
    )
    report.event_id = event.id
    deleted = Treated()
    while True:
        with repo.session() as session:
            ids = list(session.scalars(old.limit(BATCH)))
            gone = tombstones.delete_messages(session, ids)
        report.messages_deleted += len(ids)
        report.blobs_deleted += sum(archive.delete(sha) for sha in sorted(gone))
        deleted.unnamed |= gone
        if progress:
            progress(len(ids))
        if len(ids) < BATCH:
            break
    rewrite_journal(Journal.of(settings), deleted, None)  # a rebuild must not look for the deleted blobs
    log.info("retention_applied", **report.as_dict())
    return report
