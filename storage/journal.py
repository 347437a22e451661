"""The provenance journal: where every copy of every message was seen, appended beside the archive.

Layout (stable, append-only, one JSON object a line, in the order written):

    <archive_dir>/journal/provenance-YYYY-MM.jsonl     (the month of `seen_at`, UTC)
    <archive_dir>/journal/.reserve                     room kept for the lines on a full disk (RESERVE)

    {"type": "copy", "sha256", "size", "fingerprint", "message_id", "mailbox", "owner", "folder",
     "uidvalidity", "uid", "path", "seen_at"}        one copy: the blob, its message, where it was seen
    {"type": "cursor", "mailbox", "folder", "uidvalidity", "last_uid", "at"}
                                                     where a capture batch moved a folder's cursor

Capture writes a batch's lines, makes them durable (one fsync per batch) and only then commits the
rows that name them, like the blobs. The journal lives on local disk under `archive_dir` whatever the
blob store is (`Journal.of(settings)`; storage/archive.py: BlobStore), and that fsync is its own: it never
counts on the store's sync(). With the filesystem Archive on the same file system, the batch's syncfs
has written the lines already and the fsync finds nothing left; with a store elsewhere (a bucket), the
fsync is what makes them durable. So the journal holds at least what the database holds: a line
whose commit never happened (a crash, a refused batch, a copy captured twice) is harmless, because a
rebuild recognises a copy by its blob and locator and a message by its fingerprint. A torn last line
(a crash in the middle of a write) is skipped when read, and the next append starts a new line.
Archive + this journal + the event log rebuild the database (`mailsync rebuild`), folder cursors included.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from config.errors import ArchiveError
from storage.appending import appending, write_all
from storage.private import FILE_MODE, fsync_path, private_dir
from storage.records import Provenance

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from pathlib import Path

    from config.settings import Settings

log = structlog.get_logger()
DIRECTORY = "journal"
# Ballast beside the month files (1 % of the disk, at most 1 MiB): on a full disk, blobs a batch has
# written could otherwise never be named (their lines would not fit, nothing would commit, and the
# next try would need room again). It is given up for the lines and made again once there is room.
RESERVE = ".reserve"
RESERVE_MAX = 1 << 20
_LOCK = threading.Lock()  # mailbox threads append whole batches, one at a time


@dataclass(frozen=True, slots=True)
class CopySeen:
    """One copy of a message: its blob, the message's identity, where and when it was seen."""

    sha256: str
    size: int
    fingerprint: str | None  # None only in a hand-made line: the rebuild reads the blob then
    message_id: str | None
    owner: str  # the mailbox's owner when seen
    provenance: Provenance
    seen_at: datetime  # naive UTC, as the database keeps it


@dataclass(frozen=True, slots=True)
class CursorMoved:
    mailbox: str
    folder: str
    uidvalidity: int | None
    last_uid: int
    at: datetime  # naive UTC


Entry = CopySeen | CursorMoved


class Journal:
    """Appends and reads the provenance journal of one archive."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def beside(cls, archive_root: Path) -> Journal:
        return cls(archive_root / DIRECTORY)

    @classmethod
    def of(cls, settings: Settings) -> Journal:
        """The journal the settings place: <archive_dir>/journal, whatever the blob store is."""
        return cls.beside(settings.archive_dir)

    def write(self, entries: Sequence[Entry]) -> Path | None:
        """Append `entries` (NOT yet durable: sync() the returned file before a commit names them);
        None when there were none. All of them go to the month file of the first one. On a full disk
        the reserve is given up for them: the blobs they name are written already."""
        lines = [json.dumps(_encode(entry), sort_keys=True) for entry in entries]
        if not lines:
            return None
        first = entries[0]
        when = first.seen_at if isinstance(first, CopySeen) else first.at
        path = self.directory / f"provenance-{when:%Y-%m}.jsonl"
        data = ("\n".join(lines) + "\n").encode("ascii")  # json escapes everything else
        try:
            try:
                self._append(path, data)
            except OSError as exc:
                if exc.errno != errno.ENOSPC or not self._spend_reserve():
                    raise
                self._append(path, data)
        except OSError as exc:
            raise ArchiveError(
                f"cannot append to the provenance journal {path}: {exc.strerror}",
                fix="free disk space or fix permissions on archive_dir; the batch is retried",
            ) from exc
        self.keep_reserve()
        return path

    def _append(self, path: Path, data: bytes) -> None:
        with _LOCK, appending(path) as fd:  # under the lock a rewrite (`mailsync forget`) also takes
            size = os.fstat(fd).st_size
            new = not size  # made now, most likely (an empty one made before: one fsync more)
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line from a crash or a full disk
                data = b"\n" + data
            try:
                write_all(fd, data)
            except OSError:
                with contextlib.suppress(OSError):  # else the reader skips the torn line
                    os.ftruncate(fd, size)  # none of it, rather than lines the retry writes again
                raise
        if new:
            fsync_path(self.directory)  # the new month file's name

    def _spend_reserve(self) -> bool:
        try:
            (self.directory / RESERVE).unlink()
        except FileNotFoundError:
            return False
        log.warning("journal_reserve_spent", directory=str(self.directory), reason="disk full")
        return True

    def keep_reserve(self) -> None:
        """Best effort: the reserve made when it is missing (a new archive, or spent) and the disk has
        twice its size free, so that filling the disk never comes from here. Capture asks before it
        writes a batch's blobs, and write() after each append."""
        reserve = self.directory / RESERVE
        if reserve.exists():
            return
        try:
            private_dir(self.directory)
            disk = os.statvfs(self.directory)
            size = max(4096, min(RESERVE_MAX, disk.f_blocks * disk.f_frsize // 100))
            if disk.f_bavail * disk.f_frsize < 2 * size:
                return
            fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except OSError:  # made by another process meanwhile, or nothing to do now
            return
        try:
            write_all(fd, bytes(size))  # written, not sparse: the blocks are the point
        except OSError:
            reserve.unlink(missing_ok=True)  # too little to count on
        finally:
            os.close(fd)

    def sync(self, path: Path | None) -> None:
        """Make what write() appended to `path` durable (fsync: whatever the blob store's sync did)."""
        if path is None:
            return
        try:
            fsync_path(path)
        except OSError as exc:
            raise ArchiveError(
                f"cannot sync the provenance journal {path}: {exc.strerror}",
                fix="free disk space or fix permissions on archive_dir; the batch is retried",
            ) from exc

    def append(self, entries: Iterable[Entry]) -> None:
        self.sync(self.write(list(entries)))

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("provenance-*.jsonl")) if self.directory.exists() else []

    def line_count(self) -> int:
        """How many lines the journal has (for a progress bar; not parsed)."""
        total = 0
        for path in self.files():
            with path.open("rb") as data:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: data.read(1 << 20), b""))
        return total

    def __iter__(self) -> Iterator[Entry]:
        """Every entry, oldest file first, in the order written; torn or unreadable lines are logged
        and skipped (no commit ever named them: they were not durable before it)."""
        for path in self.files():
            with path.open(encoding="ascii", errors="replace") as lines:
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        yield _decode(json.loads(line))
                    except (ValueError, TypeError, KeyError) as exc:
                        log.warning("journal_line_skipped", path=str(path), line=number, error=str(exc))


def _encode(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, CursorMoved):
        return {
            "type": "cursor",
            "mailbox": entry.mailbox,
            "folder": entry.folder,
            "uidvalidity": entry.uidvalidity,
            "last_uid": entry.last_uid,
            "at": _iso(entry.at),
        }
    where = entry.provenance
    return {
        "type": "copy",
        "sha256": entry.sha256,
        "size": entry.size,
        "fingerprint": entry.fingerprint,
        "message_id": entry.message_id,
        "owner": entry.owner,
        "mailbox": where.mailbox,
        "folder": where.folder,
        "uidvalidity": where.uidvalidity,
        "uid": where.uid,
        "path": where.path,
        "seen_at": _iso(entry.seen_at),
    }


def _decode(row: dict[str, Any]) -> Entry:
    if row["type"] == "cursor":
        return CursorMoved(
            mailbox=str(row["mailbox"]),
            folder=str(row["folder"]),
            uidvalidity=_int(row.get("uidvalidity")),
            last_uid=int(row["last_uid"]),
            at=_time(row["at"]),
        )
    if row["type"] != "copy":
        msg = f"unknown entry type {row['type']!r}"
        raise ValueError(msg)
    sha256 = str(row["sha256"])
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):  # noqa: PLR2004 - hex SHA-256
        msg = "not a SHA-256"
        raise ValueError(msg)
    return CopySeen(
        sha256=sha256,
        size=int(row["size"]),
        fingerprint=row.get("fingerprint"),
        message_id=row.get("message_id"),
        owner=str(row["owner"]),
        provenance=Provenance(
            mailbox=str(row["mailbox"]),
            folder=row.get("folder"),
            uidvalidity=_int(row.get("uidvalidity")),
            uid=_int(row.get("uid")),
            path=row.get("path"),
        ),
        seen_at=_time(row["seen_at"]),
    )


def _iso(value: datetime) -> str:
    return (
        value.replace(tzinfo=UTC).isoformat() if value.tzinfo is None else value.astimezone(UTC).isoformat()
    )


def _time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))
