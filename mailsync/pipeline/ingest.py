"""The pipeline: capture (archive, identity, copies, cursor) a batch at a time, then process the
pending messages (parse, match, thread, propose) a batch at a time.

    capture.py   blobs durable, then one commit per batch: messages "pending", copies, folder cursor
    process.py   the pending messages parsed in a pool, matched, threaded, proposed; one commit per batch

Capture is what a source waits for; processing may run behind it from the durable queue (the pending
messages) and catches up. `sync --once`, an import and each daemon pass capture and then drain the
queue, so proposals are there when they return; a process killed between the two leaves pending
messages that the next drain processes.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog

from mailsync.pipeline.capture import capture
from mailsync.pipeline.staging import StagePool
from storage import leases, mailstore
from storage.crm import crm_version, load_snapshot
from storage.journal import Journal

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from config.settings import Settings
    from mailsync.mail.parse_worker import ParsePool, ParseWorker
    from mailsync.pipeline.capture import Captured, CursorAt
    from mailsync.pipeline.staging import Ticket
    from storage.archive import BlobStore
    from storage.records import CrmSnapshot, RawMessage
    from storage.repo import Repo

log = structlog.get_logger()
_ONE_SHOT_GC = (50_000, 20, 100)  # the cycle collector's thresholds in a command that exits when done

Outcome = Literal["new", "copy", "known", "quarantined"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome  # new message | new copy of a known one | copy already recorded | quarantined
    fingerprint: str
    reason: str | None = None


class Pipeline:
    """Runs the stages; owns the CRM snapshot the match stage uses and the parser (a pool, or one worker)."""

    def __init__(
        self,
        settings: Settings,
        repo: Repo,
        archive: BlobStore,
        parser: ParsePool | ParseWorker,
        *,
        one_shot: bool = False,
    ) -> None:
        self.settings = settings
        self.one_shot = one_shot  # a command that exits when done (import, sync --once, replay, rebuild)
        self.repo = repo
        self.archive = archive
        self.parser = parser
        self._draining = threading.Lock()
        self.holder = leases.holder_id()  # this process in the `job:drain` lease
        self._crm: CrmSnapshot | None = None
        self._crm_version: tuple[int, datetime | None] | None = None
        self._stage_pool = StagePool(archive) if StagePool.usable(archive) else None

    @property
    def crm(self) -> CrmSnapshot:
        if self._crm is None:
            self.refresh_crm()
        assert self._crm is not None  # noqa: S101 - set just above
        return self._crm

    def refresh_crm(self) -> None:
        """Rebuild the match stage's view of the CRM (after an import or an approval)."""
        from nlp.match import free_mail_domains  # noqa: PLC0415 - see drain()
        from nlp.phrases import build_index  # noqa: PLC0415

        free = free_mail_domains() | frozenset(self.settings.extra_free_mail_domains)
        with self.repo.session() as session:
            self._crm_version = crm_version(session)
            self._crm = load_snapshot(session, frozenset(self.settings.internal_domains), free)
        build_index(self._crm, self.settings.matching.spacy_model)  # ConfigError if the model is missing
        if self.settings.matching.classifier:
            from nlp.intent import shipped  # noqa: PLC0415 - loaded with the CRM, before the first message

            shipped()
        if self.one_shot:
            # The snapshot (a 50k-contact CRM: about a million objects) lives until the command exits:
            # frozen out of the cycle collector, whose full passes over it cost ~0.9 s per 2,000 messages
            # replayed. Not in the daemon, which replaces the snapshot on every CRM change: a frozen old
            # one with reference cycles would never be collected.
            gc.freeze()
            # A batch's objects (ORM rows, parsed mail) die by reference count, not in cycles: at the
            # default thresholds (700, 10, 10) the collector still ran ~1,800 passes over them, 1.3 s of
            # a 27 s replay of 10,000 messages; at these, 0.2 s, for ~5 MB more peak RSS.
            gc.set_threshold(*_ONE_SHOT_GC)

    def refresh_crm_if_changed(self) -> bool:
        """Reload the snapshot when a CRM import was applied since (e.g. by `mailsync crm import`)."""
        with self.repo.session() as session:
            version = crm_version(session)
        if self._crm is not None and version == self._crm_version:
            return False
        self.refresh_crm()
        log.info("crm_loaded", events=version[0])
        return True

    def capture(
        self,
        raws: Sequence[RawMessage],
        owner: str,
        cursor: CursorAt | None = None,
        *,
        warm: bool = True,
        ticket: Ticket | None = None,
    ) -> list[Captured]:
        """Archive and record a batch (and move `cursor`) in one commit; new messages wait as pending.
        The parse workers start now if they have not (in the background): mail is coming their way,
        unless `warm` is False (a capture-only pass, which processes nothing). `ticket`: what prepare()
        gave for this batch."""
        if warm:
            self.parser.warm()
        return capture(self.repo, self.archive, Journal.of(self.settings), raws, owner, cursor, ticket)

    def prepare(self, raws: list[RawMessage]) -> Ticket | None:
        """Start staging a large batch in the stage workers (staging.py) while earlier ones are
        captured; hand the ticket to capture(). None: capture stages it itself."""
        if self._stage_pool is None:
            return None
        Journal.of(self.settings).keep_reserve()  # before the workers fill the disk: see capture()
        return self._stage_pool.submit(raws)

    def end_capture(self) -> None:
        """A pass's capture is over: the stage workers end (they hold no memory while mail is
        processed) and start again with the next large batch."""
        if self._stage_pool is not None:
            self._stage_pool.close()
            self._stage_pool.broken = False

    def drain(self, limit: int | None = None, stop: threading.Event | None = None) -> dict[int, str]:
        """Process pending messages (message id -> "new" or "quarantined"); one drain at a time in this
        process (mailbox threads), and across processes (the `job:drain` lease, storage/leases.py): a
        process that finds another draining leaves its captured mail in the queue the other one reads.
        The lease is given back now and then during the drain (process.DRAIN_CHUNK), so processes take
        turns."""
        with self.repo.session() as session:
            if not mailstore.backlog(session):
                return {}
        # Imported only now: the match and propose stages load spaCy (half a second and more), which
        # a pass with nothing new never needs.
        from mailsync.pipeline.process import drain  # noqa: PLC0415

        done: dict[int, str] = {}
        with self._draining:
            while limit is None or len(done) < limit:
                with self.repo.session() as session:
                    if leases.take(session, leases.DRAIN, self.holder, leases.DRAIN_SECONDS) is None:
                        break  # another process is draining
                try:
                    taken = drain(self, None if limit is None else limit - len(done), stop)
                finally:
                    with self.repo.session() as session:
                        leases.release(session, leases.DRAIN, self.holder)
                done.update(taken)
                if (stop is not None and stop.is_set()) or not taken or not self._newer(done):
                    break
        return done

    def _newer(self, done: dict[int, str]) -> bool:
        """Pending mail newer than what this drain took: another process may have captured it while
        this one held the lease, found the lease taken and left it to this one."""
        with self.repo.session() as session:
            return bool(mailstore.pending(session, 1, after=max(done, default=0)))

    def ingest(self, raw: RawMessage, owner: str) -> IngestResult:
        """Take one message through every stage now: capture, then drain the queue."""
        (captured,) = self.capture([raw], owner)
        if captured.outcome != "new" or captured.message_pk is None:
            return IngestResult(captured.outcome, captured.fingerprint, captured.reason)
        self.drain()
        with self.repo.session() as session:
            reason = mailstore.quarantine_reason(session, captured.message_pk)
        return IngestResult("quarantined" if reason else "new", captured.fingerprint, reason)
