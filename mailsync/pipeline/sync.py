"""One sync pass over a mailbox's folders: fetch what is new, capture it, then process it.

See sync_state.py for the cursor rules. This module runs them against an ImapSource and the
pipeline; the daemon and `mailsync sync --once` both call `sync_mailbox`. Each folder's new mail is
fetched a range ahead (fetcher.py) and captured a batch at a time, its cursor moving in each batch's
commit; when every folder is captured the pending messages are processed (drained), so a pass
returns with its proposals made. A capture-only pass (`sync --once --capture-only`: a first backfill
at the server's pace) leaves them pending, the backlog that the next pass or `mailsync run` drains.
"""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from mailsync.pipeline.capture import CursorAt
from mailsync.pipeline.fetcher import fetch_batches
from mailsync.pipeline.staging import staged_ahead
from mailsync.pipeline.sync_state import Cursor, load_cursor, mark_gone, save_cursor
from storage import mailstore
from storage.leases import verify_lease

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from config.settings import MailboxSettings
    from mailsync.mail.sources.imap import ImapSource
    from mailsync.pipeline.ingest import Pipeline

log = structlog.get_logger()


def _save(pipeline: Pipeline, mailbox: str, folder: str, cursor: Cursor, modseq: int | None) -> None:
    with pipeline.repo.session() as session:
        verify_lease(session, mailbox)  # a daemon whose lease expired moves no cursor (storage/leases.py)
        save_cursor(session, mailbox, folder, cursor, highest_modseq=modseq)


class SyncMetrics(Protocol):
    """What a sync pass reports as it goes (the daemon's Prometheus registry is one)."""

    def fetched(self, mailbox: str, n: int = 1) -> None: ...
    def archived(self, mailbox: str, n: int = 1) -> None: ...
    def quarantined(self, mailbox: str, n: int = 1) -> None: ...
    def succeeded(self, mailbox: str, at: float) -> None: ...
    def lag(self, mailbox: str, seconds: float) -> None: ...
    def backlog(self, messages: int) -> None: ...


@dataclass
class FolderResult:
    folder: str
    fetched: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    gone: int = 0
    resynced: bool = False
    complete: bool = True  # False when stopped (SIGTERM) before the end of the folder
    captured: list[int] = field(default_factory=list)  # ids of the new messages, for their processing

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        if not self.outcomes[outcome]:
            del self.outcomes[outcome]


def sync_mailbox(
    mailbox: MailboxSettings,
    pipeline: Pipeline,
    source: ImapSource,
    *,
    stop: threading.Event | None = None,
    metrics: SyncMetrics | None = None,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
    process: bool = True,
) -> list[FolderResult]:
    """Sync every configured folder of `mailbox` once, then (unless `process` is False) process what is
    pending (also what an earlier, killed pass left). CaptureErrors propagate to the caller."""
    with pipeline.repo.session() as session:
        mailstore.ensure_mailbox(session, mailbox.name, mailbox.owner)
    results = []
    try:
        for folder in source.folders():
            if stop is not None and stop.is_set():
                break
            results.append(
                _sync_folder(
                    mailbox=mailbox,
                    pipeline=pipeline,
                    source=source,
                    folder=folder,
                    stop=stop,
                    metrics=metrics,
                    progress=progress,
                    warm=process,
                )
            )
    finally:
        pipeline.end_capture()
    if not process:
        return results  # captured messages wait as "pending", counted "new"
    # Not covered by the mailbox lease, which it may outlast: it moves no cursor, and `job:drain`
    # fences it (storage/leases.py). The daemon takes the lease again after the pass.
    processed = pipeline.drain(stop=stop)
    # Imported here: a capture-only pass purges nothing (the forgetting code and its tombstones).
    from mailsync.pipeline.forgetting import purge_held  # noqa: PLC0415

    purge_held(pipeline)  # mail of a forgotten person that came in again: deleted or redacted now
    for result in results:  # "new" counts the messages processed; those quarantined are counted apart
        for message_id in result.captured:
            if processed.get(message_id) == "quarantined":
                result.count("new", -1)
                result.count("quarantined")
                if metrics is not None:
                    metrics.quarantined(mailbox.name)
    if metrics is not None:
        with pipeline.repo.session() as session:
            metrics.backlog(mailstore.backlog(session))
        if all(r.complete for r in results):
            metrics.succeeded(mailbox.name, time.time())
    return results


def _sync_folder(
    *,
    mailbox: MailboxSettings,
    pipeline: Pipeline,
    source: ImapSource,
    folder: str,
    stop: threading.Event | None,
    metrics: SyncMetrics | None,
    progress: Callable[[str, int], Callable[[], None]] | None,
    warm: bool = True,
) -> FolderResult:
    bound = log.bind(mailbox=mailbox.name, folder=folder)
    status = source.select(folder)
    result = FolderResult(folder)
    with pipeline.repo.session() as session:
        cursor = load_cursor(session, mailbox.name, folder)
    if cursor.uidvalidity is not None and cursor.uidvalidity != status.uidvalidity:
        bound.warning(
            "uidvalidity_changed", old=cursor.uidvalidity, new=status.uidvalidity, action="full resync"
        )
        result.resynced = True
        cursor = Cursor(status.uidvalidity, 0)
    first = cursor.uidvalidity is None
    uids = source.new_uids(cursor.last_uid, mailbox.since if first else None)
    advance = progress(folder, len(uids)) if progress and uids else None
    done = cursor.last_uid
    with (
        closing(fetch_batches(source, status, uids)) as fetched,
        closing(staged_ahead(fetched, pipeline.prepare)) as batches,
    ):
        for batch, ticket in batches:
            if stop is not None and stop.is_set():
                result.complete = False
                break
            last = max(raw.provenance.uid or 0 for raw in batch)
            captured = pipeline.capture(
                batch,
                mailbox.owner,
                CursorAt(mailbox.name, folder, Cursor(status.uidvalidity, max(done, last))),
                warm=warm,  # parse workers only for a pass that processes
                ticket=ticket,
            )
            done = max(done, last)
            result.fetched += len(batch)
            for item in captured:
                result.count(item.outcome)
                if item.outcome == "new" and item.message_pk is not None:
                    result.captured.append(item.message_pk)
            if metrics is not None:
                metrics.fetched(mailbox.name, len(batch))
                metrics.archived(mailbox.name, len(batch))
                metrics.quarantined(mailbox.name, sum(item.outcome == "quarantined" for item in captured))
            if advance:
                for _ in batch:
                    advance()
    # Every fetched UID up to `done` is committed with the cursor (one commit per batch, in UID order).
    if result.complete:
        done = max([done, *uids]) if uids else done  # UIDs that vanished between SEARCH and FETCH
    # HIGHESTMODSEQ is only true of the folder once the whole pass is in.
    _save(
        pipeline,
        mailbox.name,
        folder,
        Cursor(status.uidvalidity, done),
        status.highest_modseq if result.complete else None,
    )
    with pipeline.repo.session() as session:
        if result.complete:
            result.gone = mark_gone(session, mailbox.name, folder, status.uidvalidity, source.all_uids())
    if metrics is not None and status.uidnext:
        metrics.lag(mailbox.name, 0.0 if result.complete else float(len(uids) - result.fetched))
    bound.info("folder_synced", fetched=result.fetched, gone=result.gone, last_uid=done, **result.outcomes)
    return result
