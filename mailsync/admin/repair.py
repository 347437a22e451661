"""Archive repair: restore missing or corrupt blobs from the copies the database knows.

`mailsync verify` finds what is wrong; `repair_archive` fixes what it can:

    missing or corrupt blob ─> its provenance rows ─> files first, then IMAP (one connection per mailbox)
                                (every place these     │ file: re-read the imported file; a Maildir file
                                 exact bytes were      │       may since have gained flags (":2,S") or
                                 seen)                 │       moved new/ -> cur/: matched by name prefix
                                                       │ imap: EXAMINE the folder, same UIDVALIDITY?,
                                                       │       FETCH the UID with BODY.PEEK
                                                       └─> SHA-256 of the bytes == the blob's name?
                                                             yes: written back durably and read back; a
                                                                  corrupt file is renamed aside first,
                                                                  to <sha>.zst.corrupt (kept as evidence)
                                                             no:  the next copy; none left: unrepairable,
                                                                  with one reason per copy tried
    .tmp-* left by a crash ─> removed, unless younger than PARTIAL_MIN_AGE (a write may be in progress)
    orphan (on disk, unknown to the database) ─> never deleted (it is still mail): reported by path

Only bytes that hash to the blob's name are written, so a repair never puts other mail under a name
(Dovecot returns a stored message's bytes unchanged, so a live IMAP copy always qualifies). Big mail
comes through the sources' spool files and is hashed and written in chunks, never whole. Nothing on
the server changes (EXAMINE, BODY.PEEK) and no database row is written. Errors of one mailbox or
file (unreachable server, bad login, missing secret, missing folder) become that copy's reason.

A corrupt file is renamed aside rather than deleted: the damage is evidence (which bytes, where on
disk), and `Archive.put` never overwrites an existing path anyway. `*.zst.corrupt` files are outside
the archive's `*.zst` layout, so `verify` ignores them; delete them by hand once they are understood.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import structlog
from sqlalchemy import select

from config.errors import ArchiveError, CaptureError, SourceError, SourceUnavailable
from mailsync.mail.sources.files import FileSource
from mailsync.mail.sources.imap import ImapSource
from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from config.settings import Settings
    from storage.archive import Archive, VerifyReport
    from storage.records import RawMessage
    from storage.repo import Repo

log = structlog.get_logger()

PARTIAL_MIN_AGE = 600.0  # seconds; a younger .tmp-* file may belong to a write still in progress
CORRUPT_SUFFIX = ".corrupt"
NO_COPY = "no copy left on the server"
_CHUNK = 500  # blob hashes per IN (...) query

Damage = Literal["missing", "corrupt"]


@dataclass(frozen=True, slots=True)
class Repaired:
    sha256: str
    damage: Damage
    source: str  # the provenance locator the bytes came from
    kept: Path | None = None  # the corrupt file, renamed aside


@dataclass(frozen=True, slots=True)
class Unrepairable:
    sha256: str
    damage: Damage
    reasons: tuple[str, ...]  # one per copy tried: "<locator>: <why>"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "the database knows no copy of it"


@dataclass
class RepairResult:
    repaired: list[Repaired] = field(default_factory=list)
    unrepairable: list[Unrepairable] = field(default_factory=list)
    partial_removed: list[Path] = field(default_factory=list)
    partial_kept: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it was kept)
    orphans: list[Path] = field(default_factory=list)  # kept: on disk, unknown to the database

    @property
    def ok(self) -> bool:
        """True when a new `verify` would find nothing (an orphan still needs a person's look)."""
        return not (self.unrepairable or self.orphans)


@dataclass(frozen=True, slots=True)
class _Copy:
    """One provenance row of a damaged blob."""

    sha256: str
    locator: str
    mailbox: str
    folder: str | None
    uidvalidity: int | None
    uid: int | None
    path: str | None
    gone_at: datetime | None


def repair_archive(
    report: VerifyReport,
    repo: Repo,
    archive: Archive,
    settings: Settings,
    *,
    partial_min_age: float = PARTIAL_MIN_AGE,
) -> RepairResult:
    """Restore what `report` found missing or corrupt from a copy that still has the same bytes.

    Also removes leftover `.tmp-*` files and lists orphans (never deletes them); see the module doc.
    """
    damaged: dict[str, Damage] = dict.fromkeys(report.missing, "missing")
    damaged.update(dict.fromkeys(report.corrupt, "corrupt"))
    job = _Job(archive, damaged)
    copies = _load_copies(repo, sorted(damaged))
    for copy in copies:
        if copy.uid is None and copy.path is not None:
            _from_file(job, copy)
    _from_imap(job, settings, [c for c in copies if c.uid is not None])
    result = job.result
    for sha, damage in sorted(job.pending.items()):
        reasons = tuple(job.reasons.get(sha, ()))
        result.unrepairable.append(Unrepairable(sha, damage, reasons))
        log.warning("blob_unrepairable", sha256=sha, damage=damage, reasons=list(reasons))
    _remove_partial(report.partial, partial_min_age, result)
    result.orphans = [archive.path_for(sha) for sha in report.orphans]
    log.info(
        "archive_repair_finished",
        repaired=len(result.repaired),
        unrepairable=len(result.unrepairable),
        partial_removed=len(result.partial_removed),
        orphans=len(result.orphans),
    )
    return result


class _Job:
    """The blobs still to repair, why each copy tried so far failed, and what was done."""

    def __init__(self, archive: Archive, damaged: dict[str, Damage]) -> None:
        self.archive = archive
        self.pending = dict(damaged)
        self.reasons: dict[str, list[str]] = defaultdict(list)
        self.result = RepairResult()

    def wants(self, copy: _Copy) -> bool:
        return copy.sha256 in self.pending

    def fail(self, copy: _Copy, why: str) -> None:
        if self.wants(copy):
            self.reasons[copy.sha256].append(f"{copy.locator}: {why}")

    def offer(self, copy: _Copy, raw: RawMessage) -> None:
        """Write `raw` back as the copy's blob if its bytes hash to the blob's name."""
        if not self.wants(copy):
            return
        try:
            got = _sha256_of(raw)
        except OSError as exc:
            self.fail(copy, f"cannot read what the source delivered: {exc.strerror}")
            return
        if got != copy.sha256:
            self.fail(copy, f"bytes differ (they hash to {got[:12]})")
            return
        self.accept(copy, raw)

    def accept(self, copy: _Copy, raw: RawMessage) -> None:
        """Write `raw`, whose bytes hash to the copy's blob name, back into the archive."""
        try:
            kept = _write_back(self.archive, copy.sha256, raw)
        except ArchiveError as exc:
            self.fail(copy, f"cannot write it back: {exc}")
            return
        damage = self.pending.pop(copy.sha256)
        self.result.repaired.append(Repaired(copy.sha256, damage, copy.locator, kept))
        log.info("blob_repaired", sha256=copy.sha256, damage=damage, source=copy.locator, kept=str(kept))


def _load_copies(repo: Repo, shas: list[str]) -> list[_Copy]:
    p = m.Provenance
    copies: list[_Copy] = []
    with repo.session() as session:
        for start in range(0, len(shas), _CHUNK):
            rows = session.execute(
                select(p.blob_sha256, p.locator, p.mailbox, p.folder, p.uidvalidity, p.uid, p.path, p.gone_at)
                .where(p.blob_sha256.in_(shas[start : start + _CHUNK]))
                .order_by(p.id)
            )
            copies += [_Copy(*row) for row in rows]
    return copies


def _sha256_of(raw: RawMessage) -> str:
    digest = hashlib.sha256()
    for chunk in raw.chunks():  # a spooled (huge) message is never read whole
        digest.update(chunk)
    return digest.hexdigest()


def _write_back(archive: Archive, sha256: str, raw: RawMessage) -> Path | None:
    """Store `raw` as blob `sha256`; a file already there that does not read back is renamed aside."""
    kept: Path | None = None
    if archive.exists(sha256):
        try:
            archive.get(sha256)
        except ArchiveError:
            kept = archive.set_aside(sha256, CORRUPT_SUFFIX)
        else:
            return None  # restored meanwhile (a sync stored the same bytes)
    try:
        _store(archive, sha256, raw)
    except ArchiveError:
        if kept is not None and not archive.exists(sha256):
            with contextlib.suppress(OSError):  # else the corrupt bytes stay kept aside
                kept.replace(archive.path_for(sha256))  # leave the archive as it was found
        raise
    return kept


def _store(archive: Archive, sha256: str, raw: RawMessage) -> None:
    written = archive.put_stream(raw.chunks(), raw.size)  # the path is free now, so it writes
    if written != sha256:  # a file changed between hashing and writing: stored under its own name
        raise ArchiveError(
            f"the bytes of blob {sha256[:12]} changed while being written back (they hash to {written[:12]})",
            fix="re-run `mailsync verify --repair`",
        )
    archive.get(sha256)  # read back: ArchiveError when the disk did not keep it


# -- files ------------------------------------------------------------------------------------------


def _from_file(job: _Job, copy: _Copy) -> None:
    if not job.wants(copy) or copy.path is None:
        return
    candidates = _file_candidates(copy.path)
    if not candidates:
        job.fail(copy, "the imported file is gone")
        return
    for path in candidates:
        try:
            for raw in FileSource(path, copy.mailbox).read(copy.folder or "", path):
                if _sha256_of(raw) == copy.sha256:
                    job.accept(copy, raw)
                    return
        except SourceError as exc:
            job.fail(copy, str(exc))
            return
        except OSError as exc:  # a big file is read as it is hashed
            job.fail(copy, f"cannot read {path}: {exc.strerror}")
            return
    job.fail(copy, "bytes differ: the file changed since it was imported")


def _file_candidates(stored: str) -> list[Path]:
    """The files that may hold a file copy now (see FileSource.read for how the locator was formed)."""
    path = Path(stored)
    if path.is_file():
        return [path]
    head, sep, index = stored.rpartition("#")
    if sep and index.isdigit() and Path(head).is_file():
        return [Path(head)]  # message number `index` of an mbox file
    # A Maildir file's name gains flags after ":2," and it moves from new/ to cur/ once seen.
    folders = [path.parent]
    if path.parent.name in {"new", "cur"}:
        folders.append(path.parent.with_name("cur" if path.parent.name == "new" else "new"))
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found += (folder / path.name, *sorted(folder.glob(glob.escape(path.name) + ":2,*")))
    return [p for p in found if p.is_file()]


# -- IMAP -------------------------------------------------------------------------------------------


def _from_imap(job: _Job, settings: Settings, copies: list[_Copy]) -> None:
    by_mailbox: dict[str, list[_Copy]] = defaultdict(list)
    for copy in copies:
        if copy.gone_at is not None:
            job.fail(copy, f"{NO_COPY} (gone since {copy.gone_at:%Y-%m-%d %H:%M} UTC)")
        else:
            by_mailbox[copy.mailbox].append(copy)
    configured = {mb.name: mb for mb in settings.mailboxes}
    for name, group in sorted(by_mailbox.items()):
        wanted = [c for c in group if job.wants(c)]
        mailbox = configured.get(name)
        if not wanted:
            continue  # repaired from another copy already
        if mailbox is None:
            _fail_each(job, wanted, f"mailbox {name!r} not configured")
            continue
        if not mailbox.host:
            _fail_each(job, wanted, f"mailbox {name!r} has no IMAP host in the config")
            continue
        folders = sorted(_by_folder(wanted).items())
        done = 0
        try:
            with ImapSource.configured(mailbox, settings) as source:  # fetches big mail as sync does
                for (folder, validity), in_folder in folders:
                    try:
                        _from_folder(job, source, folder, validity, in_folder)
                    except SourceUnavailable:
                        raise  # the connection is gone: every folder left gets this reason below
                    except SourceError as exc:  # e.g. the folder was deleted
                        _fail_each(job, in_folder, str(exc))
                    done += 1
        except CaptureError as exc:  # cannot connect or log in, a missing secret, a dropped connection
            for _key, in_folder in folders[done:]:
                _fail_each(job, in_folder, str(exc))


def _by_folder(copies: Iterable[_Copy]) -> dict[tuple[str, int], list[_Copy]]:
    found: dict[tuple[str, int], list[_Copy]] = defaultdict(list)
    for copy in copies:
        found[copy.folder or "INBOX", copy.uidvalidity or 0].append(copy)
    return found


def _from_folder(job: _Job, source: ImapSource, folder: str, validity: int, copies: list[_Copy]) -> None:
    status = source.select(folder)
    if status.uidvalidity != validity:
        why = f"UIDVALIDITY changed (was {validity}, now {status.uidvalidity}): its UIDs are void"
        _fail_each(job, copies, why)
        return
    by_uid: dict[int, list[_Copy]] = defaultdict(list)
    for copy in copies:
        if copy.uid is not None and job.wants(copy):
            by_uid[copy.uid].append(copy)
    fetched: set[int] = set()
    for raw in source.fetch(status, list(by_uid)):
        uid = raw.provenance.uid or 0
        fetched.add(uid)
        for copy in by_uid.get(uid, []):
            job.offer(copy, raw)  # now: a spooled message's file is gone once the loop moves on
    for uid, gone in by_uid.items():
        if uid not in fetched:
            _fail_each(job, gone, f"{NO_COPY} (UID {uid} was deleted or moved)")


def _fail_each(job: _Job, copies: Iterable[_Copy], why: str) -> None:
    for copy in copies:
        job.fail(copy, why)


# -- leftovers --------------------------------------------------------------------------------------


def _remove_partial(names: Iterable[str], min_age: float, result: RepairResult) -> None:
    now = time.time()
    for name in names:
        path = Path(name)
        try:
            age = now - path.stat().st_mtime
            if age < min_age:
                why = f"modified {age:.0f} s ago: a write may still be in progress; re-run later"
                result.partial_kept.append((path, why))
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # its write finished, or someone removed it meanwhile
        except OSError as exc:
            result.partial_kept.append((path, f"cannot remove: {exc.strerror}"))
            continue
        result.partial_removed.append(path)
        log.info("partial_write_removed", path=str(path))
