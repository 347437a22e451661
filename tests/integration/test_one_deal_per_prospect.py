"""A prospect's second mail outside the thread (a PO or a notice sent as new mail) continues the
deal already proposed; it does not propose a second new opportunity. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from mailsync.pipeline.ingest import Pipeline
from storage import models as m
from storage.archive import Archive
from storage.records import Provenance, RawMessage
from storage.repo import Repo

pytestmark = pytest.mark.integration


def _mail(message_id: str, subject: str, body: str, sender: str, day: int) -> bytes:
    return (
        f"From: Rachel Kim <{sender}>\r\nTo: dana@northwind.example\r\nSubject: {subject}\r\n"
        f"Date: Mon, {day:02d} Mar 2026 10:00:00 +0000\r\nMessage-ID: <{message_id}@prospect.example>\r\n\r\n"
        f"{body}\r\n"
    ).encode()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, repo: Repo) -> Iterator[Repo]:
    if request.param == "sqlite":
        yield repo
        return
    other = Repo(request.getfixturevalue("pg_fresh_url"))
    yield other
    other.dispose()


def _new_opportunities(repo: Repo) -> list[tuple[int | None, str]]:
    with repo.session() as session:
        rows = session.execute(
            select(m.Suggestion.thread_id, m.Suggestion.payload).where(
                m.Suggestion.kind == "new_opportunity", m.Suggestion.status == "open"
            )
        ).all()
    return [(thread, str(payload.get("contacts"))) for thread, payload in rows]


def test_a_prospects_second_thread_continues_the_proposed_deal(settings, parse_worker, database):
    pipeline = Pipeline(settings, database, Archive(settings.archive_dir), parse_worker)
    first = _mail(
        "ask", "Labelling line", "Could you send us a quote for two labellers? Budget 40,000 EUR.",
        "rachel@prospect.example", 2,
    )  # fmt: skip
    order = _mail(
        "po", "Our order PO-77", "Our order PO-77 follows. Could you send us a quote for the installation as well?",
        "rachel@prospect.example", 9,
    )  # fmt: skip
    other = _mail(
        "other", "Wrapping machine", "Could you send us a quote for a flow-wrapper?", "li@another.example", 10
    )
    for uid, raw in enumerate((first, order, other), start=1):
        pipeline.ingest(RawMessage(raw, Provenance("dana", folder="INBOX", uidvalidity=1, uid=uid)), "dana")
    proposed = _new_opportunities(database)
    assert sorted(contacts for _, contacts in proposed) == ["li@another.example", "rachel@prospect.example"]
    assert len({thread for thread, _ in proposed}) == 2  # one per prospect, on their first thread
