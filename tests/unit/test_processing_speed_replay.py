"""A replay from the parse stage writes only what changed: a message whose parse gives its stored
headers and text again is not updated (an UPDATE of the text rewrites its full-text index entry), and
a batch's participants go in one executemany, not one INSERT apiece. The database ends the same.
Real SQLite, the real parse worker, the demo CRM."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select

from bench.mailgen import write_eml
from mailsync.admin.crm_import import import_crm
from mailsync.admin.replay import Selection, replay
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.importer import import_source
from storage import models as m
from tests.conftest import DEMO

OWNER = "dana@northwind.example"
pytestmark = pytest.mark.slow


def _state(repo):
    with repo.session() as session:
        messages = session.execute(
            select(m.Message.fingerprint, m.Message.status, m.Message.subject, m.Message.body_text).order_by(
                m.Message.id
            )
        ).all()
        people = session.execute(
            select(
                m.Participant.message_pk, m.Participant.role, m.Participant.email, m.Participant.contact_id
            ).order_by(m.Participant.id)
        ).all()
    return messages, people


def test_replay_rewrites_no_unchanged_text_and_inserts_participants_per_batch(
    tmp_path, settings, repo, pipeline
):
    mail = write_eml(tmp_path / "mail", 40, seed=5)
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline.refresh_crm()
    import_source(pipeline, FileSource(mail, "bench"), OWNER)
    before = _state(repo)
    statements: list[tuple[str, int]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, len(parameters) if executemany else 1))

    event.listen(repo.engine, "before_cursor_execute", keep)
    try:
        replay(pipeline, Selection(from_stage="parse"))
    finally:
        event.remove(repo.engine, "before_cursor_execute", keep)
    assert _state(repo) == before
    assert not [s for s, _ in statements if s.startswith("UPDATE message SET") and "body_text" in s]
    inserts = [rows for s, rows in statements if s.startswith("INSERT INTO participant")]
    assert inserts == [len(before[1])]  # one batch (process.BATCH is 200): one statement
