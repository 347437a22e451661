"""`mailsync rebuild`: the archive, the provenance journal and the event log alone give the database back.

The demo is imported, decided on (approvals that create an opportunity and link a thread, a rejection,
a rep pause), the database is deleted, and a rebuild from the files gives every message, copy, thread,
contact, link, opportunity, proposal and decision back: compared by their natural keys, as the row ids
of a rebuilt database need not be the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.admin.rebuild import _follow
from mailsync.cli import main
from mailsync.cli.replay import event_handlers
from mailsync.faults import ENV as FAULT_ENV
from mailsync.pipeline.sync_state import Cursor
from storage import models as m
from storage import search_index
from storage.archive import Archive
from storage.eventlog import EventLog
from storage.journal import CopySeen, CursorMoved, Journal
from storage.records import Provenance
from storage.repo import Repo
from storage.search import Search, search
from storage.search_query import parse_query
from tests.conftest import DEMO, write_config
from tests.support.demo import import_demo
from tests.support.snapshot import cli, decided_demo, snapshot

SEARCHES = ("proposal", "pricing OR contract", "order -invoice")  # words the demo's mail holds


def delete_sqlite(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


def test_rebuild_gives_the_deleted_database_back(tmp_path):
    config, repo = decided_demo(tmp_path)
    before = snapshot(repo)
    found_before = {words: searched(repo, words) for words in SEARCHES}
    triggers_before = search_index.triggers(repo.engine)
    repo.dispose()
    assert len(before["messages"]) == 51
    assert all(found_before.values())
    assert len(before["decisions"]) == 3
    assert any(row[-1] for row in before["threads"])  # a thread linked to a deal
    url = load_settings(config).database_url
    delete_sqlite(url)
    cli(config, "rebuild", "--into", url, "--json")
    rebuilt = Repo(url)
    try:
        after = snapshot(rebuilt)
        found_after = {words: searched(rebuilt, words) for words in SEARCHES}
        triggers_after = search_index.triggers(rebuilt.engine)
    finally:
        rebuilt.dispose()
    for table in before:
        assert after[table] == before[table], table
    assert found_after == found_before
    assert triggers_before == search_index.TRIGGERS  # what rebuild restores is what the migrations made
    assert triggers_after == triggers_before


def searched(repo: Repo, words: str) -> list[str]:
    """The fingerprints of the messages a search for `words` finds."""
    with repo.session() as session:
        ids = [hit.id for hit in search(session, Search(query=parse_query(words), limit=100))]
        return sorted(session.scalars(select(m.Message.fingerprint).where(m.Message.id.in_(ids))))


def test_rebuild_into_postgresql(tmp_path, pg_cluster, capsys):
    config, repo = decided_demo(tmp_path)
    before = snapshot(repo)
    repo.dispose()
    url = pg_cluster.url(pg_cluster.create())  # empty: the rebuild migrates it
    capsys.readouterr()
    cli(config, "rebuild", "--into", url, "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["messages"] == 51
    assert report["events"] == {"crm_import": 1, "decision": 3, "rep_paused": 1}
    assert report["unknown_events"] == {}
    rebuilt = Repo(url)
    try:
        after = snapshot(rebuilt)
        assert main(["-c", str(config), "rebuild", "--into", url]) == 1  # never into a used database
    finally:
        rebuilt.dispose()
    for table in before:
        assert after[table] == before[table], table


def test_journal_names_every_copy_and_cursor(tmp_path):
    """The journal is written by capture: one line per copy seen (a copy seen again adds a line,
    harmless), durable before the commit; a torn line from a crash is skipped."""
    repo = import_demo(tmp_path)
    settings = load_settings(tmp_path / "mailsync.toml")
    journal = Journal.beside(settings.archive_dir)
    copies = [e for e in journal if isinstance(e, CopySeen)]
    with repo.session() as s:
        seen = {(p.blob_sha256, p.locator, p.seen_at) for p in s.scalars(select(m.Provenance))}
    repo.dispose()
    assert {(c.sha256, c.provenance.locator, c.seen_at) for c in copies} == seen
    (path,) = journal.files()
    assert path.stat().st_mode & 0o777 == 0o600
    with path.open("a", encoding="ascii") as torn:
        torn.write('{"type": "copy", "sha256": "ab')  # killed mid-line
    journal.append([CursorMoved("dana", "INBOX", 7, 42, copies[0].seen_at)])
    entries = list(journal)
    assert entries[: len(copies)] == copies
    assert entries[-1] == CursorMoved("dana", "INBOX", 7, 42, copies[0].seen_at)


def test_unknown_event_kinds_are_counted_not_guessed(tmp_path, capsys):
    config = tmp_path / "mailsync.toml"
    import_demo(tmp_path).dispose()
    settings = load_settings(config)
    EventLog(settings.events_dir).append("from_the_future", {"x": 1}, actor="test")
    assert "from_the_future" not in event_handlers()
    capsys.readouterr()
    cli(config, "rebuild", "--into", f"sqlite:///{tmp_path / 'new.db'}", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["unknown_events"] == {"from_the_future": 1}
    assert report["events"] == {"crm_import": 1}


@pytest.mark.parametrize("cursor_first", [True, False])
def test_cursor_comes_from_the_journal(tmp_path, cursor_first):
    """A folder's cursor: the last cursor line, moved on by later copies with the same UIDVALIDITY;
    a new UIDVALIDITY starts it again."""
    at = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)

    def copy(uidvalidity, uid):
        where = Provenance("imap", "INBOX", uidvalidity, uid)
        return CopySeen("a" * 64, 1, "f", None, "o", where, at)

    cursors = {("imap", "INBOX"): Cursor(5, 10)} if cursor_first else {}
    for entry in (copy(5, 3), copy(5, 12)):
        _follow(cursors, entry)
    assert cursors[("imap", "INBOX")] == Cursor(5, 12)
    _follow(cursors, copy(6, 1))
    assert cursors[("imap", "INBOX")] == Cursor(6, 1)


def test_journal_is_durable_before_the_commit_and_rebuild_dedupes(tmp_path, capsys):
    """An import SIGKILLed between the journal's fsync and the commit leaves journal lines no row names;
    the next import writes them again; a rebuild counts each copy once."""
    config = write_config(tmp_path)
    cli(config, "db", "upgrade")
    env = {k: v for k, v in os.environ.items() if k not in {FAULT_ENV, "MAILSYNC_CONFIG"}}
    env[FAULT_ENV] = "before_cursor:1"  # the first batch's rows written, not committed
    argv = ["-c", str(config), "import", str(DEMO / "Maildir"), "--mailbox", "dana"]
    killed = subprocess.run(
        [sys.executable, "-c", "from mailsync.cli import run; run()", *argv],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")[-2000:]
    settings = load_settings(config)
    journal = Journal.beside(settings.archive_dir)
    assert sum(isinstance(e, CopySeen) for e in journal) == 53  # durable before the commit...
    repo = Repo(settings.database_url)
    with repo.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Message)) == 0  # ...that never happened
    cli(config, "import", str(DEMO / "Maildir"), "--mailbox", "dana")
    assert sum(isinstance(e, CopySeen) for e in journal) == 106
    before = snapshot(repo)
    repo.dispose()
    url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    capsys.readouterr()
    cli(config, "rebuild", "--into", url, "--json")
    report = json.loads(capsys.readouterr().out)
    assert (report["copies"], report["messages"], report["provenances"]) == (106, 51, 53)
    rebuilt = Repo(url)
    try:
        after = snapshot(rebuilt)
    finally:
        rebuilt.dispose()
    # The copies carry the time of their first journal line, the killed import's: all else is equal.
    untimed = {
        "blobs": lambda row: row[:-1],
        "provenances": lambda row: row[:-1],
        "messages": lambda row: row[:10] + row[11:],
    }
    for table in ("blobs", "provenances", "messages", "threads", "participants", "proposals"):
        shape = untimed.get(table, lambda row: row)
        assert sorted(map(shape, after[table]), key=repr) == sorted(map(shape, before[table]), key=repr), (
            table
        )


def test_a_journal_line_the_database_refuses_is_quarantined_not_fatal(tmp_path, pg_fresh_url, capsys):
    """The journal's copies go in a batch at a time with set-based INSERTs; a row PostgreSQL refuses
    (a Message-ID longer than its column) sends that batch the careful way, where it is quarantined
    and the rest of the batch is recorded."""
    repo = import_demo(tmp_path)
    with repo.session() as s:
        statuses = dict(s.execute(select(m.Message.status, func.count()).group_by(m.Message.status)).all())
    repo.dispose()
    settings = load_settings(tmp_path / "mailsync.toml")
    archive = Archive(settings.archive_dir)
    raw = b"From: someone@acme.example\r\nSubject: hi\r\n\r\nhello\r\n"
    sha = archive.put(raw)
    fingerprint = "f" * 64
    journal = Journal.beside(settings.archive_dir)
    at = max(e.seen_at for e in journal if isinstance(e, CopySeen))
    where = Provenance("dana", None, None, None, "/hand/made.eml")
    journal.append(
        [CopySeen(sha, len(raw), fingerprint, "<" + "x" * 1500 + "@acme.example>", "d", where, at)]
    )
    capsys.readouterr()
    cli(tmp_path / "mailsync.toml", "rebuild", "--into", pg_fresh_url, "--json")
    report = json.loads(capsys.readouterr().out)
    assert (report["copies"], report["messages"]) == (54, 52)
    rebuilt = Repo(pg_fresh_url)
    try:
        with rebuilt.session() as s:
            refused = s.scalar(select(m.Message).where(m.Message.fingerprint == fingerprint))
            assert refused is not None
            assert (refused.status, refused.message_id) == ("quarantined", f"{fingerprint}@mailsync.invalid")
            reason = s.scalar(select(m.Quarantine.reason).where(m.Quarantine.message_pk == refused.id))
            assert reason is not None
            assert reason.startswith("database rejected the message")
            after = dict(s.execute(select(m.Message.status, func.count()).group_by(m.Message.status)).all())
            assert after == {**statuses, "quarantined": statuses.get("quarantined", 0) + 1}
    finally:
        rebuilt.dispose()
