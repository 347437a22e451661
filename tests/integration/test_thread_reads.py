"""Processing reads the touched threads' messages, participants and owners by the thread index, whatever
the size of the table: SQLite's planner, given `status = 'parsed'` beside the thread ids, read through
the status index (every parsed message) and each batch got slower as the database grew. The status is
checked in Python, so a thread's pending or quarantined rows are still left out. Real SQLite files,
the real statements of storage/mailstore.py, no planner statistics (as mailsync leaves the database)."""

from __future__ import annotations

from sqlalchemy import event, insert

from storage import mailstore
from storage import models as m

MESSAGES = 2_000  # enough rows that a scan and a search are different plans
OWNER = "dana@northwind.example"


def _add_messages(repo) -> None:
    """MESSAGES messages, two per thread, one provenance each; message 3 is still pending and
    message 5 quarantined, both on their thread."""
    ids = range(2, 2 + MESSAGES)
    with repo.session() as session:
        session.execute(insert(m.Mailbox), [{"name": "bench", "owner": OWNER}])
        session.execute(insert(m.Blob), [{"sha256": f"{i:064x}", "size": 1} for i in ids])
        session.execute(insert(m.Thread), [{"id": i, "key": f"<t{i}>"} for i in ids if i % 2 == 0])
        rows = [
            {
                "id": i,
                "fingerprint": f"{i:064x}",
                "blob_sha256": f"{i:064x}",
                "message_id": f"<m{i}>",
                "thread_id": i - i % 2,
                "status": {3: "pending", 5: "quarantined"}.get(i, "parsed"),
                "kind": "email",
            }
            for i in ids
        ]
        session.execute(insert(m.Message), rows)
        session.execute(
            insert(m.Participant),
            [{"message_pk": i, "role": "from", "email": f"p{i}@example.com"} for i in ids],
        )
        session.execute(
            insert(m.Provenance),
            [
                {"message_pk": i, "blob_sha256": f"{i:064x}", "locator": f"bench/{i}", "mailbox": "bench"}
                for i in ids
            ],
        )


def test_thread_reads_go_by_the_thread_index_and_leave_unparsed_rows_out(repo):
    _add_messages(repo)
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(repo.engine, "before_cursor_execute", keep)
    try:
        with repo.session() as session:
            several = mailstore.threads_messages(session, [2, 4, 6])
            one = mailstore.thread_messages(session, 4)
            owners = mailstore.thread_owners(session, [2, 4, 6])
    finally:
        event.remove(repo.engine, "before_cursor_execute", keep)

    def read(found):
        return [(msg.id, [p.email for p in people]) for msg, people in found]

    assert read(several[2]) == [(2, ["p2@example.com"])]  # 3 is pending
    assert read(several[4]) == read(one) == [(4, ["p4@example.com"])]  # 5 is quarantined
    assert read(several[6]) == [(6, ["p6@example.com"]), (7, ["p7@example.com"])]
    assert owners == {2: OWNER, 4: OWNER, 6: OWNER}
    with repo.engine.connect() as conn:
        plans = [
            " | ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in statements
            if sql.lstrip().startswith("SELECT")
        ]
    assert len(plans) == 5  # messages and participants twice, the owners once
    assert not [plan for plan in plans if "ix_message_status" in plan or "SCAN" in plan], plans
    assert sum("ix_message_thread_id" in plan for plan in plans) == 3, plans


def test_the_open_outcomes_of_touched_threads_are_read_by_the_thread_index(repo):
    """open_outcomes of a batch's threads: by the thread index, not every open stage change there is."""
    _add_messages(repo)

    def outcome(
        i: int, *, kind: str = "stage_change", status: str = "open", stage: str = "closed_won", day: int = 0
    ):
        return {
            "key": f"{kind}:<t{i}>:{status}:{stage}",
            "kind": kind,
            "status": status,
            "summary": "s",
            "payload": {"opportunity_id": 7, "to_stage": stage},
            "confidence": 0.8,
            "evidence": [
                {"fingerprint": "f", "sent_at": f"2026-03-{day or 1 + i % 28:02d}T10:00:00", "quote": "q"}
            ],
            "thread_id": i,
            "opportunity_id": 7,
        }

    rows = [outcome(i) for i in range(2, 2 + MESSAGES, 2) if i != 8]
    # Earlier evidence that does not count: decided, another kind, not an outcome.
    rows += [outcome(4, status="rejected", day=1), outcome(4, kind="link_thread", day=1)]
    rows += [outcome(8, stage="negotiation", day=1)]
    statements: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    with repo.session() as session:
        session.execute(insert(m.Suggestion), rows)
        session.flush()
        event.listen(repo.engine, "before_cursor_execute", keep)
        try:
            found = mailstore.open_outcomes(session, [4, 6, 8])
        finally:
            event.remove(repo.engine, "before_cursor_execute", keep)
    assert {key: when.isoformat() for key, when in found.items()} == {
        (4, 7): "2026-03-05T10:00:00",
        (6, 7): "2026-03-07T10:00:00",
    }
    with repo.engine.connect() as conn:
        plans = [
            " | ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in statements
        ]
    assert len(plans) == 1
    assert "ix_suggestion_thread_id_status" in plans[0], plans
