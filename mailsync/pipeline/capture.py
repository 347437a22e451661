"""Capture: a batch of raw messages made durable and recorded, with the folder cursor, in one commit.

    identify each message ─> stage the blobs the database does not know (BlobStore.stage) ─>
    append the batch's copies and cursor to the provenance journal ─> ONE BlobStore.sync() and ONE
    journal fsync ─> ONE transaction: blobs, new messages as "pending", copies, the cursor ─> commit

Order is the guarantee. The commit that names a blob or a copy comes after the sync that made it
durable (blob and journal line, storage/journal.py), and the cursor moves in that same commit, so a
crash anywhere leaves the batch either wholly captured with its cursor or not at all (the next pass
fetches it again and recognises what it has). Only blobs the database names are trusted as they
are: a staged file nobody named is read back and kept only if it holds its bytes, else written again
(storage/archive.py, stage), and a named one gone from the disk is restored by the next copy of its
bytes. Parsing, threading, matching and proposing run later from the pending messages
(process.py), so capture goes at the pace of the server and the disk. The rows of a copy carry the
time its journal line does, so that `mailsync rebuild` (record_copies) gives them back exactly.

One bad message never fails its batch: see refusals.py. If the message the database refused is there
by now, another process stored it first (the unique fingerprint) and this is just a copy of it.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, cast

import structlog
from sqlalchemy import insert

from config.errors import ArchiveError
from mailsync import faults
from mailsync.mail.identity import Identity, identify, identify_stream
from mailsync.pipeline.refusals import blame, commit_batch
from mailsync.pipeline.sync_state import Cursor, save_cursor
from storage import mailstore
from storage import models as m
from storage.journal import CopySeen, CursorMoved, Journal
from storage.leases import verify_lease  # issue 16 (mailbox leases)
from storage.models import utcnow

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from sqlalchemy import Table
    from sqlalchemy.orm import Session

    from mailsync.pipeline.staging import Staging, Ticket
    from storage.archive import BlobStore, Staged
    from storage.records import Provenance, RawMessage
    from storage.repo import Repo

log = structlog.get_logger()

Outcome = Literal["new", "copy", "known", "quarantined"]
STAGING_THREADS = 2  # blob writers beside the capturing thread: zstd and the file system release the GIL


@dataclass(frozen=True, slots=True)
class CursorAt:
    """Where a batch moves a folder's cursor, in the batch's own commit."""

    mailbox: str
    folder: str
    cursor: Cursor


@dataclass(frozen=True, slots=True)
class Captured:
    outcome: Outcome  # new message (pending) | new copy of a known one | copy already recorded | refused
    fingerprint: str
    message_pk: int | None = None  # of a new message: what the processing stage reports on
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Item:
    provenance: Provenance
    size: int
    sha256: str
    identity: Identity
    seen_at: datetime | None = None  # None: the batch's time


def capture(  # noqa: PLR0917 - the batch, where it goes, and the cursor it moves
    repo: Repo,
    archive: BlobStore,
    journal: Journal,
    raws: Sequence[RawMessage],
    owner: str,
    cursor: CursorAt | None = None,
    ticket: Ticket | None = None,
) -> list[Captured]:
    """Capture `raws` (one mailbox's, in UID order) in one commit, with `cursor` if given; CaptureErrors
    propagate. When the archive fails part-way (its disk is full), what it took is committed first,
    the cursor moved only over that, and then the error is raised. `journal` is where the settings put
    the provenance journal (Journal.of(settings)); it is fsynced here itself, never left to the store.
    `ticket`: the batch was submitted to the stage workers (staging.py), which hash and write it."""
    journal.keep_reserve()  # before the blobs take the room: their lines must fit on a full disk
    by_workers = ticket.collect() if ticket is not None else None
    if by_workers is not None:
        items, staged, failure, before = _archive_staged(repo, archive, raws, by_workers)
    else:
        items, staged, failure, before = _archive(repo, archive, raws)
    lease = cursor.mailbox if cursor is not None else None
    if failure is not None:
        if not items:
            archive.sync(staged)
            raise failure
        if cursor is not None:  # moved over the messages before the first that failed, if any
            last = max((item.provenance.uid or 0 for item in items[:before]), default=None)
            cursor = replace(cursor, cursor=Cursor(cursor.cursor.uidvalidity, last)) if last else None
    at = utcnow()
    written = journal.write(_journal_entries(items, owner, cursor, at))
    archive.sync(staged)  # the filesystem Archive's syncfs takes the journal's lines along when it can,
    journal.sync(written)  # so this fsync is then cheap; with any other store it is what saves them

    def work(session: Session, refused: dict[int, str], careful: bool) -> list[Captured]:
        results = _record(session, items, {i.provenance.mailbox: owner for i in items}, refused, at, careful)
        if lease is not None:
            verify_lease(session, lease)  # issue 16: a daemon whose lease expired commits nothing
        if cursor is not None:
            save_cursor(session, cursor.mailbox, cursor.folder, cursor.cursor)
        faults.point("before_cursor")
        return results

    results, refused = commit_batch(repo, work)
    _log_refused(items, refused)
    if failure is not None:
        raise failure
    return results


def record_copies(repo: Repo, archive: BlobStore, copies: Sequence[CopySeen]) -> list[Captured]:
    """Record journalled copies whose blobs are in the archive already, with the times the journal
    gives (`mailsync rebuild`): blobs, messages as "pending", copies, in one commit. Nothing is written
    to the archive or the journal; a line without a fingerprint has its blob read to compute it."""
    items = [
        _Item(
            copy.provenance,
            copy.size,
            copy.sha256,
            Identity(copy.fingerprint, copy.message_id)
            if copy.fingerprint
            else identify(archive.get(copy.sha256)),
            copy.seen_at,
        )
        for copy in copies
    ]
    owners = {copy.provenance.mailbox: copy.owner for copy in copies}  # the latest owner wins

    def work(session: Session, refused: dict[int, str], careful: bool) -> list[Captured]:
        return _record(session, items, owners, refused, utcnow(), careful)

    results, refused = commit_batch(repo, work)
    _log_refused(items, refused)
    return results


def _journal_entries(
    items: Sequence[_Item], owner: str, cursor: CursorAt | None, at: datetime
) -> list[CopySeen | CursorMoved]:
    entries: list[CopySeen | CursorMoved] = [
        CopySeen(
            sha256=item.sha256,
            size=item.size,
            fingerprint=item.identity.fingerprint,
            message_id=item.identity.message_id,
            owner=owner,
            provenance=item.provenance,
            seen_at=at,
        )
        for item in items
    ]
    if cursor is not None:
        moved = cursor.cursor
        entries.append(CursorMoved(cursor.mailbox, cursor.folder, moved.uidvalidity, moved.last_uid, at))
    return entries


def _log_refused(items: Sequence[_Item], refused: Mapping[int, str]) -> None:
    for index, reason in refused.items():
        where = items[index]
        log.warning(
            "message_quarantined", reason=reason, archive_key=where.sha256, locator=where.provenance.locator
        )


def _archive(
    repo: Repo, archive: BlobStore, raws: Sequence[RawMessage]
) -> tuple[list[_Item], list[Staged], ArchiveError | None, int]:
    """Every message's blob written, NOT yet synced: those the database does not know, or knows but
    lost (a deleted blob comes back with the next copy), are staged (spooled mail is streamed and
    made durable on its own). The items, the staged blobs to sync, on an ArchiveError the error (the
    items are the messages before the one that failed), and how many items precede the failure."""
    hashed: list[tuple[RawMessage, str | None]] = []
    for raw in raws:
        faults.point("after_fetch")
        hashed.append((raw, hashlib.sha256(raw.data).hexdigest() if raw.spool is None else None))
    with repo.session() as session:
        known = mailstore.known_blobs(session, [sha for _, sha in hashed if sha is not None])
    # Compressing and writing blobs mostly runs without the GIL: threads do it while this one reads
    # each message's identity. Results are taken in order, so a failure cuts the batch where it was.
    writing: dict[str, Future[Staged]] = {}
    staged: list[Staged] = []
    items: list[_Item] = []
    failure: ArchiveError | None = None
    with ThreadPoolExecutor(STAGING_THREADS, thread_name_prefix="stage") as pool:
        for raw, digest in hashed:
            if (
                digest is not None
                and digest not in writing
                and (digest not in known or not archive.exists(digest))
            ):
                writing[digest] = pool.submit(archive.stage, raw.data, digest)
        for raw, digest in hashed:
            try:
                if digest is None:  # spooled (huge) mail: streamed, never whole in memory; fsynced on its own
                    sha256 = archive.put_stream(raw.chunks(), raw.size)
                else:
                    sha256 = digest
                    pending = writing.pop(sha256, None)
                    if pending is not None:
                        staged.append(pending.result())
            except ArchiveError as exc:
                failure = exc
                pool.shutdown(cancel_futures=True)
                break
            faults.point("after_archive")
            items.append(_Item(raw.provenance, raw.size, sha256, identify_stream(raw.chunks)))
    return items, staged, failure, len(items)


def _archive_staged(
    repo: Repo, archive: BlobStore, raws: Sequence[RawMessage], results: Sequence[Staging]
) -> tuple[list[_Item], list[Staged], ArchiveError | None, int]:
    """_archive's result from what the stage workers did: a blob they found on disk already is kept
    when the database names it, else read back (Archive.stage) as the threads would. A failed write
    leaves its message out, not the rest: the workers write side by side, so on a full disk the room
    may have gone to later messages of the batch, which are captured (the cursor moves only up to
    the first failure; the next pass fetches from there and finds them known)."""
    with repo.session() as session:
        known = mailstore.known_blobs(session, [r.sha256 for r in results])
    staged: dict[str, Staged] = {}
    items: list[_Item] = []
    failure: tuple[ArchiveError, int] | None = None
    for raw, result in zip(raws, results, strict=True):
        faults.point("after_fetch")
        try:
            if result.error is not None:
                message, fix = result.error
                raise ArchiveError(message, fix=fix)  # noqa: TRY301 - handled as the store's own error
            if result.staged is not None:
                staged[result.sha256] = result.staged
            elif result.sha256 not in known and result.sha256 not in staged:
                staged[result.sha256] = archive.stage(raw.data, result.sha256)
        except ArchiveError as exc:
            failure = failure or (exc, len(items))
            continue
        faults.point("after_archive")
        items.append(_Item(raw.provenance, raw.size, result.sha256, result.identity))
    if failure is None:
        return items, list(staged.values()), None, len(items)
    return items, list(staged.values()), *failure


class _Rows:
    """Rows of one table inserted with Core, in the order added: one executemany for the batch, or
    each row at once when `careful` (inside its message's blame, before the flush that may need it)."""

    def __init__(self, session: Session, model: type[m.Base], *, careful: bool) -> None:
        self._session = session
        self._table = cast("Table", model.__table__)
        self._careful = careful
        self._rows: list[dict[str, Any]] = []

    def add(self, **row: Any) -> None:
        self._rows.append(row)
        if self._careful:
            self.insert()

    def insert(self) -> None:
        """On the session's connection: Session.execute would autoflush the messages added so far, and
        before their blobs are in, that is a foreign-key error (and the batch retried carefully)."""
        if self._rows:
            self._session.connection().execute(insert(self._table), self._rows)
            self._rows = []


def _record(  # noqa: PLR0917 - the batch, and how to write it
    session: Session,
    items: Sequence[_Item],
    owners: Mapping[str, str],
    refused: dict[int, str],
    at: datetime,
    careful: bool,
) -> list[Captured]:
    """Blobs, messages and copies of the batch: three reads, then inserts; with `careful`, flushed
    message by message so that a refusal names its message. Rows get the item's time, else `at`.
    Blob and copy rows, which nothing reads back in the transaction, are Core inserts (one round each
    for the batch; at once, inside the message's blame, when careful): ORM objects cost more."""
    for mailbox, owner in owners.items():
        mailstore.ensure_mailbox(session, mailbox, owner)
    messages = mailstore.messages_by_fingerprint(session, (i.identity.fingerprint for i in items))
    blobs = mailstore.known_blobs(session, (i.sha256 for i in items))
    copies = mailstore.known_copies(session, (i.provenance.locator for i in items))
    outcomes: list[Outcome] = []
    new_copies: list[tuple[int, m.Message]] = []
    blob_rows = _Rows(session, m.Blob, careful=careful)
    for index, item in enumerate(items):
        with blame(session, index, careful=careful):
            when = item.seen_at or at
            fingerprint = item.identity.fingerprint
            outcome: Outcome = "copy"
            if item.sha256 not in blobs:
                blob_rows.add(sha256=item.sha256, size=item.size, archived_at=when)
                blobs.add(item.sha256)
            message = messages.get(fingerprint)
            if message is None:
                reason = refused.get(index)
                outcome = "quarantined" if reason else "new"
                # No Message-ID for a refused message: it may be the value refused.
                message_id = (
                    None if reason else item.identity.message_id
                ) or f"{fingerprint}@mailsync.invalid"
                message = m.Message(
                    fingerprint=fingerprint,
                    blob_sha256=item.sha256,
                    message_id=message_id,
                    status="quarantined" if reason else "pending",
                    captured_at=when,
                )
                session.add(message)
                messages[fingerprint] = message
            key = (item.sha256, item.provenance.locator)
            if key in copies:
                outcome = "known"
            else:
                copies.add(key)
                new_copies.append((index, message))
            outcomes.append(outcome)
    blob_rows.insert()  # before the messages that name them
    session.flush()  # the new messages' ids, from one INSERT round for the batch
    copy_rows = _Rows(session, m.Provenance, careful=careful)
    for index, message in new_copies:
        with blame(session, index, careful=careful):
            item = items[index]
            if outcomes[index] == "quarantined":
                mailstore.quarantine(session, message, refused[index])
            # With the time its journal line has.
            copy_rows.add(**mailstore.copy_row(message.id, item.sha256, item.provenance, item.seen_at or at))
    copy_rows.insert()
    session.flush()
    return [
        Captured(
            outcome, item.identity.fingerprint, messages[item.identity.fingerprint].id, refused.get(index)
        )
        for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True))
    ]
