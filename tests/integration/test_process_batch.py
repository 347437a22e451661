"""The processing stage's batch shortcuts change nothing: the demo mailbox plus generated mail, processed
with threads assigned a batch at a time and stored matches reused, gives the threads and suggestions
that threading one message at a time and re-matching every stored message give. Real SQLite and
PostgreSQL databases, the real parse worker, the demo CRM."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from bench.mailgen import write_eml
from config.settings import load_settings
from mailsync.admin.crm_import import import_crm
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline import followups
from mailsync.pipeline.importer import import_source
from mailsync.pipeline.ingest import Pipeline
from storage import models as m
from storage import threads as threading_store
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import DEMO, shared_pg_url, write_config

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from sqlalchemy.orm import Session

OWNER = "dana@northwind.example"
pytestmark = pytest.mark.slow


def _one_at_a_time(session: Session, batch: Sequence[threading_store.ThreadInput]) -> None:
    for item in batch:
        threading_store.assign_thread(session, **item._asdict())


def _run(base: Path, mail: Path, parse_worker, database_url: str | None) -> tuple[object, ...]:
    base.mkdir()
    settings = load_settings(write_config(base, database_url=database_url))
    repo = Repo(settings.database_url)
    repo.upgrade()
    try:
        import_crm(settings, repo, [DEMO / "crm"], {})
        pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)
        pipeline.refresh_crm()
        import_source(pipeline, FileSource(DEMO / "Maildir", "dana"), OWNER)
        import_source(pipeline, FileSource(mail, "dana"), OWNER)
        with repo.session() as s:
            suggestions = sorted(
                s.execute(
                    select(m.Suggestion.kind, m.Suggestion.key, m.Suggestion.payload, m.Suggestion.evidence)
                    .add_columns(m.Suggestion.status, m.Suggestion.confidence, m.Suggestion.owner_rep)
                    .order_by(m.Suggestion.key)
                ),
                key=repr,
            )
            threads = {}
            for fingerprint, key in s.execute(
                select(m.Message.fingerprint, m.Thread.key).join(m.Thread, m.Thread.id == m.Message.thread_id)
            ):
                threads.setdefault(key, set()).add(fingerprint)
        return tuple(map(tuple, suggestions)), threads
    finally:
        repo.dispose()


@pytest.mark.both_dbs
def test_batched_processing_equals_one_message_at_a_time(
    tmp_path, parse_worker, monkeypatch, db_url, request
):
    mail = write_eml(tmp_path / "mail", 240, seed=3)
    batched = _run(tmp_path / "batched", mail, parse_worker, db_url)
    monkeypatch.setattr(threading_store, "assign_threads", _one_at_a_time)
    monkeypatch.setattr(followups, "_matches", followups.MatchCache(size=0))
    other = shared_pg_url(request) if db_url else None  # a second, empty database for the reference run
    reference = _run(tmp_path / "reference", mail, parse_worker, other)
    suggestions, threads = batched
    assert suggestions == reference[0]
    assert threads == reference[1]
    assert len(suggestions) > 10
    assert any(len(members) > 1 for members in threads.values())
