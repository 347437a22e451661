"""Replay: archived mail processed again (after a change of rules, CRM or model), no server touched.

    select (mailbox, since, stage) ─> put back in the queue, a chunk per transaction, marker moved
    in each ─> drain the queue (process.py, as capture leaves it) ─> summary

Where a replay starts (`--from-stage`):

    parse    every selected message, quarantined ones too: parsed, matched, threaded, proposed afresh
    thread   parsed messages: threaded afresh (threads are found again by their key), matched, proposed
    match    parsed messages: matched and proposed afresh, each kept in its thread

Processing reads everything from the archive and the database as they are, so a second replay of the
same selection gives the same database as the first. Decisions stand: processing never changes a
decided proposal, and an approved link lives on its thread, which replay keeps. Killed (even by
SIGKILL), a replay started again with the same selection goes on where it stopped: the queued
messages are still pending, and the marker (storage/replaystore.py) says how far the queuing went.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from datetime import time as day_time
from typing import TYPE_CHECKING, Literal

import structlog

from mailsync.pipeline.forgetting import purge_held
from storage import mailstore, replaystore

if TYPE_CHECKING:
    from mailsync.pipeline.ingest import Pipeline

log = structlog.get_logger()
Stage = Literal["parse", "thread", "match"]
STAGES: tuple[Stage, ...] = ("parse", "thread", "match")
CHUNK = 500  # messages queued per transaction
POLL_SECONDS = 0.5  # how often the drain's progress is read from the queue's length

Advance = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which archived messages a replay processes again, and from which stage."""

    mailbox: str | None = None
    since: date | None = None
    from_stage: Stage = "parse"

    @property
    def statuses(self) -> tuple[str, ...]:
        return ("parsed", "pending", "quarantined") if self.from_stage == "parse" else ("parsed", "pending")

    @property
    def since_at(self) -> datetime | None:
        return datetime.combine(self.since, day_time()) if self.since else None  # naive UTC midnight

    @property
    def key(self) -> str:
        """Stable across runs: what the resume marker is named by."""
        text = json.dumps([self.mailbox, self.since.isoformat() if self.since else None, self.from_stage])
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class ReplayReport:
    mailbox: str | None
    since: str | None
    from_stage: str
    dry_run: bool
    selected: int = 0  # messages the selection names (still to queue, when resumed)
    requeued: int = 0  # put back in the queue by this run
    resumed: bool = False  # a killed replay of the same selection was continued
    processed: int = 0  # taken by the drain: requeued ones, and whatever else was pending
    quarantined: int = 0
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def replay(
    pipeline: Pipeline,
    selection: Selection,
    *,
    dry_run: bool = False,
    on_queue: Advance | None = None,
    on_drain: Advance | None = None,
) -> ReplayReport:
    """Queue the selected messages again (resuming a killed replay of the same selection), then
    process the queue; `dry_run` only counts what would be queued."""
    started = time.monotonic()
    repo = pipeline.repo
    report = ReplayReport(
        selection.mailbox,
        selection.since.isoformat() if selection.since else None,
        selection.from_stage,
        dry_run,
    )
    with repo.session() as session:
        state = replaystore.marker(session, selection.key)
        report.before = replaystore.state_counts(session)
        after = int(state.removeprefix("mark:")) if state and state.startswith("mark:") else 0
        if state != replaystore.DRAINING:
            report.selected = replaystore.count_selected(
                session,
                mailbox=selection.mailbox,
                since=selection.since_at,
                statuses=selection.statuses,
                after=after,
            )
    report.resumed = state is not None
    if dry_run:
        report.after = report.before
        return report
    if report.resumed:
        log.info("replay_resumed", state=state, mailbox=selection.mailbox, from_stage=selection.from_stage)
    if state != replaystore.DRAINING:
        report.requeued = _queue(pipeline, selection, after, report.selected, on_queue)
    processed = drain_with_progress(pipeline, on_drain)
    purge_held(pipeline)  # a forgotten person's mail that a replay met again: deleted or redacted
    report.processed = len(processed)
    report.quarantined = sum(outcome == "quarantined" for outcome in processed.values())
    with repo.session() as session:
        if not mailstore.backlog(session):
            replaystore.clear_markers(session)  # every replay that queued anything is complete
        report.after = replaystore.state_counts(session)
    report.seconds = round(time.monotonic() - started, 3)
    log.info(
        "replay_done",
        requeued=report.requeued,
        processed=report.processed,
        quarantined=report.quarantined,
        seconds=report.seconds,
    )
    return report


def _queue(pipeline: Pipeline, selection: Selection, after: int, total: int, advance: Advance | None) -> int:
    """Queue the selection above id `after` a chunk per transaction, the marker moving in each."""
    queued = done = 0
    while True:
        with pipeline.repo.session() as session:
            ids = replaystore.next_chunk(
                session,
                mailbox=selection.mailbox,
                since=selection.since_at,
                statuses=selection.statuses,
                after=after,
                limit=CHUNK,
            )
            if not ids:
                replaystore.set_marker(session, selection.key, replaystore.DRAINING)
                return queued
            queued += replaystore.requeue(
                session,
                ids,
                unquarantine=selection.from_stage == "parse",
                rethread=selection.from_stage in {"parse", "thread"},
            )
            after = ids[-1]
            replaystore.set_marker(session, selection.key, f"mark:{after}")
        done += len(ids)
        if advance is not None:
            advance(min(done, total), total)


def drain_with_progress(pipeline: Pipeline, advance: Advance | None) -> dict[int, str]:
    """Pipeline.drain, with `advance(done, total)` called from the queue's length as it shrinks."""
    with pipeline.repo.session() as session:
        total = mailstore.backlog(session)
    if advance is None or not total:
        return pipeline.drain()
    advance(0, total)
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(POLL_SECONDS):
            with pipeline.repo.session() as session:
                left = mailstore.backlog(session)
            advance(max(0, min(total, total - left)), total)

    watcher = threading.Thread(target=watch, name="mailsync-replay-progress", daemon=True)
    watcher.start()
    try:
        return pipeline.drain()
    finally:
        finished.set()
        watcher.join()
        advance(total, total)
