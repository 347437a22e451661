"""`mailsync backup DEST` and `mailsync restore SRC`: the database, the archive and the event log, taken
while the daemon runs.

    DEST/database/mailsync.db | mailsync.pgdump     the database snapshot (storage/backup.py)
    DEST/archive/...                                 blobs/ and journal/, the archive's own layout
    DEST/events/events-YYYY-MM.jsonl                 the event log
    DEST/MANIFEST.json                               written last: the backup is complete

The order makes the copy consistent without stopping anything: first the database snapshot; then the
archive, where every blob the snapshot names already lies (a blob is durable before the commit that
names it) and the provenance journal holds at least what the snapshot holds (it is appended first,
too); then the event log, which holds every event the snapshot applied (an event is appended before it
is applied). What arrives meanwhile is in the archive or log copy but not in the snapshot, and the
daemon after a restore takes it from the servers again: the same bytes are stored once. Blobs never
change, so a backup into the same directory again copies only the new ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from config.errors import StorageError
from storage import backup as snapshots
from storage import models as m
from storage.journal import RESERVE
from storage.private import private_dir
from storage.repo import Repo

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from config.settings import Settings

MANIFEST = "MANIFEST.json"
_TEMPORARY = ".tmp-"  # the archive's half-written files: never copied (nor the journal's RESERVE)


@dataclass
class BackupReport:
    directory: str
    database: str  # sqlite | postgresql
    schema: str | None
    messages: int
    files_copied: int
    files_unchanged: int
    bytes_copied: int
    finished_at: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def backup(settings: Settings, dest: Path, advance: Callable[[int], None] | None = None) -> BackupReport:
    """Snapshot the database, then copy the archive and the event log into `dest`; MANIFEST.json last."""
    kind = snapshots.backend(settings.database_url)
    private_dir(dest)
    (dest / MANIFEST).unlink(missing_ok=True)  # incomplete until written again
    repo = Repo(settings.database_url)
    try:
        repo.require_current_schema()
        schema = repo.schema_revisions()[0]
        with repo.session() as session:
            messages = int(session.scalar(select(func.count()).select_from(m.Message)) or 0)
        snapshots.snapshot(settings.database_url, private_dir(dest / "database"))
    finally:
        repo.dispose()
    report = BackupReport(str(dest), kind, schema, messages, 0, 0, 0)
    for source, target in ((settings.archive_dir, dest / "archive"), (settings.events_dir, dest / "events")):
        _copy_tree(source, target, report, advance)
    report.finished_at = datetime.now(UTC).isoformat()
    _write_json(dest / MANIFEST, report.as_json())
    return report


def files_to_copy(settings: Settings) -> int:
    """How many files a backup looks at (for a progress bar)."""
    return sum(1 for root in (settings.archive_dir, settings.events_dir) for _ in _files(root))


def restore(settings: Settings, source: Path, *, force: bool) -> BackupReport:
    """Put a backup back in the config's database, archive and event log; refuses to overwrite data
    unless `force`."""
    manifest = _manifest(source)
    kind = snapshots.backend(settings.database_url)
    if manifest["database"] != kind:
        raise StorageError(
            f"{source} holds a {manifest['database']} backup; the config's database is {kind}",
            fix="restore into a database of the same kind (database_url in the config)",
        )
    if not force:
        _refuse_if_in_use(settings)
    file = snapshots.SQLITE_FILE if kind == "sqlite" else snapshots.PG_FILE
    snapshots.restore(source / "database" / file, settings.database_url)
    report = BackupReport(
        str(source), kind, manifest.get("schema"), int(manifest.get("messages", 0)), 0, 0, 0
    )
    for origin, target in (
        (source / "archive", settings.archive_dir),
        (source / "events", settings.events_dir),
    ):
        _copy_tree(origin, target, report, None)
    report.finished_at = datetime.now(UTC).isoformat()
    return report


def _manifest(source: Path) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StorageError(
            f"{source} is not a complete backup (no {MANIFEST})",
            fix="point at a directory `mailsync backup` finished writing",
        ) from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"{source / MANIFEST} cannot be read: {exc}", fix="use another backup") from exc
    return found


def _refuse_if_in_use(settings: Settings) -> None:
    repo = Repo(settings.database_url)
    try:
        current = repo.schema_revisions()[0]
        if current is not None:
            with repo.session() as session:
                held = session.scalar(select(func.count()).select_from(m.Message)) or 0
            if held:
                raise StorageError(
                    f"the config's database already holds {held} messages",
                    fix="restore into an empty database, or pass --force to replace it",
                )
    finally:
        repo.dispose()


def _files(root: Path) -> Iterator[Path]:
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.name.startswith(_TEMPORARY) and path.name != RESERVE:
                yield path


def _copy_tree(
    source: Path, target: Path, report: BackupReport, advance: Callable[[int], None] | None
) -> None:
    """Copy every file; a blob (immutable) already there with its size is left alone."""
    for path in _files(source):
        copy = target / path.relative_to(source)
        immutable = "blobs" in path.relative_to(source).parts
        if immutable and copy.is_file() and copy.stat().st_size == path.stat().st_size:
            report.files_unchanged += 1
        else:
            private_dir(copy.parent)
            _copy_file(path, copy)
            report.files_copied += 1
            report.bytes_copied += copy.stat().st_size
        if advance is not None:
            advance(1)


def _copy_file(path: Path, copy: Path) -> None:
    """Whole or absent: a temporary file beside the target, fsynced, renamed over it."""
    fd, temporary = tempfile.mkstemp(prefix=_TEMPORARY, dir=copy.parent)
    try:
        with os.fdopen(fd, "wb") as out, path.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        Path(temporary).replace(copy)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise StorageError(f"cannot copy {path} to {copy}: {exc.strerror}", fix="check free space") from exc


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    temporary.replace(path)
