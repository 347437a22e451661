"""Forgetting mail: each message that names a forgotten person deleted or redacted, blobs included.

    message ─> its address headers (first copy) ─> the person one of them, nobody else from outside
            │                                       (internal domains and reps do not count)?
            ├─ yes: deleted (rows, copies; blobs nobody else names, after the commit)
            └─ no:  each of its blobs redacted (mailsync/mail/redact.py) and stored under its new hash;
                    copies moved to the new blobs, the message re-identified from the redacted bytes
                    (merged into a message that already has that identity: the same mail, redacted
                    before; see redacted_fingerprint), its stored text redacted; the old blobs
                    deleted after the commit

`mailsync forget` runs this over every message that mentions the person; `purge_held` runs it over the
messages processing set aside as "forgotten" (storage/forget.py: held), building each one's redaction
from the tombstoned addresses it names, then lets processing take the redacted ones again. The caller
appends the returned mapping (old blob -> new blob) to the event log before its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import delete, func, select

from config.errors import ArchiveError
from mailsync.mail.identity import identify
from storage import forget as tombstones
from storage import models as m
from storage.appending import locked, read_all
from storage.eventlog import EventLog
from storage.journal import Journal
from storage.private import fsync_path

# Every sync pass calls purge_held, which almost always finds nothing held: the redaction and matching
# modules load when there is something to treat, not at the start of every `mailsync sync --once`.
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from sqlalchemy.orm import Session

    from config.settings import Settings
    from mailsync.mail.redact import Redaction
    from mailsync.pipeline.ingest import Pipeline
    from storage.archive import BlobStore

log = structlog.get_logger()


@dataclass
class Treated:
    """What forgetting did to a set of messages (blob files are deleted by `finish`, after the commit)."""

    deleted: list[int] = field(default_factory=list)  # message ids
    redacted: list[int] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)  # old blob -> its redacted blob
    unnamed: set[str] = field(default_factory=set)  # blobs no row names any more: files to delete
    # new blob -> its size, fingerprint and Message-ID, for the provenance journal's lines
    identities: dict[str, tuple[int, str, str | None]] = field(default_factory=dict)
    requeued: int = 0  # held messages redacted and pending again

    def finish(self, archive: BlobStore) -> int:
        """Delete the blobs the committed transaction stopped naming; how many were there."""
        return sum(archive.delete(sha) for sha in sorted(self.unnamed))


def outside_people(session: Session, settings: Settings) -> Callable[[str], bool]:
    """A test for "from outside": not an internal domain, not a rep, not a mailbox owner."""
    from nlp.match import is_internal  # noqa: PLC0415 - loaded when there is something to treat

    insiders = {mb.owner.lower() for mb in settings.mailboxes}
    insiders |= {e.lower() for e in session.scalars(select(m.Rep.email))}
    internal = settings.internal_domains
    return lambda address: address not in insiders and not is_internal(address, internal)


def treat(  # noqa: PLR0917 - the three callers name them in this order
    session: Session,
    archive: BlobStore,
    messages: Iterable[m.Message],
    redaction: Redaction,
    outside: Callable[[str], bool],
    result: Treated,
) -> None:
    """Delete or redact each message (see the module doc); new blobs are durable on return, the rows
    changed in `session` (not committed)."""
    doomed: list[int] = []
    for message in messages:
        try:
            raw = archive.get(message.blob_sha256)
        except ArchiveError:
            raw = b""  # lost from the archive: nothing to redact; its rows decide
        if deletes(raw, redaction, outside):
            doomed.append(message.id)
            continue
        _redact_message(session, archive, message, redaction, result)
    result.deleted += doomed
    result.unnamed |= tombstones.delete_messages(session, doomed)


def deletes(raw: bytes, redaction: Redaction, outside: Callable[[str], bool]) -> bool:
    """Is the message deleted (the person is in its address headers, nobody else from outside is)
    rather than redacted?"""
    from mailsync.mail.redact import people  # noqa: PLC0415 - loaded when there is something to treat

    named = [addr for _, addr in people(raw)]
    others = {a for a in named if outside(a) and not redaction.in_text(a)}
    return any(redaction.in_text(a) for a in named) and not others


def _redact_message(
    session: Session, archive: BlobStore, message: m.Message, redaction: Redaction, result: Treated
) -> None:
    copies = list(session.scalars(select(m.Provenance).where(m.Provenance.message_pk == message.id)))
    old = {message.blob_sha256} | {c.blob_sha256 for c in copies}
    fresh: dict[str, tuple[str, bytes]] = {}
    for sha in sorted(old):
        try:
            clean = redaction.message(archive.get(sha))
        except ArchiveError:
            continue  # missing or corrupt: its copies go below, verify reports the rest
        new_sha = archive.put(clean)
        fresh[sha] = (new_sha, clean)
        if new_sha != sha:
            result.blobs[sha] = new_sha
            identity = identify(clean)
            result.identities[new_sha] = (
                len(clean),
                redacted_fingerprint(identity.fingerprint),
                identity.message_id,
            )
        if session.get(m.Blob, new_sha) is None:
            session.add(m.Blob(sha256=new_sha, size=len(clean)))
    session.flush()
    seen = {(c.blob_sha256, c.locator) for c in copies}
    for copy in copies:
        target = fresh[copy.blob_sha256][0] if copy.blob_sha256 in fresh else None
        if target == copy.blob_sha256:
            continue  # nothing of the person in these bytes (found by the stored text alone)
        if target is None or (target, copy.locator) in seen or _copy_taken(session, target, copy.locator):
            session.delete(copy)  # an unreadable blob, or the redacted copy is recorded already
            continue
        seen.add((target, copy.locator))
        copy.blob_sha256 = target
        copy.path = redaction.text(copy.path) if copy.path else copy.path
    main = fresh.get(message.blob_sha256)
    if main is not None:
        message.blob_sha256 = main[0]
        identity = identify(main[1])
        fingerprint = redacted_fingerprint(identity.fingerprint)
        twin = session.scalar(
            select(m.Message).where(m.Message.fingerprint == fingerprint, m.Message.id != message.id)
        )
        if twin is not None:  # the same mail, redacted before (forgotten, then imported again)
            _merge_into(session, message, twin)
            result.deleted.append(message.id)
            result.unnamed |= tombstones.drop_blobs(session, old)
            return
        message.fingerprint = fingerprint
        message.message_id = identity.message_id or f"{identity.fingerprint}@mailsync.invalid"
    _redact_rows(session, message, redaction)
    if message.status == tombstones.FORGOTTEN:
        message.status = "pending"  # processing takes the redacted bytes
        result.requeued += 1
    result.redacted.append(message.id)
    result.unnamed |= tombstones.drop_blobs(session, old)


def redacted_fingerprint(fingerprint: str) -> str:
    """The identity of a redacted message: derived, never what any copy of the original computes
    (redacting only To or Cc leaves identify() unchanged), so that every copy of the original that
    arrives later is a new message, which processing holds and the purge redacts and merges here."""
    return hashlib.sha256(b"forgotten\x00" + fingerprint.encode()).hexdigest()


def _copy_taken(session: Session, sha: str, locator: str) -> bool:
    found = session.scalar(
        select(func.count())
        .select_from(m.Provenance)
        .where(m.Provenance.blob_sha256 == sha, m.Provenance.locator == locator)
    )
    return bool(found)


def _merge_into(session: Session, message: m.Message, twin: m.Message) -> None:
    for copy in session.scalars(select(m.Provenance).where(m.Provenance.message_pk == message.id)):
        if _copy_taken(session, copy.blob_sha256, copy.locator) and copy.message_pk != twin.id:
            twin_has = session.scalar(
                select(func.count())
                .select_from(m.Provenance)
                .where(
                    m.Provenance.message_pk == twin.id,
                    m.Provenance.blob_sha256 == copy.blob_sha256,
                    m.Provenance.locator == copy.locator,
                )
            )
            if twin_has:
                session.delete(copy)
                continue
        copy.message_pk = twin.id
    session.flush()
    for model in (m.Participant, m.MessageRef, m.Quarantine):
        session.execute(delete(model).where(model.message_pk == message.id))
    thread_id = message.thread_id
    session.delete(message)
    session.flush()
    if thread_id is not None:
        tombstones.drop_empty_threads(session, [thread_id])


def _has_ref(session: Session, message_pk: int, ref: str) -> bool:
    return session.get(m.MessageRef, (message_pk, ref)) is not None


def _redact_rows(session: Session, message: m.Message, redaction: Redaction) -> None:
    """The message's stored text and people, as the redacted bytes say them."""
    message.subject = redaction.text(message.subject)
    message.body_text = redaction.text(message.body_text)
    message.sender = redaction.text(message.sender) if message.sender else message.sender
    message.attachments = redaction.value(message.attachments)
    for person in session.scalars(select(m.Participant).where(m.Participant.message_pk == message.id)):
        if redaction.in_text(person.email):
            session.delete(person)
        else:
            person.name = redaction.text(person.name)
    kept: set[str] = set()
    for ref in session.scalars(select(m.MessageRef).where(m.MessageRef.message_pk == message.id)):
        clean = redaction.text(ref.ref)  # as the redacted References say it: threads still join
        if clean in kept or (clean != ref.ref and _has_ref(session, message.id, clean)):
            session.delete(ref)
        else:
            ref.ref = clean
        kept.add(clean)
    quarantine = session.scalar(select(m.Quarantine).where(m.Quarantine.message_pk == message.id))
    if quarantine is not None:
        quarantine.reason = redaction.text(quarantine.reason)


# -- the messages processing set aside --------------------------------------------------------------


def purge_held(pipeline: Pipeline) -> Treated:
    """Delete or redact every message processing set aside as naming a forgotten person (status
    "forgotten"), then process the redacted ones. Call it after each drain (import, sync, daemon pass)."""
    settings, archive = pipeline.settings, pipeline.archive
    result = Treated()
    with pipeline.repo.session() as session:
        held = list(session.scalars(select(m.Message).where(m.Message.status == tombstones.FORGOTTEN)))
        if not held:
            return result
        key = tombstones.tombstone_key(settings)
        stones = tombstones.all_tombstones(session)
        outside = outside_people(session, settings)
        for message in held:
            redaction = _redaction_for(archive, message, key, stones)
            treat(session, archive, [message], redaction, outside, result)
        EventLog(settings.events_dir).append(
            "forget_purged",
            {"messages_deleted": len(result.deleted), "blobs_redacted": result.blobs},
            actor="mailsync",
        )
    rewrite_journal(Journal.of(settings), result, None)  # the copies just journaled: redacted blobs
    removed = result.finish(archive)
    log.info(
        "forgotten_mail_purged", deleted=len(result.deleted), redacted=len(result.redacted), blobs=removed
    )
    if result.requeued:
        pipeline.drain()
    return result


def _redaction_for(archive: BlobStore, message: m.Message, key: bytes, stones: frozenset[str]) -> Redaction:
    """The redaction of the tombstoned addresses a held message names, with the names paired with them."""
    from mailsync.mail.redact import (  # noqa: PLC0415 - loaded when there is something to treat
        Redaction,
        addresses_anywhere,
        people,
        replacement_address,
        texts,
        word_runs,
    )

    try:
        raw = archive.get(message.blob_sha256)
    except ArchiveError:
        raw = b""
    hits = {a: tombstones.tombstone_of(key, a) for a in addresses_anywhere(raw)}
    hits = {a: stone for a, stone in hits.items() if stone in stones}
    named = people(raw)
    names = {name for name, addr in named if name and addr in hits}
    names |= {name for name, _ in named if name and tombstones.name_tombstone_of(key, name) in stones}
    if tombstones.message_tombstone_of(key, message.fingerprint) in stones:  # forget redacted it: its
        runs = set().union(*(word_runs(text) for text in texts(raw)))  # text may name them, nothing else
        names |= {run for run in runs if tombstones.name_tombstone_of(key, run) in stones}
    return Redaction({a: replacement_address(stone) for a, stone in hits.items()}, names)


# -- the provenance journal -------------------------------------------------------------------------


def rewrite_journal(journal: Journal, result: Treated, redaction: Redaction | None) -> list[str]:
    """The provenance journal (storage/journal.py; `Journal.of(settings)`) made to agree: lines of
    deleted blobs dropped, lines of redacted ones pointed at the redacted blob and its identity, and
    (with `redaction`) every string redacted. Each file that changes is replaced atomically; their names."""
    if not (result.unnamed or result.blobs or redaction):
        return []

    def transform(original: str) -> str:
        lines = [_journal_line(line, result, redaction) for line in original.splitlines()]
        return "".join(f"{line}\n" for line in lines if line is not None)

    return [path.name for path in journal.files() if rewrite_file(path, transform)]


def _journal_line(line: str, result: Treated, redaction: Redaction | None) -> str | None:
    try:
        row = json.loads(line)
    except ValueError:  # a torn line: never committed; kept, minus the person
        return redaction.text(line) if redaction else line
    if not isinstance(row, dict):
        return line
    sha = row.get("sha256")
    if row.get("type") == "copy" and isinstance(sha, str):
        if sha in result.blobs:
            new = result.blobs[sha]
            size, fingerprint, message_id = result.identities[new]
            row.update(sha256=new, size=size, fingerprint=fingerprint, message_id=message_id)
        elif sha in result.unnamed:
            return None
    if redaction is not None:
        row = redaction.value(row)
    fresh = json.dumps(row, sort_keys=True)
    return line if json.loads(fresh) == json.loads(line) else fresh


def rewrite_file(path: Path, transform: Callable[[str], str]) -> bool:
    """Replace `path` by `transform(its text)` atomically and durably (temp file, fsync, rename, fsync
    the directory); False when nothing changed. The daemons append to these files (the event log, the
    provenance journal) all the while: the file's append lock (storage/appending.py) is held from the
    read to the directory's fsync, so an append waits for the new file instead of landing in the old
    one after the read (and being lost with it), and lands in a file whose name is durable."""
    with locked(path) as original:
        before = read_all(original)
        text = before.decode("utf-8", "surrogateescape")
        fresh = transform(text)
        if fresh == text:
            return False
        fd, name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(fresh.encode("utf-8", "surrogateescape"))
                out.flush()
                os.fsync(out.fileno())
            Path(name).chmod(os.fstat(original).st_mode & 0o777)
            Path(name).replace(path)
        finally:
            Path(name).unlink(missing_ok=True)
        fsync_path(path.parent)
    return True
