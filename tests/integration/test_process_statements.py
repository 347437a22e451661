"""Processing writes what it parsed of a batch's messages in one UPDATE round, not one per message:
the claim leaves the columns fill_parsed sets unread, so every message of the batch updates the same
column list whatever its values (a sender or not, attachments or not) and the rows go in one
executemany. The batch's new threads and suggestions are inserted a round each, not a row per statement.
Real SQLite, the real parse worker, the demo CRM."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select

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
    written: list[str] = []  # every UPDATE of messages, every INSERT of threads and suggestions

    def keep(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE message SET") and "body_text" in statement:
            updates.append(len(parameters) if executemany else 1)
        if statement.startswith(("UPDATE message SET", "INSERT INTO thread", "INSERT INTO suggestion ")):
            written.append(statement.split(" (")[0].split(" SET")[0])

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
    with repo.session() as session:
        threads = session.scalar(select(func.count()).select_from(m.Thread))
        suggestions = session.scalar(select(func.count()).select_from(m.Suggestion))
    # New threads and suggestions go in a multi-row INSERT each (an insert sentinel: models.Thread.key),
    # not a statement per row; the messages are updated twice: what parsing found, then their threads.
    assert threads >= 20
    assert written.count("INSERT INTO thread") <= 2
    assert suggestions >= 10
    assert written.count("INSERT INTO suggestion") <= 2
    assert written.count("UPDATE message") == 2
