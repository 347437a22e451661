"""CRM import as a whole: validate the CSV files, append the event, apply it to the store."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select

from mailsync.crm_csv import CrmFiles, find_files, read_crm_files
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


def import_crm(settings: Settings, repo: Repo, paths: list[Path], mapping: dict[str, str]) -> CrmImportReport:
    """Validate, log and apply one CRM import. Bad rows are reported; good rows are kept."""
    with repo.session() as session:
        known = known_external_ids(session)
    files = read_crm_files(find_files(paths), settings.stage_for, known, mapping)
    payload = {kind: rows for kind, rows in files.rows.items() if rows}
    report = CrmImportReport(files=files)
    digest = digest_of(KIND, payload)
    with repo.session() as session:
        if session.scalar(select(m.AppliedEvent.id).where(m.AppliedEvent.digest == digest)) is not None:
            report.unchanged = True
            return report
    event = EventLog(settings.events_dir).append(KIND, payload, actor=f"cli:{getpass.getuser()}")
    with repo.session() as session:
        report.counts = apply_crm_import(session, payload)
        session.add(m.AppliedEvent(id=event.id, kind=KIND, digest=digest))
    log.info(
        "crm_imported",
        event_id=event.id,
        rows={k: len(v) for k, v in payload.items()},
        rejected=len(files.errors),
    )
    return report
