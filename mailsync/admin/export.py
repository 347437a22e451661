"""`mailsync export`: the CRM store as CSV and JSONL files, each complete or absent, safe in a spreadsheet.

Files, one per table and format (export_rows.py says what is in each):

    reps accounts contacts opportunities          DESIGN's import format: `crm import DIR` reads them back
    new_accounts new_contacts new_opportunities   captured from mail, no CRM id yet (same columns)
    activities proposals decisions                what mail and reps added

Every CSV cell goes through `neutralise` (a spreadsheet would run `=...`, `+...`, `-...`, `@...`,
or a cell opening with a tab or CR, as a formula), which the importer undoes, so a round trip is exact;
JSONL keeps the raw values. Each file is written under a hidden `.partial` name beside its target,
fsynced and renamed over it: an interrupted export leaves the previous file or the new one, never half
of one. Running it again rewrites the same files, byte for byte when nothing changed.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import structlog

from config.errors import ConfigError, StorageError
from mailsync.admin import export_rows as rows
from mailsync.admin.crm_csv import _COLUMNS as CRM_COLUMNS  # exactly what the importer reads
from mailsync.admin.crm_csv import FILES
from mailsync.admin.csv_records import neutralise
from storage import models as m
from storage.private import fsync_path, private_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy.orm import Session

    from storage.repo import Repo

log = structlog.get_logger()
GROUPS = ("accounts", "contacts", "reps", "opportunities", "activities", "proposals", "decisions")
FORMATS = ("csv", "jsonl")
PARTIAL = ".partial"
_ADVANCE_EVERY = 500  # rows between progress updates: a bar redraw per row would cost more than the row
COLUMNS = {
    "reps": ("email", "name", "team", "lead", "active", "timezone", "digest_at", "locale"),
    "accounts": ("id", "name", "domain"),
    "contacts": ("id", "account_id", "name", "email", "owner_rep"),
    "opportunities": ("id", "account_id", "name", "stage", "amount", "currency", "owner_rep", "created_at"),
}
COLUMNS = {
    "activities": ("thread_id", "thread_subject", "opportunity_id", "message_id", "sent_at", "from", "to",
                   "cc", "subject", "contact_ids", "account_ids", "automated", "attachments", "seen_by",
                   "first_seen_at", "provenance"),
    "proposals": ("key", "kind", "status", "summary", "confidence", "owner_rep", "thread_id",
                  "thread_subject", "created_at", "updated_at", "decided_at", "decided_by", "decided_how",
                  "payload", "evidence"),
    "decisions": ("id", "proposal", "kind", "verdict", "who", "how", "at", "edits", "event_id"),
}  # fmt: skip


class Progress(Protocol):
    """Told about each table as it is written: a progress bar on a terminal."""

    def start(self, table: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...


@dataclass(frozen=True, slots=True)
class ExportedFile:
    table: str
    format: str
    path: Path
    rows: int


@dataclass
class ExportReport:
    out: Path
    files: list[ExportedFile] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "files": [
                {"table": f.table, "format": f.format, "path": str(f.path), "rows": f.rows}
                for f in self.files
            ],
        }


@dataclass(frozen=True, slots=True)
class _Table:
    name: str  # the file's stem
    group: str  # what --only calls it
    columns: tuple[str, ...]
    count: Callable[[Session], int]
    rows: Callable[[Session, rows.References], Iterator[rows.Row]]


def _tables(stage_for: Callable[[str], str | None]) -> list[_Table]:
    crm: dict[str, tuple[Any, Callable[..., Iterator[rows.Row]]]] = {
        "reps": (m.Rep, rows.reps),
        "accounts": (m.Account, rows.accounts),
        "contacts": (m.Contact, rows.contacts),
        "opportunities": (m.Opportunity, partial(rows.opportunities, stage_for=stage_for)),
    }
    tables = [
        _Table(
            kind if known else f"new_{kind}",
            kind,
            CRM_COLUMNS[kind],
            partial(rows.count_crm, model=crm[kind][0], known=known),
            partial(crm[kind][1], known=known),
        )
        for known in (True, False)
        for kind in FILES
        if known or kind != "reps"
    ]
    return [
        *tables,
        _Table("activities", "activities", COLUMNS["activities"], rows.count_activities, rows.activities),
        _Table("proposals", "proposals", COLUMNS["proposals"], partial(rows.count_of, model=m.Suggestion),
               rows.proposals),
        _Table("decisions", "decisions", COLUMNS["decisions"], partial(rows.count_of, model=m.Decision),
               rows.decisions),
    ]  # fmt: skip


def parse_only(value: str | None) -> tuple[str, ...]:
    """`--only accounts,contacts`: the groups to export (all when None); a ConfigError names a bad one."""
    if value is None:
        return GROUPS
    wanted = tuple(dict.fromkeys(part.strip().lower() for part in value.split(",") if part.strip()))
    unknown = [name for name in wanted if name not in GROUPS]
    if unknown or not wanted:
        raise ConfigError(
            f"--only {value!r}: {f'no table {unknown[0]!r}' if unknown else 'names no table'}",
            fix=f"name some of {','.join(GROUPS)}",
        )
    return wanted


def parse_format(value: str) -> tuple[str, ...]:
    """`--format csv|jsonl|both` as the formats to write."""
    formats = {"csv": ("csv",), "jsonl": ("jsonl",), "both": FORMATS}.get(value.strip().lower())
    if formats is None:
        raise ConfigError(
            f"--format {value!r} is not csv, jsonl or both", fix="write --format csv|jsonl|both"
        )
    return formats


def export(
    repo: Repo,
    out: Path,
    *,
    formats: tuple[str, ...],
    only: tuple[str, ...],
    stage_for: Callable[[str], str | None],
    progress: Progress | None = None,
) -> ExportReport:
    """Write the chosen tables to `out` in the chosen formats; every file is complete or not there."""
    _prepare(out)
    report = ExportReport(out=out)
    tables = [t for t in _tables(stage_for) if t.group in only]
    with repo.session() as session:
        _snapshot(session)
        refs = rows.References(session)
        for table in tables:
            if progress is not None:
                progress.start(table.name, table.count(session))
            written = _write_table(out, table, formats, table.rows(session, refs), progress)
            report.files.extend(written)
            log.info("export_written", table=table.name, rows=written[0].rows, formats=list(formats))
    fsync_path(out)
    return report


def _snapshot(session: Session) -> None:
    """One consistent view for every file, while a daemon may be writing: else a contact created
    between two tables would show in activities but not in contacts.csv. PostgreSQL needs REPEATABLE
    READ for that; SQLite a read transaction that pysqlite, left to itself, does not open for SELECTs."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    else:
        session.connection().exec_driver_sql("BEGIN")


def _prepare(out: Path) -> None:
    """Create `out` (0700: exports hold personal data), prove it writable, and drop files an interrupted
    export left under their temporary names."""
    try:
        private_dir(out)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: cannot write there ({exc.strerror or exc})",
            fix="pass a directory you may write to (it is created if missing): --out DIR",
        ) from exc
    for stale in out.glob(f".*{PARTIAL}"):
        stale.unlink(missing_ok=True)


def _write_table(
    out: Path, table: _Table, formats: tuple[str, ...], source: Iterator[rows.Row], progress: Progress | None
) -> list[ExportedFile]:
    """Write one table to each format in one pass over its rows; rename each file into place at the end."""
    files = {fmt: _Partial(out / f"{table.name}.{fmt}", encoding="utf-8-sig" if fmt == "csv" else "utf-8")
             for fmt in formats}  # fmt: skip
    try:
        writer = csv.writer(files["csv"].file) if "csv" in files else None
        if writer is not None:
            writer.writerow(table.columns)
        jsonl = files["jsonl"].file if "jsonl" in files else None
        count = 0
        for row in source:
            if writer is not None:
                writer.writerow([csv_cell(row[column]) for column in table.columns])
            if jsonl is not None:
                jsonl.write(json.dumps({c: row[c] for c in table.columns}, ensure_ascii=True) + "\n")
            count += 1
            if progress is not None and count % _ADVANCE_EVERY == 0:
                progress.advance(_ADVANCE_EVERY)
        if progress is not None:
            progress.advance(count % _ADVANCE_EVERY)
        for handle in files.values():
            handle.commit()
    except OSError as exc:
        raise StorageError(
            f"cannot write {table.name} to {out}: {exc.strerror or exc}",
            fix="free disk space or fix permissions, then run the export again (it rewrites every file)",
        ) from exc
    finally:
        for handle in files.values():
            handle.discard()
    return [ExportedFile(table.name, fmt, handle.path, count) for fmt, handle in files.items()]


def csv_cell(value: Any) -> str:
    """One value as a CSV cell a spreadsheet shows as text: lists and objects as JSON."""
    if type(value) is str:  # most cells: checked first
        return neutralise(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | dict):
        value = json.dumps(value, ensure_ascii=False)
    return neutralise(str(value))


class _Partial:
    """A file written under a hidden temporary name beside `path`, renamed over it by `commit`."""

    def __init__(self, path: Path, *, encoding: str) -> None:
        self.path = path
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL)
        self.temporary: str | None = temporary
        self.file: IO[str] = os.fdopen(fd, "w", encoding=encoding, newline="")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        assert self.temporary is not None  # noqa: S101 - committed once
        Path(self.temporary).replace(self.path)
        self.temporary = None

    def discard(self) -> None:
        """Remove the temporary file unless it was committed; called on every way out."""
        self.file.close()
        if self.temporary is not None:
            Path(self.temporary).unlink()
            self.temporary = None
