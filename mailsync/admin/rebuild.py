"""Rebuild: a new database from the archive, the provenance journal and the event log alone.

    upgrade the new database's schema (it must hold nothing) ─> one timeline, in time order:
        journal copies ─> blobs, messages "pending", copies (storage/replaystore.insert_copies), a batch
                          at a time, with the times the journal gives; a copy whose blob is gone
                          from the archive (forgotten, past retention) is skipped and counted
        each event     ─> the queue drained first (so the event meets the database its original met:
                          a CRM import the mail before it, a decision its proposal), then applied
                          by its kind's handler (HANDLERS, plus approval's kinds: cli/replay.py)
    ─> the queue drained ─> decisions whose proposal did not exist at their turn, applied again
    ─> each folder's cursor (UIDVALIDITY, last UID) from the journal's last word on it

The events are applied by the functions that applied them the first time, each of which records an
AppliedEvent, so a kind applied here is applied exactly as it was. A kind this version does not know is
logged and counted, never guessed at. What is neither mail nor event is not rebuilt: digests sent
(and so replies to digests sent before the rebuild), single-use link nonces, `gone_at` of copies
deleted on the server (the next sync marks them again).

Speed (bench/rebuild_bench.py): the journal's copies go in with set-based INSERTs, a batch at a time
(a batch the database refuses a row of is recorded again by capture's record_copies, which quarantines
that row), and the new database is written without waiting for the disk at each commit (SQLite
`synchronous=OFF`, PostgreSQL `synchronous_commit=off`) until the end, when one checkpoint (SQLite) or
one synchronous commit (PostgreSQL) makes it all durable. On SQLite the search index is built once at
the end, not row by row (storage/search_index.py). The archive, the journal and the event log
are the source and are only read: a rebuild cut short by a crash is simply run again, into a new
database (a half-built one is refused as not empty: delete it first).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from config.errors import StorageError
from mailsync.admin.reassign import apply_reassign_event
from mailsync.admin.replay import drain_with_progress
from mailsync.pipeline.capture import record_copies
from mailsync.pipeline.ingest import Pipeline
from mailsync.pipeline.sync_state import Cursor, save_cursor
from storage import mailstore, replaystore, search_index
from storage import models as m
from storage.archive import open_store
from storage.crm import apply_crm_import
from storage.eventlog import Event, EventLog
from storage.forget import apply_forget_event
from storage.journal import CopySeen, CursorMoved, Journal

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    from config.settings import Settings
    from mailsync.admin.replay import Advance
    from mailsync.mail.parse_worker import ParsePool, ParseWorker
    from storage.archive import BlobStore
    from storage.repo import Repo

log = structlog.get_logger()
BATCH = 500  # journal copies recorded per transaction


@dataclass
class RebuildReport:
    target: str  # the new database's URL, without its password
    copies: int = 0  # journal lines of copies read
    blobs_gone: int = 0  # copies skipped: their blob is no longer in the archive (forgotten, retention)
    messages: int = 0  # messages in the new database
    provenances: int = 0
    cursors: int = 0
    events: dict[str, int] = field(default_factory=dict)  # applied, by kind
    unknown_events: dict[str, int] = field(default_factory=dict)  # not applied: kind unknown here
    decisions_refused: int = 0  # decided already by an earlier event (as the original refused them)
    decisions_orphaned: int = 0  # their proposal never came back
    processed: int = 0
    quarantined: int = 0
    seconds: float = 0.0
    processing_seconds: float = 0.0  # of `seconds`, in draining the queue (parse, match, thread, propose)
    recording_seconds: float = 0.0  # of `seconds`, in recording the journal's copies
    events_seconds: float = 0.0  # of `seconds`, in applying events (a CRM import of 50,000 contacts...)

    @property
    def messages_per_second(self) -> float:
        return round(self.messages / self.seconds, 1) if self.seconds else 0.0

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), "messages_per_second": self.messages_per_second}


class Rebuilder:
    """The state of one rebuild: the new database's pipeline, the report, the decisions held back."""

    def __init__(self, pipeline: Pipeline, report: RebuildReport) -> None:
        self.pipeline = pipeline
        self.repo = pipeline.repo
        self.report = report
        self.waiting: list[tuple[Handler, Event]] = []  # e.g. decisions whose proposal was not there (yet)


Handler = Callable[[Rebuilder, Event], None]  # applies one event of its kind to the new database


def in_session(apply: Callable[[Session, Event], object]) -> Handler:
    """A handler from a function that projects one event in a session (as apply_rep_event does)."""

    def handler(rebuilder: Rebuilder, event: Event) -> None:
        with rebuilder.repo.session() as session:
            apply(session, event)

    return handler


def _crm_import(rebuilder: Rebuilder, event: Event) -> None:
    with rebuilder.repo.session() as session:  # as mailsync/admin/crm_import.py applied it
        apply_crm_import(session, event.payload)
        session.add(m.AppliedEvent(id=event.id, kind=event.kind, digest=event.digest))


class Deferrable(Protocol):
    """What applying an event that may come before what it names says (apply_decision_events' Replay)."""

    @property
    def pending(self) -> Sequence[object]: ...  # what it names is not in the database (yet)
    @property
    def refused(self) -> Sequence[object]: ...  # refused, as the original refused it


def deferred(apply: Callable[[Repo, list[Event]], Deferrable]) -> Handler:
    """A handler for events that may name what the mail has not made yet (a decision, its proposal):
    applied at their turn, or held back and applied again once all the mail is processed."""

    def handler(rebuilder: Rebuilder, event: Event) -> None:
        outcome = apply(rebuilder.repo, [event])
        if outcome.pending:
            rebuilder.waiting.append((handler, event))
        rebuilder.report.decisions_refused += len(outcome.refused)

    return handler


def _applied(session: Session, event: Event) -> None:
    """An event whose only trace in the database is that it was applied (a reply handled)."""
    if session.get(m.AppliedEvent, event.id) is None:
        session.add(m.AppliedEvent(id=event.id, kind=event.kind, digest=event.digest))


# One line a kind: how the event log's events are applied to a new database. The kinds applied by
# mailsync/approval (decisions, rep pause/resume/deactivate/activate) are added by the caller
# (mailsync/cli/replay.py, `event_handlers`): admin and approval are sibling rooms that do not import
# each other (tests/unit/test_layout.py).
HANDLERS: dict[str, Handler] = {
    "crm_import": _crm_import,
    "reply_handled": in_session(_applied),
    "reassigned": in_session(apply_reassign_event),
    "forget": in_session(apply_forget_event),
    # Their work is on the archive and the journal already (blobs deleted or redacted, lines dropped).
    "forget_applied": in_session(_applied),
    "forget_purged": in_session(_applied),
    "retention_applied": in_session(_applied),
}


def rebuild(
    settings: Settings,
    target: Repo,
    parser: ParsePool | ParseWorker,
    *,
    handlers: Mapping[str, Handler] = HANDLERS,
    on_copies: Advance | None = None,
    on_drain: Advance | None = None,
    batch: int = BATCH,
) -> RebuildReport:
    """Build `target` (a new, empty database) from the configured archive, journal and event log,
    applying each event with `handlers[event.kind]`."""
    started = time.monotonic()
    report = RebuildReport(make_url(target.url).render_as_string(hide_password=True))
    _prepare(target)
    with _unsynced(target), search_index.built_at_the_end(target.engine):
        _build(settings, target, parser, report, handlers, on_copies, on_drain, batch)
    report.seconds = round(time.monotonic() - started, 3)
    log.info("rebuild_done", **{k: v for k, v in report.as_json().items() if not isinstance(v, dict)})
    return report


def _build(  # noqa: PLR0917 - rebuild()'s arguments, passed on
    settings: Settings,
    target: Repo,
    parser: ParsePool | ParseWorker,
    report: RebuildReport,
    handlers: Mapping[str, Handler],
    on_copies: Advance | None,
    on_drain: Advance | None,
    batch: int,
) -> None:
    archive = open_store(settings)
    journal = Journal.of(settings)
    rebuilder = Rebuilder(Pipeline(settings, target, archive, parser, one_shot=True), report)
    cursors: dict[tuple[str, str], Cursor] = {}
    copies: list[CopySeen] = []
    total = journal.line_count() if on_copies else 0
    read = 0

    def flush() -> None:
        if copies:
            began = time.monotonic()
            _record(target, archive, copies)
            report.recording_seconds += time.monotonic() - began
            report.copies += len(copies)
            copies.clear()
        if on_copies is not None:
            on_copies(min(read, total), total)

    for entry in _timeline(journal, EventLog(settings.events_dir)):
        if isinstance(entry, Event):
            flush()
            _drain(rebuilder, on_drain)
            began = time.monotonic()
            _apply(rebuilder, handlers, entry)
            report.events_seconds += time.monotonic() - began
        elif isinstance(entry, CursorMoved):
            read += 1
            cursors[entry.mailbox, entry.folder] = Cursor(entry.uidvalidity, entry.last_uid)
        else:
            read += 1
            _follow(cursors, entry)
            if archive.exists(entry.sha256):
                copies.append(entry)
            else:
                report.blobs_gone += 1
            if len(copies) >= batch:
                flush()
    flush()
    _drain(rebuilder, on_drain)
    _finish(rebuilder, settings, cursors)


def _record(target: Repo, archive: BlobStore, copies: list[CopySeen]) -> None:
    """A batch of journal copies in a few INSERTs; as capture records them (a row at a time, a row
    the database refuses quarantined) when a line has no fingerprint or the database refuses any row."""
    if all(copy.fingerprint for copy in copies):
        try:
            with target.session() as session:
                replaystore.insert_copies(session, copies)
        except DBAPIError:
            pass
        else:
            return
    record_copies(target, archive, copies)


@contextmanager
def _unsynced(target: Repo) -> Iterator[None]:
    """Commits that do not wait for the disk while the rebuild runs, made durable at once at the end
    (see the module's docstring for why that is safe here)."""
    engine = target.engine
    engine.dispose()  # connections from now on are made with the setting
    sa_event.listen(engine, "connect", _no_sync)
    try:
        yield
    finally:
        sa_event.remove(engine, "connect", _no_sync)
        engine.dispose()
    _make_durable(engine)


def _no_sync(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor.execute("PRAGMA synchronous=OFF")
    else:
        cursor.execute("SET synchronous_commit TO off")
        dbapi_connection.commit()  # a SET in a transaction the pool rolls back would be undone
    cursor.close()


def _make_durable(engine: Engine) -> None:
    """SQLite: the WAL checkpointed into the database file, which is fsynced (synchronous=FULL).
    PostgreSQL: one synchronous commit, which waits for the WAL up to it, every earlier commit's too."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA synchronous=FULL")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            conn.execute(text("SET synchronous_commit TO on"))
            conn.execute(text("SELECT txid_current()"))  # a transaction id, so the commit is written
        conn.commit()


def _finish(rebuilder: Rebuilder, settings: Settings, cursors: dict[tuple[str, str], Cursor]) -> None:
    """The decisions held back (their proposals exist now, if they ever will), the cursors, the counts."""
    report, target = rebuilder.report, rebuilder.repo
    waiting, rebuilder.waiting = rebuilder.waiting, []
    for handler, event in waiting:
        handler(rebuilder, event)
    report.decisions_orphaned = len(rebuilder.waiting)
    report.cursors = _save_cursors(settings, target, cursors)
    with target.session() as session:
        report.messages = session.scalar(select(func.count()).select_from(m.Message)) or 0
        report.provenances = session.scalar(select(func.count()).select_from(m.Provenance)) or 0
    report.recording_seconds = round(report.recording_seconds, 3)
    report.events_seconds = round(report.events_seconds, 3)


def _prepare(target: Repo) -> None:
    """The new database at the current schema; refused when it holds anything (the configured one may
    be the target: deleted or lost, it is rebuilt where it was)."""
    target.upgrade()
    with target.session() as session:
        used = any(
            session.scalar(select(func.count()).select_from(model))
            for model in (m.Message, m.Blob, m.AppliedEvent, m.Account, m.Rep)
        )
    if used:
        raise StorageError(
            f"{make_url(target.url).render_as_string(hide_password=True)} is not empty; rebuild never merges",
            fix="give --into a new, empty database",
        )


def _timeline(journal: Journal, events: EventLog) -> Iterator[CopySeen | CursorMoved | Event]:
    """Journal entries and events merged by time (each in its own order); at the same moment, mail
    first: an event of that moment was taken on it."""
    pending = iter(events)
    event = next(pending, None)
    for entry in journal:
        when = entry.seen_at if isinstance(entry, CopySeen) else entry.at
        while event is not None and _event_time(event) < when:
            yield event
            event = next(pending, None)
        yield entry
    while event is not None:
        yield event
        event = next(pending, None)


def _event_time(event: Event) -> datetime:
    at = datetime.fromisoformat(event.at)
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at


def _follow(cursors: dict[tuple[str, str], Cursor], copy: CopySeen) -> None:
    """Move a folder's cursor over a copy seen there (a cursor line, when there is one, has the last
    word); a new UIDVALIDITY starts it again."""
    where = copy.provenance
    if where.uid is None or where.folder is None:
        return
    known = cursors.get((where.mailbox, where.folder))
    if known is None or known.uidvalidity != where.uidvalidity:
        cursors[where.mailbox, where.folder] = Cursor(where.uidvalidity, where.uid)
    elif where.uid > known.last_uid:
        cursors[where.mailbox, where.folder] = Cursor(known.uidvalidity, where.uid)


def _drain(rebuilder: Rebuilder, on_drain: Advance | None) -> None:
    started = time.monotonic()
    processed = drain_with_progress(rebuilder.pipeline, on_drain)
    rebuilder.report.processing_seconds = round(
        rebuilder.report.processing_seconds + time.monotonic() - started, 3
    )
    rebuilder.report.processed += len(processed)
    rebuilder.report.quarantined += sum(outcome == "quarantined" for outcome in processed.values())


def _apply(rebuilder: Rebuilder, handlers: Mapping[str, Handler], event: Event) -> None:
    handler = handlers.get(event.kind)
    counts = rebuilder.report.events if handler else rebuilder.report.unknown_events
    counts[event.kind] = counts.get(event.kind, 0) + 1
    if handler is None:
        log.warning("rebuild_event_unknown", kind=event.kind, event_id=event.id)
        return
    handler(rebuilder, event)


def _save_cursors(settings: Settings, target: Repo, cursors: dict[tuple[str, str], Cursor]) -> int:
    owners = {box.name: box.owner for box in settings.mailboxes}
    saved = Counter[str]()
    with target.session() as session:
        for (mailbox, folder), cursor in sorted(cursors.items()):
            if session.scalar(select(m.Mailbox.id).where(m.Mailbox.name == mailbox)) is None:
                if mailbox not in owners:
                    log.warning("rebuild_cursor_skipped", mailbox=mailbox, folder=folder)
                    continue
                mailstore.ensure_mailbox(session, mailbox, owners[mailbox])
                session.flush()
            save_cursor(session, mailbox, folder, cursor)
            saved[mailbox] += 1
    return sum(saved.values())
