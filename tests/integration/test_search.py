"""`mailsync search` and `show` on SQLite (FTS5) and PostgreSQL (tsvector + GIN): the demo mail plus
hostile messages, an index the database keeps current, and plans that never scan the message table."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import delete, select, text, update

from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.repo import MIGRATIONS, Repo
from storage.search import Search, explain, parse_day
from storage.search_query import parse_query
from tests.support.demo import import_demo

DANA = "dana@northwind.example"
ESC = "\x1b"
RLO = "\u202e"  # right-to-left override: "txt.exe" shown reversed
ACME_THREAD = "20260114151233.F55FF1@mail.acme.example"
ACME_LINK = f"link:{ACME_THREAD}"

# Two messages that attack the output and the query language; the demo Maildir gives the real mail.
HOSTILE = {
    "escapes.eml": textwrap.dedent(
        """\
        From: =?utf-8?q?J=C3=BCrgen_Gr=C3=B6=C3=9Fe?= <juergen@spedition-hostile.example>
        To: dana@northwind.example
        Subject: =?utf-8?q?Angebot_=1B[31mROT=1B[0m_=1B]0;pwned=07_=E2=80=AEtxt.exe_Gr=C3=B6=C3=9Fe?=
        Date: Tue, 05 Mar 2024 10:00:00 +0000
        Message-ID: <hostile-1@spedition-hostile.example>
        MIME-Version: 1.0
        Content-Type: text/plain; charset=utf-8
        Content-Transfer-Encoding: 8bit

        Guten Tag, die Größe der Flotte ist 40 Fahrzeuge. Treffen im Café am Montag?
        """
    ),
    "operators.eml": textwrap.dedent(
        """\
        From: Mallory <mallory@operators.example>
        To: dana@northwind.example
        Cc: Trent <trent@operators.example>
        Subject: NEAR(alpha beta) "quoted" col:val
        Date: Wed, 06 Mar 2024 10:00:00 +0000
        Message-ID: <hostile-2@operators.example>

        Please use NEAR(alpha beta) AND subject:zebra OR NOT ^caret * with 'single' and "double"
        quotes; '); DROP TABLE message; -- wombat
        """
    ),
}


@dataclass
class Archive:
    backend: str
    config: Path
    url: str
    monkeypatch: pytest.MonkeyPatch

    def run(self, capsys, *argv: str) -> tuple[int, str, str]:
        """`mailsync -c config argv...`: exit code, stdout, stderr."""
        capsys.readouterr()
        with self.monkeypatch.context() as patch:
            if self.backend == "postgresql":
                patch.setenv("MAILSYNC_DATABASE_URL", self.url)
            code = main(["-c", str(self.config), *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def found(self, capsys, *argv: str) -> list[dict]:
        code, out, err = self.run(capsys, "search", "--json", *argv)
        assert code == 0, err
        return json.loads(out)

    def subjects(self, capsys, *argv: str) -> set[str]:
        return {hit["subject"] for hit in self.found(capsys, *argv)}

    def repo(self) -> Repo:
        return Repo(self.url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request, tmp_path_factory) -> Archive:
    """The demo Maildir and HOSTILE, imported once per backend through the CLI."""
    folder = tmp_path_factory.mktemp(f"search-{request.param}")
    extra = folder / "hostile"
    extra.mkdir()
    for name, body in HOSTILE.items():
        (extra / name).write_text(body, encoding="utf-8")
    patch = pytest.MonkeyPatch()
    url = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.url(cluster.create())
        patch.setenv("MAILSYNC_DATABASE_URL", url)
    try:
        import_demo(folder / "demo", extra).dispose()
        config = folder / "demo" / "mailsync.toml"
        url = url or load_settings(config).database_url
    finally:
        patch.undo()
    return Archive(request.param, config, url, patch)


# --- Finding real words ----------------------------------------------------------------------------


def test_words_are_found_in_subject_sender_and_body_newest_first(archive, capsys):
    hits = archive.found(capsys, "trackers")
    assert [h["subject"] for h in hits] == [
        "Re: Pricing for 3 trackers", "Re: Pricing for 3 trackers", "Pricing for 3 trackers",
    ]  # fmt: skip
    assert [h["sent_at"] for h in hits] == sorted((h["sent_at"] for h in hits), reverse=True)
    assert all(h["mailboxes"] == ["dana"] for h in hits)
    assert "Pricing for 3 trackers" in archive.subjects(capsys, "luis.ortega.hauling")  # the sender
    quoted = archive.found(capsys, "summer")  # a body word: the excerpt shows it
    assert quoted
    assert all("summer" in h["excerpt"].lower() for h in quoted)


def test_phrase_prefix_or_and_exclusion(archive, capsys):
    pricing = archive.subjects(capsys, "pricing")
    assert "Pricing for 3 trackers" in pricing
    assert archive.subjects(capsys, '"for 3 trackers"') == {
        "Pricing for 3 trackers",
        "Re: Pricing for 3 trackers",
    }
    assert archive.subjects(capsys, '"3 for trackers"') == set()  # a phrase keeps its order
    assert pricing <= archive.subjects(capsys, "pric*", "--limit", "500")
    assert archive.subjects(capsys, "trackers OR zzzunknown") == archive.subjects(capsys, "trackers")
    assert archive.subjects(capsys, "pricing -trackers", "--limit", "500") == pricing - {
        "Pricing for 3 trackers", "Re: Pricing for 3 trackers",
    }  # fmt: skip
    assert archive.subjects(capsys, "FS-200", "--limit", "500") == archive.subjects(
        capsys, '"fs 200"', "--limit", "500"
    )  # punctuation splits words alike on both backends


def test_filters_by_participant_subject_date_and_mailbox(archive, capsys):
    assert archive.subjects(capsys, "--from", "mallory@operators.example") == {
        'NEAR(alpha beta) "quoted" col:val'
    }
    assert archive.subjects(capsys, "--to", "TRENT@operators.example") == {
        'NEAR(alpha beta) "quoted" col:val'
    }
    assert archive.subjects(capsys, "--from", "trent@operators.example") == set()  # Trent was on Cc
    assert archive.subjects(capsys, "--participant", "@operators.example") == {
        'NEAR(alpha beta) "quoted" col:val'
    }
    assert archive.subjects(capsys, "wombat", "--subject", "col quoted") == set()  # in this order
    assert archive.subjects(capsys, "wombat", "--subject", "col val") == {'NEAR(alpha beta) "quoted" col:val'}
    assert archive.subjects(capsys, "--subject", "wombat") == set()  # in the body, not the subject
    assert archive.subjects(capsys, "wombat", "--since", "2024-03-06", "--until", "2024-03-06") != set()
    assert archive.subjects(capsys, "wombat", "--until", "2024-03-05") == set()
    assert archive.subjects(capsys, "wombat", "--mailbox", "dana") != set()
    code, _, err = archive.run(capsys, "search", "wombat", "--mailbox", "nobody")
    assert code == 1
    assert "no mailbox of that name" in err


# --- Hostile input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["NEAR(alpha beta)", "subject:zebra", '"quoted" col:val', "^caret", "'single' wombat", "wombat*",
     "DROP TABLE message wombat", "\"'); DROP TABLE message; --\"", "AND wombat", "wombat * :"],
)  # fmt: skip
def test_backend_operators_in_a_query_are_words(archive, capsys, query):
    assert archive.subjects(capsys, query) == {'NEAR(alpha beta) "quoted" col:val'}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('pricing "price list', "never closed"),
        ("OR pricing", "OR must stand between two words"),
        ("pricing OR", "OR must stand between two words"),
        ("NOT pricing", "NOT is written as a minus sign"),
        ("-pricing", "no word to look for"),
        ('"price list"*', "a * ends one word"),
        ("acme.ex*", "a * ends one plain word"),
        ("", "nothing to search for"),
        ("(!)", "nothing to search for"),
    ],
)
def test_a_query_syntax_error_is_one_line_and_its_fix(archive, capsys, query, message):
    code, out, err = archive.run(capsys, "search", "--", query)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert lines[1].startswith("fix: ")


def test_undecodable_bytes_in_a_query_are_searched_for_not_fatal(archive, capsys):
    """A shell passes raw bytes; Python hands them over as lone surrogates, which no driver can bind."""
    for argv in (("caf\udce9",), ("wombat", "--subject", "caf\udce9"), ("--from", "caf\udce9@x.example")):
        code, out, err = archive.run(capsys, "search", "--json", *argv)
        assert code == 0, err
        assert json.loads(out) == []


def test_a_bad_date_is_one_line_and_its_fix(archive, capsys):
    code, _, err = archive.run(capsys, "search", "pricing", "--since", "last tuesday")
    assert code == 1
    assert err.splitlines() == [
        "error: --since 'last tuesday' is not a date",
        "fix: write --since 2024-03-04",
    ]


def test_non_ascii_words_fold_case_and_keep_accents(archive, capsys):
    hostile = archive.subjects(capsys, "juergen")  # the sender's address
    (subject,) = hostile
    assert ESC in subject
    assert "Größe" in subject
    assert archive.subjects(capsys, "größe") == hostile  # subject and body
    assert archive.subjects(capsys, "GRÖßE") == hostile
    assert archive.subjects(capsys, "café") == hostile
    assert archive.subjects(capsys, "CAFÉ fahrzeuge") == hostile
    assert archive.subjects(capsys, "cafe") == set()  # accents count, on both backends
    assert not archive.subjects(capsys, "jürgen") & hostile  # display names are not indexed; the address is
    assert "Anfrage: Angebot für 10 FleetSense-Geräte" in archive.subjects(
        capsys, "GERÄTE angebot"
    )  # the demo


def test_terminal_escapes_in_mail_never_reach_the_terminal(archive, capsys):
    (hit,) = archive.found(capsys, "größe")
    assert ESC in hit["subject"]  # stored as received; JSON escapes it (\u001b)
    for argv in (("search", "größe"), ("show", str(hit["id"])), ("search", "größe", "--json")):
        code, out, _ = archive.run(capsys, *argv)
        assert code == 0
        assert ESC not in out
        assert RLO not in out
        assert "\x07" not in out
    _, table, _ = archive.run(capsys, "search", "größe")
    assert "Angebot [31mROT[0m ]0;pwned txt.exe Größe" in table


# --- show ------------------------------------------------------------------------------------------


def test_show_prints_the_conversation_its_matches_and_decided_proposals(archive, capsys):
    repo = archive.repo()
    try:
        with repo.session() as session:
            root = session.scalar(select(m.Message.id).where(m.Message.message_id == ACME_THREAD))
    finally:
        repo.dispose()
    code, _, err = archive.run(capsys, "approve", ACME_LINK, "--as", DANA)
    assert code == 0, err
    code, out, err = archive.run(capsys, "show", str(root), "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["message_id"] == root
    assert view["messages"][0]["id"] == root
    assert [x["sent_at"] for x in view["messages"]] == sorted(x["sent_at"] for x in view["messages"])
    assert all(x["excerpt"] for x in view["messages"])
    assert any(c["emails"] for c in view["contacts"])
    assert [a["name"] for a in view["accounts"]]
    assert view["opportunity"] is not None
    (linked,) = [p for p in view["proposals"] if p["key"] == ACME_LINK]
    assert linked["status"] == "approved"
    (decision,) = linked["decisions"]
    assert (decision["verdict"], decision["who"], decision["how"]) == ("approve", DANA, "cli")
    datetime.fromisoformat(decision["at"])
    code, table, _ = archive.run(capsys, "show", str(root))
    assert code == 0
    assert f"approve by {DANA} via cli" in table
    assert view["opportunity"]["name"] in table


def test_show_of_an_unknown_id_names_the_fix(archive, capsys):
    code, _, err = archive.run(capsys, "show", "999999")
    assert code == 1
    assert err.splitlines() == [
        "error: no message with id 999999", "fix: `mailsync search WORDS` lists messages with their ids",
    ]  # fmt: skip


# --- The index the database keeps ----------------------------------------------------------------


def _hits(repo: Repo, words: str) -> list[int]:
    from storage.search import search  # noqa: PLC0415

    with repo.session() as session:
        return [h.id for h in search(session, Search(query=parse_query(words)))]


def _add_pending(session, n: int, *, body: str = "", subject: str = "") -> m.Message:
    """A message as capture records it: pending, with an empty body until processing fills it in."""
    session.add(m.Blob(sha256=f"{n:064x}", size=1))
    message = m.Message(
        fingerprint=f"{n:064x}", blob_sha256=f"{n:064x}", message_id=f"<{n}@x.example>", status="pending",
        subject=subject, body_text=body,
    )  # fmt: skip
    session.add(message)
    session.flush()
    return message


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh(request, tmp_path) -> Repo:
    """An empty database at head."""
    if request.param == "sqlite":
        repo = Repo(f"sqlite:///{tmp_path / 'db.sqlite'}")
        repo.upgrade()
    else:
        repo = Repo(request.getfixturevalue("pg_fresh_url"))
    yield repo
    repo.dispose()


def test_the_index_follows_inserts_updates_and_deletes(fresh):
    with fresh.session() as session:
        pk = _add_pending(session, 1).id
    assert _hits(fresh, "zeppelin") == []
    with fresh.session() as session:  # processing fills the pending message in by an UPDATE
        session.execute(
            update(m.Message).where(m.Message.id == pk).values(
                status="parsed", subject="Zeppelin order", body_text="one zeppelin, please", sender="a@b.example"
            )
        )  # fmt: skip
    assert _hits(fresh, "zeppelin") == [pk]
    assert _hits(fresh, "b.example") == [pk]
    with fresh.session() as session:
        session.execute(
            update(m.Message).where(m.Message.id == pk).values(body_text="a dirigible", subject="")
        )
    assert _hits(fresh, "zeppelin") == []
    assert _hits(fresh, "dirigible") == [pk]
    with fresh.session() as session:  # status changes leave the index alone
        session.execute(update(m.Message).where(m.Message.id == pk).values(status="quarantined"))
    assert _hits(fresh, "dirigible") == [pk]
    with fresh.session() as session:  # what a future `forget` does
        session.execute(delete(m.Message).where(m.Message.id == pk))
    assert _hits(fresh, "dirigible") == []
    if fresh.engine.dialect.name == "sqlite":
        with fresh.engine.begin() as conn:  # raises if the index and the message table disagree
            conn.exec_driver_sql("INSERT INTO message_fts(message_fts, rank) VALUES ('integrity-check', 1)")


def _alembic(repo: Repo) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = repo.engine
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def empty(request, tmp_path) -> Repo:
    """A database with no schema at all."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        name = cluster.create()
        url = cluster.url(name)
    repo = Repo(url)
    yield repo
    repo.dispose()
    if request.param == "postgresql":
        cluster.drop(name)


def test_the_migration_indexes_the_messages_captured_before_it(empty):
    command.upgrade(_alembic(empty), "0004")
    with empty.session() as session:
        old = _add_pending(session, 7, subject="Größe", body="Café before the index").id
    command.upgrade(_alembic(empty), "head")
    assert _hits(empty, "café") == [old]
    assert _hits(empty, "größe") == [old]
    command.downgrade(_alembic(empty), "0004")  # and the downgrade removes it cleanly
    command.upgrade(_alembic(empty), "head")
    assert _hits(empty, "café") == [old]


# --- Plans: the index, never a scan of message --------------------------------------------------------

SQLITE_SCAN = re.compile(r"\bSCAN message\b(?!_fts)")
SEARCHES = [
    Search(query=parse_query("pricing")),
    Search(query=parse_query('"for 3" OR quote* -invoice')),
    Search(
        query=parse_query("pricing"),
        mailbox="dana",
        since=parse_day("2024-01-01", "--since"),
        until=parse_day("2030-01-01", "--until"),
    ),
    Search(query=parse_query("pricing"), subject="trackers"),
    Search(subject="trackers"),
    Search(sender="rachel@acme.example"),
    Search(participant=DANA, since=parse_day("2024-01-01", "--since")),
]


def test_sqlite_plans_use_the_fts5_index_and_never_scan_message(repo):
    """SQLite has no statistics to weigh: its plan is the same on three messages as on a million."""
    with repo.session() as session:
        for n in range(3):
            _add_pending(session, n, subject="pricing for 3 trackers", body="quote")
    with repo.session() as session:
        session.add(m.Mailbox(name="dana", owner=DANA))
    with repo.session() as session:
        for search in SEARCHES:
            plan = explain(session, search)
            assert not SQLITE_SCAN.search(plan), plan
            assert "message_fts VIRTUAL TABLE" in plan or "ix_participant_email" in plan, plan
        scan = session.connection().exec_driver_sql(  # the check can fail: a LIKE on bodies scans
            "EXPLAIN QUERY PLAN SELECT id FROM message WHERE body_text LIKE '%pricing%'"
        )
        assert SQLITE_SCAN.search("\n".join(str(row) for row in scan))


def test_postgresql_plans_use_the_gin_index_and_never_scan_message(pg_fresh_url):
    """On a few thousand messages (on a handful PostgreSQL rightly prefers reading the table)."""
    repo = Repo(pg_fresh_url)
    try:
        with repo.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO blob (sha256, size, archived_at) SELECT md5(n::text), 1, now() "
                    "FROM generate_series(1, 5000) AS n"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO message (fingerprint, blob_sha256, message_id, status, subject, sender, sent_at, "
                    "body_text, attachments, captured_at) SELECT md5(n::text), md5(n::text), n || '@x.example', "
                    "'parsed', 'Re: order ' || n, 'rep' || (n % 7) || '@northwind.example', "
                    "timestamp '2024-01-01' + n * interval '1 hour', "
                    "repeat('the usual delivery schedule and invoice text ', 20) || "
                    "CASE WHEN n % 1000 = 0 THEN ' pricing for 3 trackers' ELSE '' END, '[]', now() "
                    "FROM generate_series(1, 5000) AS n"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO participant (message_pk, role, email, name) "
                    "SELECT id, 'from', sender, '' FROM message"
                )
            )
            conn.execute(text("INSERT INTO mailbox (name, owner) VALUES ('dana', 'dana@northwind.example')"))
            conn.execute(
                text(
                    "INSERT INTO provenance (message_pk, blob_sha256, locator, mailbox, seen_at) "
                    "SELECT id, blob_sha256, 'file:' || id, 'dana', now() FROM message"
                )
            )
            conn.execute(text("ANALYZE"))
        with repo.session() as session:
            assert len(_hits(repo, "trackers")) == 5
            for search in SEARCHES:
                plan = explain(session, search)
                assert "Seq Scan on message" not in plan, plan
                assert "ix_message_search_vector" in plan or "ix_participant_email" in plan, plan
            scan = session.execute(text("EXPLAIN SELECT id FROM message WHERE body_text LIKE '%pricing%'"))
            assert "Seq Scan on message" in "\n".join(row[0] for row in scan)
    finally:
        repo.dispose()
