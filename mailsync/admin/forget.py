"""`mailsync forget EMAIL`: a person removed everywhere, a tombstone left so they do not come back.

    "forget" event (the tombstone, never the address) appended
    ─> find: every archived blob that mentions the address (bytes, decoded headers and parts), every
       message whose stored people or text name it; the display names paired with it
    ─> mail: each message deleted (the person was its only outside participant) or redacted, blob
       included (mailsync/pipeline/forgetting.py); blobs nobody names deleted after the commit
    ─> CRM: the address's ContactAddress (the contact too when it has no other address), suggestions
       about the person (new contact, contact moved) with their decisions; every other suggestion,
       decision edit, digest item list, thread subject, copy path and quarantine reason redacted
    ─> one commit, with the tombstone ─> blob files deleted
    ─> the event log rewritten where it holds the person (the one sanctioned rewrite: each file
       replaced atomically, each changed event's digest recomputed; the database's record of applied
       events follows) ─> "forget_applied" event: blob mapping, counts, files rewritten
    ─> the database compacted so freed pages keep nothing (SQLite: FTS merge, VACUUM, WAL truncated;
       PostgreSQL: VACUUM)

Idempotent: a second run finds nothing and says the person is forgotten already. Never a rep or an
internal address (deactivate a rep instead).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import OperationalError

from config.errors import ArchiveError, ConfigError, StorageError
from mailsync.mail.redact import Redaction, people, replacement_address
from mailsync.pipeline.forgetting import (
    Treated,
    deletes,
    outside_people,
    rewrite_file,
    rewrite_journal,
    treat,
)
from storage import forget as tombstones
from storage import models as m
from storage.eventlog import Event, EventLog, digest_of
from storage.journal import Journal

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session

    from config.settings import Settings
    from storage.archive import BlobStore
    from storage.repo import Repo

log = structlog.get_logger()
PERSON_KINDS = ("new_contact", "contact_moved")  # suggestions that are about one person


@dataclass
class ForgetReport:
    tombstone: str
    dry_run: bool
    already: bool = False  # the tombstone existed before this run
    messages_deleted: int = 0
    messages_redacted: int = 0
    blobs_deleted: int = 0
    blobs_redacted: dict[str, str] = field(default_factory=dict)  # old -> new
    contacts_deleted: int = 0
    contact_addresses_removed: int = 0
    suggestions_deleted: int = 0
    suggestions_redacted: int = 0
    rows_redacted: int = 0  # threads, copies, quarantine reasons, decisions, digest item lists
    event_files_rewritten: list[str] = field(default_factory=list)
    journal_files_rewritten: list[str] = field(default_factory=list)  # the provenance journal's
    events_rewritten: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Found:
    messages: set[int] = field(default_factory=set)
    orphans: set[str] = field(default_factory=set)  # blobs that mention the person, no message names
    names: set[str] = field(default_factory=set)


def forget(
    repo: Repo,
    archive: BlobStore,
    settings: Settings,
    address: str,
    *,
    dry_run: bool = False,
    actor: str = "cli",
    progress: Callable[[int | None], None] | None = None,
) -> ForgetReport:
    """Forget `address` (see the module doc); `progress(total)` once, then `progress(None)` per blob."""
    address = tombstones.normalise(address)
    key = tombstones.tombstone_key(settings)
    stone = tombstones.tombstone_of(key, address)
    report = ForgetReport(tombstone=stone, dry_run=dry_run)
    probe = Redaction({address: replacement_address(stone)})
    with repo.session() as session:
        _refuse_insiders(session, settings, address)
        report.already = session.get(m.Tombstone, stone) is not None
        found = _find(session, archive, address, probe, progress)
    redaction = Redaction({address: replacement_address(stone)}, found.names)
    events = EventLog(settings.events_dir)
    if dry_run:
        return _preview(repo, archive, settings, found, redaction, report)
    names = sorted({tombstones.name_tombstone_of(key, n) for n in found.names if len(n.split()) > 1})
    with repo.session() as session:
        fingerprints = session.scalars(select(m.Message.fingerprint).where(m.Message.id.in_(found.messages)))
        gone = sorted({tombstones.message_tombstone_of(key, fp) for fp in fingerprints})
    payload = {"tombstone": stone, "names": names, "messages": gone}
    started = events.append("forget", payload, actor=actor)
    treated = Treated()
    with repo.session() as session:
        tombstones.apply_forget_event(session, started)
        messages = list(session.scalars(select(m.Message).where(m.Message.id.in_(sorted(found.messages)))))
        treat(session, archive, messages, redaction, outside_people(session, settings), treated)
        _forget_crm(session, redaction, report)
    report.messages_deleted, report.messages_redacted = len(treated.deleted), len(treated.redacted)
    report.blobs_redacted = treated.blobs
    treated.unnamed |= found.orphans
    report.journal_files_rewritten = rewrite_journal(Journal.of(settings), treated, redaction)
    report.blobs_deleted = treated.finish(archive)
    _rewrite_events(repo, events, redaction, report)
    events.append("forget_applied", _applied_payload(report), actor=actor)
    compact(repo)
    log.info("person_forgotten", **_applied_payload(report))
    return report


def _applied_payload(report: ForgetReport) -> dict[str, Any]:
    payload = report.as_dict()
    payload.pop("dry_run")
    return payload


def _refuse_insiders(session: Session, settings: Settings, address: str) -> None:
    if "@" not in address:
        raise ConfigError(f"{address!r} is not an email address", fix="pass one address, e.g. jo@example.com")
    if not outside_people(session, settings)(address):
        raise ConfigError(
            f"{address} is a rep, a mailbox owner or in an internal domain: forget is for outside people",
            fix="use `mailsync rep pause` for a rep; their mailbox's mail stays the company's record",
        )


def _find(
    session: Session,
    archive: BlobStore,
    address: str,
    probe: Redaction,
    progress: Callable[[int | None], None] | None,
) -> _Found:
    found = _Found()
    local, _, domain = address.partition("@")
    like = [f"%{local}@{domain}%", f"%{local}+%@{domain}%"]
    text_hit = or_(
        *(
            func.lower(column).like(pattern)
            for column in (m.Message.sender, m.Message.subject, m.Message.body_text)
            for pattern in like
        )
    )
    found.messages |= set(session.scalars(select(m.Message.id).where(text_hit)))
    person = or_(*(func.lower(m.Participant.email).like(p.strip("%")) for p in like))
    for message_pk, name in session.execute(
        select(m.Participant.message_pk, m.Participant.name).where(person)
    ):
        found.messages.add(message_pk)
        found.names.add(name)
    for (name,) in session.execute(
        select(m.Contact.name)
        .join(m.ContactAddress, m.ContactAddress.contact_id == m.Contact.id)
        .where(func.lower(m.ContactAddress.email) == address)
    ):
        found.names.add(name)
    keys = list(archive.keys())
    if progress:
        progress(len(keys))
    names = {n for n in found.names if n and n.strip()}
    mentioned = _scan(archive, keys, Redaction(probe.addresses, names), found, progress)
    later = {n for n in found.names if n and n.strip()} - names
    if later:  # display names only the mail knew: the blobs that name them (and not the address) too
        if progress:
            progress(2 * len(keys))
        rest = [sha for sha in keys if sha not in mentioned]
        mentioned |= _scan(archive, rest, Redaction(probe.addresses, later), found, progress)
    named = set(session.scalars(select(m.Message.id).where(m.Message.blob_sha256.in_(mentioned))))
    named |= set(
        session.scalars(select(m.Provenance.message_pk).where(m.Provenance.blob_sha256.in_(mentioned)))
    )
    found.messages |= named
    known = set(session.scalars(select(m.Blob.sha256).where(m.Blob.sha256.in_(mentioned))))
    found.orphans = mentioned - known
    found.names = {n for n in found.names if n and n.strip()}
    return found


def _scan(
    archive: BlobStore,
    keys: list[str],
    probe: Redaction,
    found: _Found,
    progress: Callable[[int | None], None] | None,
) -> set[str]:
    """The blobs among `keys` that mention the person; the names their headers pair with the address
    are added to `found`."""
    mentioned: set[str] = set()
    for sha in keys:
        try:
            raw = archive.get(sha)
        except ArchiveError:
            raw = b""  # verify reports it; nothing readable to forget in it
        if raw and probe.mentions(raw):
            mentioned.add(sha)
            found.names |= {name for name, addr in people(raw) if name and probe.in_text(addr)}
        if progress:
            progress(None)
    return mentioned


def _preview(  # noqa: PLR0917 - one private call site
    repo: Repo,
    archive: BlobStore,
    settings: Settings,
    found: _Found,
    redaction: Redaction,
    report: ForgetReport,
) -> ForgetReport:
    """What a run would do, from the same decisions, with nothing written (a rolled-back transaction
    and no blob stored: the redacted blobs are only counted)."""
    outside = outside_people_from(repo, settings)
    with repo.session() as session:
        for message in session.scalars(select(m.Message).where(m.Message.id.in_(sorted(found.messages)))):
            try:
                raw = archive.get(message.blob_sha256)
            except ArchiveError:
                raw = b""
            blobs = tombstones.blobs_of(session, [message.id])
            if deletes(raw, redaction, outside):
                report.messages_deleted += 1
                report.blobs_deleted += len(blobs)
            else:
                report.messages_redacted += 1
                report.blobs_redacted.update(dict.fromkeys(blobs, "(dry run)"))
        _forget_crm(session, redaction, report)
        session.rollback()
    report.blobs_deleted += len(found.orphans)
    report.event_files_rewritten = _would_rewrite(EventLog(settings.events_dir), redaction)
    return report


def outside_people_from(repo: Repo, settings: Settings) -> Callable[[str], bool]:
    with repo.session() as session:
        return outside_people(session, settings)


def _forget_crm(session: Session, redaction: Redaction, report: ForgetReport) -> None:
    """Contacts, suggestions and the other rows that name the person (see the module doc)."""
    for row in list(session.scalars(select(m.ContactAddress))):
        if not redaction.in_text(row.email):
            continue
        contact = session.get_one(m.Contact, row.contact_id)
        session.delete(row)
        report.contact_addresses_removed += 1
        session.flush()
        if not session.scalar(
            select(func.count())
            .select_from(m.ContactAddress)
            .where(m.ContactAddress.contact_id == contact.id)
        ):
            session.execute(
                update(m.Participant).where(m.Participant.contact_id == contact.id).values(contact_id=None)
            )
            session.delete(contact)
            report.contacts_deleted += 1
        else:
            contact.name = redaction.text(contact.name)
    doomed: list[int] = []
    for suggestion in session.scalars(select(m.Suggestion)):
        about = (suggestion.key, suggestion.summary, suggestion.payload, suggestion.evidence)
        if not redaction.in_value(about):
            continue
        if suggestion.kind in PERSON_KINDS and redaction.in_text(str(suggestion.payload.get("email", ""))):
            doomed.append(suggestion.id)
            continue
        suggestion.key = redaction.text(suggestion.key)
        suggestion.summary = redaction.text(suggestion.summary)
        suggestion.payload = redaction.value(suggestion.payload)
        suggestion.evidence = redaction.value(suggestion.evidence)
        report.suggestions_redacted += 1
    tombstones.delete_suggestions(session, doomed)
    report.suggestions_deleted += len(doomed)
    report.rows_redacted += _redact_column_rows(session, redaction)


def _redact_column_rows(session: Session, redaction: Redaction) -> int:
    changed = 0
    targets: list[tuple[type[Any], tuple[str, ...]]] = [
        (m.Thread, ("key", "subject")),  # a key is a root Message-ID: git's hold the sender's address
        (m.Provenance, ("path",)),
        (m.Quarantine, ("reason",)),
        (m.Decision, ("edits",)),
        (m.DigestSend, ("items",)),
    ]
    for model, columns in targets:
        for row in session.scalars(select(model)):
            for column in columns:
                value = getattr(row, column)
                if value is not None and redaction.in_value(value):
                    setattr(row, column, redaction.value(value))
                    changed += 1
    return changed


# -- the event log ----------------------------------------------------------------------------------


def _redact_events(text: str, redaction: Redaction, digests: dict[str, str]) -> str:
    """An event file's text with every event that holds the person redacted (its digest recomputed,
    noted in `digests`); the other lines byte for byte as they were."""
    lines: list[str] = []
    for line in text.splitlines():
        event = Event(**json.loads(line)) if line.strip() else None
        if event is not None and redaction.in_value([event.actor, event.payload]):
            payload = redaction.value(event.payload)
            digest = digest_of(event.kind, payload)
            event = Event(event.id, event.at, event.kind, redaction.text(event.actor), digest, payload)
            digests[event.id] = digest
            line = json.dumps(asdict(event), sort_keys=True)  # noqa: PLW2901 - the line, redacted
        lines.append(line + "\n")
    return "".join(lines)


def _event_files(events: EventLog) -> list[Path]:
    return sorted(events.directory.glob("events-*.jsonl")) if events.directory.exists() else []


def _would_rewrite(events: EventLog, redaction: Redaction) -> list[str]:
    return [
        path.name
        for path in _event_files(events)
        if _redact_events(path.read_text(encoding="utf-8"), redaction, {}) != path.read_text(encoding="utf-8")
    ]


def _rewrite_events(repo: Repo, events: EventLog, redaction: Redaction, report: ForgetReport) -> None:
    """Each file that holds the person rewritten (pipeline/forgetting.py: rewrite_file); the database's
    record of applied events follows the recomputed digests."""
    digests: dict[str, str] = {}
    for path in _event_files(events):
        changed: dict[str, str] = {}

        def transform(text: str, changed: dict[str, str] = changed) -> str:
            return _redact_events(text, redaction, changed)

        if rewrite_file(path, transform):
            digests.update(changed)
            report.event_files_rewritten.append(path.name)
            report.events_rewritten += len(changed)
    if digests:
        with repo.session() as session:
            for row in session.scalars(select(m.AppliedEvent).where(m.AppliedEvent.id.in_(list(digests)))):
                row.digest = digests[row.id]


# -- the database's freed pages ---------------------------------------------------------------------


def compact(repo: Repo) -> None:
    """Rewrite the database so that deleted rows leave nothing in freed pages, indexes or the WAL.
    A StorageError when another process keeps it from finishing: the data is forgotten, its old pages
    not yet overwritten; running forget again (idempotent) finishes it."""
    engine = repo.engine
    fix = "stop `mailsync run` (and other readers) for a moment, then run the same `mailsync forget` again"
    try:
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                if conn.execute(text("SELECT name FROM sqlite_master WHERE name = 'message_fts'")).first():
                    conn.execute(text("INSERT INTO message_fts(message_fts) VALUES ('optimize')"))
                    conn.commit()
                conn.execute(text("VACUUM"))
                busy = conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)")).first()
                conn.commit()
            if busy is not None and busy[0]:
                raise StorageError("the database's write-ahead log could not be truncated (in use)", fix=fix)
        elif engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM"))
    except OperationalError as exc:
        raise StorageError(f"cannot compact the database: {exc.orig}", fix=fix) from exc
