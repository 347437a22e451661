"""SQLite's planner gets statistics as the message table grows, so that reading a thread's messages
goes through the thread index and not through the status index (a scan of every parsed message, which
made each batch slower as the database grew). Real SQLite files, the real queries of processing."""

from __future__ import annotations

from sqlalchemy import event, insert, text

from storage import mailstore
from storage import models as m
from storage.repo import STATISTICS_FROM, Repo


def _add_messages(repo, first: int, count: int) -> None:
    """`count` parsed messages, two per thread: rows only, as processing leaves them."""
    ids = range(first, first + count)
    with repo.session() as session:
        session.execute(insert(m.Blob), [{"sha256": f"{i:064x}", "size": 1} for i in ids])
        session.execute(insert(m.Thread), [{"id": i, "key": f"<t{i}>"} for i in ids if i % 2 == 0])
        session.execute(
            insert(m.Message),
            [
                {
                    "id": i,
                    "fingerprint": f"{i:064x}",
                    "blob_sha256": f"{i:064x}",
                    "message_id": f"<m{i}>",
                    "thread_id": i - i % 2,
                    "status": "parsed",
                    "kind": "email",
                }
                for i in ids
            ],
        )


def _plans_of_thread_reads(repo) -> list[str]:
    """EXPLAIN QUERY PLAN of every statement mailstore.threads_messages runs for a few threads."""
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(repo.engine, "before_cursor_execute", keep)
    try:
        with repo.session() as session:
            found = mailstore.threads_messages(session, [2, 4, 6])
    finally:
        event.remove(repo.engine, "before_cursor_execute", keep)
    assert [len(found[t]) for t in (2, 4, 6)] == [2, 2, 2]
    with repo.engine.connect() as conn:
        return [
            " | ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in statements
        ]


def test_a_grown_message_table_is_analysed_and_read_by_thread(repo):
    _add_messages(repo, 2, STATISTICS_FROM // 2)
    assert repo.refresh_statistics() is False  # small: the planner's guesses do no harm
    _add_messages(repo, 2 + STATISTICS_FROM // 2, STATISTICS_FROM)
    assert repo.refresh_statistics() is True
    plans = _plans_of_thread_reads(repo)
    assert plans
    assert all("ix_message_thread_id" in plan for plan in plans), plans
    assert not any("ix_message_status" in plan for plan in plans), plans


def test_statistics_are_taken_again_only_when_the_table_has_doubled(repo):
    _add_messages(repo, 2, STATISTICS_FROM)
    assert repo.refresh_statistics() is True
    assert repo.refresh_statistics() is False
    _add_messages(repo, 2 + STATISTICS_FROM, STATISTICS_FROM // 2)
    assert repo.refresh_statistics() is False  # 1.5x: the statistics still describe it
    _add_messages(repo, 2 + STATISTICS_FROM * 3 // 2, STATISTICS_FROM)
    assert repo.refresh_statistics() is True
    with repo.engine.connect() as conn:
        stat = conn.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'message'")).scalar()
    assert int(stat.split()[0]) >= 2 * STATISTICS_FROM


def test_postgresql_keeps_its_own_statistics(pg_url):
    repo = Repo(pg_url)
    try:
        assert repo.refresh_statistics() is False
    finally:
        repo.dispose()
