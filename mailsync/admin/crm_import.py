"""CRM import as a whole: validate the CSV files, append the event, apply it to the store."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from mailsync.admin.crm_csv import CrmFiles, find_files, parse_delimiter, read_crm_files
from storage import models as m
from storage.crm import apply_crm_import, known_external_ids
from storage.eventlog import EventLog, digest_of

if TYPE_CHECKING:
    from collections import Counter
    from pathlib import Path

    from config.settings import Settings
    from storage.repo import Repo

log = structlog.get_logger()
KIND = "crm_import"


@dataclass
class CrmImportReport:
    files: CrmFiles
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    unchanged: bool = False  # the same rows were imported before: nothing appended or applied

    def summary(self) -> str | None:
        """The closing sentence for the operator, when the table alone would mislead."""
        rejected = len(self.files.errors)
        if not any(self.files.read.values()):
            return "nothing imported: the files hold no rows"
        if not any(self.files.rows.values()):
            return "nothing imported: every row was rejected"
        if rejected:
            before = " before" if self.unchanged else ""
            return f"{rejected} row(s) rejected; the good rows were imported{before}. Fix them and re-run."
        return "nothing changed: these rows were imported before" if self.unchanged else None


def import_crm(
    settings: Settings, repo: Repo, paths: list[Path], mapping: dict[str, str], delimiter: str | None = None
) -> CrmImportReport:
    """Validate, log and apply one CRM import. Bad rows are reported; good rows are kept.

    `delimiter` is `--delimiter` as given; None detects each file's from its header."""
    separator = parse_delimiter(delimiter)
    with repo.session() as session:
        known = known_external_ids(session)
    files = read_crm_files(find_files(paths), settings.stage_for, known, mapping, separator)
    payload = {kind: rows for kind, rows in files.rows.items() if rows}
    report = CrmImportReport(files=files)
    if not payload:  # an empty event would only make the next empty import look "imported before"
        log.info("crm_import_empty", rows_read=sum(files.read.values()), rejected=len(files.errors))
        return report
    digest = digest_of(KIND, payload)
    with repo.session() as session:
        if session.scalar(select(m.AppliedEvent.id).where(m.AppliedEvent.digest == digest)) is not None:
            report.unchanged = True
            return report
    with repo.session() as session:
        report.counts = apply_crm_import(session, payload)
        if not any(c["new"] or c["updated"] for c in report.counts.values()):
            session.rollback()  # every row is as stored (e.g. `mailsync export` read back): not an event
            report.unchanged = True
            return report
        # Appended before the commit that applies it, as every event is.
        event = EventLog(settings.events_dir).append(KIND, payload, actor=f"cli:{getpass.getuser()}")
        session.add(m.AppliedEvent(id=event.id, kind=KIND, digest=digest))
    log.info(
        "crm_imported",
        event_id=event.id,
        rows={k: len(v) for k, v in payload.items()},
        rejected=len(files.errors),
    )
    return report
