"""Suggestions are looked up by their deal (`suggestion.opportunity_id`) and their contact addresses
(`suggestion_contact`), read from the payload: filled by migration 0010 for the suggestions made before
it and by the ORM whenever a payload is set; processing reads a batch's by their indexes. On SQLite
and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event, select

from storage import mailstore
from storage import models as m
from storage.deal_context import ContextReads
from storage.forget import delete_suggestions
from storage.records import Evidence, Proposal, ProposalKind
from storage.repo import MIGRATIONS, Repo
from storage.suggestion_rows import SuggestionRows

LI, ANA = "li@prospect.example", "ana@prospect.example"
DANA, SAM = "dana@northwind.example", "sam@northwind.example"


def _alembic(repo: Repo) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = repo.engine
    return config


@pytest.fixture
def empty(db_backend, tmp_path, request):
    """A database with no schema at all."""
    if db_backend == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        name = cluster.create()
        repo = Repo(cluster.url(name))
    else:
        repo = Repo(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield repo
    repo.dispose()
    if db_backend == "postgresql":
        cluster.drop_soon(name)


def _columns(repo: Repo) -> tuple[dict[str, int | None], set[tuple[str, str]]]:
    """suggestion key -> opportunity_id; (suggestion key, address) of suggestion_contact."""
    with repo.engine.connect() as conn:
        deals = dict(conn.execute(sa.text("SELECT key, opportunity_id FROM suggestion")).all())
        contacts = conn.execute(
            sa.text(
                "SELECT s.key, c.email FROM suggestion_contact c JOIN suggestion s ON s.id = c.suggestion_id"
            )
        ).all()
    return deals, {(key, email) for key, email in contacts}


@pytest.mark.both_dbs
def test_the_migration_fills_them_for_the_suggestions_made_before_it(empty):
    command.upgrade(_alembic(empty), "0009")
    suggestion = sa.table(
        "suggestion", *(sa.column(c) for c in ("key", "kind", "status", "summary", "confidence", "owner_rep")),
        sa.column("payload", sa.JSON()), sa.column("evidence", sa.JSON()),
        sa.column("created_at"), sa.column("updated_at"),
    )  # fmt: skip
    made = [
        ("link:a", "link_thread", {"opportunity_id": 7, "opportunity": "Acme", "mode": "link"}),
        ("stage:a:8", "stage_change", {"opportunity_id": 8, "to_stage": "closed_won"}),
        ("new_opportunity:b", "new_opportunity", {"contacts": f" Li@Prospect.example ; {ANA};{ANA}; "}),
        ("new_opportunity:c", "new_opportunity", {"contacts": None, "account_id": 3}),
        ("new_contact:d", "new_contact", {"email": LI, "opportunity_id": "9"}),  # not a deal id
    ]
    when = m.utcnow()
    with empty.engine.begin() as conn:
        conn.execute(
            sa.insert(suggestion),
            [
                {"key": key, "kind": kind, "status": "open", "summary": key, "confidence": 0.5,
                 "owner_rep": None, "payload": payload, "evidence": [], "created_at": when, "updated_at": when}
                for key, kind, payload in made
            ],
        )  # fmt: skip
    command.upgrade(_alembic(empty), "head")
    expected = (
        {"link:a": 7, "stage:a:8": 8, "new_opportunity:b": None, "new_opportunity:c": None, "new_contact:d": None},
        {("new_opportunity:b", LI), ("new_opportunity:b", ANA)},
    )  # fmt: skip
    assert _columns(empty) == expected
    command.downgrade(_alembic(empty), "0009")  # and the downgrade removes them cleanly
    command.upgrade(_alembic(empty), "head")
    assert _columns(empty) == expected


def _proposal(
    key: str, kind: ProposalKind, payload: dict, owner: str = DANA, evidence: tuple[Evidence, ...] = ()
) -> Proposal:
    return Proposal(
        kind=kind, key=key, summary=key, payload=payload, confidence=0.5, evidence=evidence, owner_rep=owner
    )


@pytest.mark.both_dbs
def test_every_payload_written_keeps_them(repo):
    new = ProposalKind.NEW_OPPORTUNITY
    with repo.session() as session:
        thread = m.Thread(key="t", subject="Quote")
        session.add(thread)
        session.flush()
        thread_id = thread.id
        mailstore.save_proposals(session, thread_id, [
            _proposal("new_opportunity:t", new, {"contacts": f"{LI}; {ANA}"}),
            _proposal("link:t", ProposalKind.LINK_THREAD, {"opportunity_id": 4, "mode": "suggest"}),
        ])  # fmt: skip
    assert _columns(repo) == (
        {"new_opportunity:t": None, "link:t": 4},
        {("new_opportunity:t", LI), ("new_opportunity:t", ANA)},
    )

    # Proposed again for another owner: one address less, another deal. The owner of an open proposal
    # changes only with its deal (`mailsync reassign` may have moved it: test_suggestion_columns_reassign).
    with repo.session() as session:
        mailstore.save_proposals(session, thread_id, [
            _proposal("new_opportunity:t", new, {"contacts": LI}, owner=SAM),
            _proposal("link:t", ProposalKind.LINK_THREAD, {"opportunity_id": 5, "mode": "link"}, owner=SAM),
        ])  # fmt: skip
    assert _columns(repo) == ({"new_opportunity:t": None, "link:t": 5}, {("new_opportunity:t", LI)})
    with repo.session() as session:
        owners = dict(session.execute(select(m.Suggestion.key, m.Suggestion.owner_rep)).all())
    assert owners == {"new_opportunity:t": DANA, "link:t": SAM}

    with repo.session() as session:  # withdrawn, then proposed again: a new proposal, for its owner now
        row = session.scalars(select(m.Suggestion).where(m.Suggestion.key == "new_opportunity:t")).one()
        row.status = "withdrawn"
        session.flush()
        mailstore.sync_suggestions(session, thread_id, [
            _proposal("new_opportunity:t", new, {"contacts": LI}, owner=SAM)
        ], withdraw=False)  # fmt: skip
        assert (row.status, row.owner_rep) == ("open", SAM)

    with repo.session() as session:  # as `mailsync forget` redacts a payload
        row = session.scalars(select(m.Suggestion).where(m.Suggestion.key == "new_opportunity:t")).one()
        row.payload = {"contacts": "[forgotten]"}
    assert _columns(repo)[1] == {("new_opportunity:t", "[forgotten]")}

    with repo.session() as session:
        delete_suggestions(session, list(session.scalars(select(m.Suggestion.id))))
    assert _columns(repo) == ({}, set())


def _thread_written_by(session, key: str, contact: m.Contact, email: str) -> m.Thread:
    thread = m.Thread(key=key, subject=key)
    session.add_all([thread, m.Blob(sha256=key.ljust(64, "0"), size=1)])
    session.flush()
    message = m.Message(
        fingerprint=key, blob_sha256=key.ljust(64, "0"), message_id=key, thread_id=thread.id, status="parsed"
    )
    session.add(message)
    session.flush()
    session.add(m.Participant(message_pk=message.id, role="from", email=email, contact_id=contact.id))
    return thread


@pytest.fixture
def threads(repo):
    """Threads "old", "new" (a new-opportunity proposal listing LI on "old") and, each written by a CRM
    contact, "link" (an automatic link to deal 4), "suggest" (only a suggested link to it), "approved"
    (an approved suggested link to deal 5): their ids by name."""
    link = ProposalKind.LINK_THREAD
    with repo.session() as session:
        contact = m.Contact(name="Rachel")
        session.add(contact)
        session.flush()
        made = {k: m.Thread(key=k, subject=k) for k in ("old", "new")}
        session.add_all(made.values())
        for name in ("link", "suggest", "approved"):
            made[name] = _thread_written_by(session, name, contact, f"{name}@acme.example")
        session.flush()
        save = mailstore.save_proposals
        save(
            session,
            made["old"].id,
            [_proposal("new_opportunity:old", ProposalKind.NEW_OPPORTUNITY, {"contacts": LI})],
        )
        save(session, made["link"].id, [_proposal("link:link", link, {"opportunity_id": 4, "mode": "link"})])
        save(
            session,
            made["suggest"].id,
            [_proposal("link:suggest", link, {"opportunity_id": 4, "mode": "suggest"})],
        )
        save(
            session,
            made["approved"].id,
            [_proposal("link:approved", link, {"opportunity_id": 5, "mode": "suggest"})],
        )
        session.flush()
        session.scalars(
            select(m.Suggestion).where(m.Suggestion.key == "link:approved")
        ).one().status = "approved"
        return {name: thread.id for name, thread in made.items()}


@pytest.mark.both_dbs
def test_lookups_by_address_and_by_deal(repo, threads):
    with repo.session() as session:
        reads = ContextReads(session, deals=[4, 5, 6], senders=[LI, ANA], threads=[])
        assert reads.proposed_earlier(threads["new"], [LI, ANA]) == {LI}
        assert reads.proposed_earlier(threads["old"], [LI, ANA]) == set()  # only older threads count
        assert reads.proposed_earlier(threads["new"], [ANA]) == set()
        history = reads.deal_context(threads["new"], [4, 5, 6]).history
        assert history == {4: {"link@acme.example"}, 5: {"approved@acme.example"}}
        history = reads.deal_context(threads["link"], [4, 5]).history
        assert history == {5: {"approved@acme.example"}}  # not the thread's own link


def _read(reads: ContextReads, thread_id: int) -> tuple[object, ...]:
    context = reads.deal_context(thread_id, [4, 5])
    return context.history, context.settled, reads.proposed_earlier(thread_id, [LI, ANA])


@pytest.mark.both_dbs
def test_the_batch_reads_what_its_own_proposals_wrote_as_a_fresh_read_would(repo, threads):
    """A batch reads the context once (ContextReads), then writes proposals thread by thread: each later
    thread must read what the earlier ones wrote as if it read the database again."""
    link, stage = ProposalKind.LINK_THREAD, ProposalKind.STAGE_CHANGE
    signed = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    won = Evidence("f", signed, "We signed.")
    with repo.session() as session:
        every = list(threads.values())
        reads = ContextReads(session, deals=[4, 5], senders=[LI, ANA], threads=every)
        assert _read(reads, threads["new"])[2] == {LI}
        keys = ["new_opportunity:old", "link:suggest", "stage:old:5"]
        written = {r.key: r for r in session.scalars(select(m.Suggestion).where(m.Suggestion.key.in_(keys)))}
        mailstore.save_proposals(session, threads["old"], [
            _proposal("new_opportunity:old", ProposalKind.NEW_OPPORTUNITY, {"contacts": f"{LI}; {ANA}"}),
            _proposal("link:suggest", link, {"opportunity_id": 4, "mode": "link"}),  # moves to "old"
            _proposal("stage:old:5", stage, {"opportunity_id": 5, "to_stage": "closed_won"}, evidence=(won,)),
        ], written)  # fmt: skip
        row = session.scalars(select(m.Suggestion).where(m.Suggestion.key == "link:link")).one()
        row.status = "withdrawn"
        reads.saw([*written.values(), row])
        session.flush()
        fresh = ContextReads(session, deals=[4, 5], senders=[LI, ANA], threads=every)
        for thread_id in every:
            assert _read(reads, thread_id) == _read(fresh, thread_id)
        history, settled, proposed = _read(reads, threads["new"])
        assert proposed == {LI, ANA}
        assert settled == {5: signed.replace(tzinfo=None)}  # naive UTC, as messages are stored
        assert history == {5: {"approved@acme.example"}}  # "old" has no CRM writer; "link" withdrawn


@pytest.mark.both_dbs
def test_the_batch_reads_the_suggestions_to_sync_once_and_follows_them(repo, threads):
    """SuggestionRows: a thread's open rows and the keys asked for, a key it did not read up front read
    when asked, and a row that moves to another thread (re-proposed there) no longer the first's."""
    new = ProposalKind.NEW_OPPORTUNITY
    with repo.session() as session:
        rows = SuggestionRows(session, threads=[threads["old"], threads["new"]], keys=["link:link"])

        def keys(thread: str, asked: list[str]) -> set[str]:
            return {row.key for row in rows.read(threads[thread], asked)}

        assert keys("old", ["link:suggest", "new_contact:nobody"]) == {"new_opportunity:old", "link:suggest"}
        proposal = _proposal("new_opportunity:old", new, {"contacts": LI})
        mailstore.sync_suggestions(session, threads["new"], [proposal], batch=rows)
        assert keys("old", []) == set()
        assert keys("new", []) == {"new_opportunity:old"}
        session.flush()
        moved = session.scalars(select(m.Suggestion).where(m.Suggestion.key == "new_opportunity:old")).one()
        assert moved.thread_id == threads["new"]


def test_sqlite_reads_them_by_their_indexes(repo, threads):
    """SQLite has no statistics to weigh: its plan is the same on a few rows as on a million (PostgreSQL's
    planner scans small tables whatever their indexes). Several senders and candidate deals: with more
    than the address or the deal in SQL, it read every open suggestion of the kind instead."""
    seen: list[tuple[str, object]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):
        if "suggestion" in statement:
            seen.append((statement, parameters))

    event.listen(repo.engine, "before_cursor_execute", keep)
    with repo.session() as session:
        senders = [LI, *(f"p{n}@prospect.example" for n in range(8))]
        ContextReads(session, deals=range(4, 40), senders=senders, threads=[])
    event.remove(repo.engine, "before_cursor_execute", keep)
    with repo.engine.connect() as conn:
        plans = [
            " / ".join(row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters))
            for statement, parameters in seen
        ]
    assert plans == [
        "SEARCH suggestion USING INDEX ix_suggestion_opportunity_id (opportunity_id=?)",
        (
            "SEARCH suggestion_contact USING INDEX ix_suggestion_contact_email (email=?) / "
            "SEARCH suggestion USING INTEGER PRIMARY KEY (rowid=?)"
        ),
    ]
