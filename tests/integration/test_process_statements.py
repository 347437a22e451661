"""Processing writes what it parsed of a batch's messages in one UPDATE round, not one per message:
the claim leaves the columns fill_parsed sets unread, so every message of the batch updates the same
column list whatever its values (a sender or not, attachments or not) and the rows go in one
executemany. Real SQLite, the real parse worker, the demo CRM."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from bench.mailgen import write_eml
from mailsync.admin.crm_import import import_crm
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.importer import import_source
from storage import models as m
from tests.conftest import DEMO

OWNER = "dana@northwind.example"
pytestmark = pytest.mark.slow


def test_a_batch_of_parsed_messages_is_one_update(tmp_path, settings, repo, pipeline):
    mail = write_eml(tmp_path / "mail", 60, seed=11)
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline.refresh_crm()
    updates: list[int] = []  # rows per UPDATE of what parsing fills in

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE message SET") and "body_text" in statement:
            updates.append(len(parameters) if executemany else 1)

    event.listen(repo.engine, "before_cursor_execute", keep)
    try:
        import_source(pipeline, FileSource(mail, "bench"), OWNER)
    finally:
        event.remove(repo.engine, "before_cursor_execute", keep)
    with repo.session() as session:
        parsed = session.scalars(select(m.Message.id).where(m.Message.status == "parsed")).all()
    assert len(parsed) == 60
    assert sum(updates) == 60
    assert updates == [60]  # one batch (process.BATCH is 200): one statement
