"""Capture into PostgreSQL over real Dovecot: text PostgreSQL refuses, and messages it rejects anyway."""

from __future__ import annotations

import gc
import hashlib
import threading
import time
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text

from mailsync.cli import main
from mailsync.mail.identity import identify_stream
from mailsync.pipeline.ingest import Pipeline
from storage import models as m
from storage.archive import Archive
from storage.records import Provenance, RawMessage
from storage.repo import Repo
from storage.search import include_schema_name
from tests.support.config import imap_config


def raw_mail(name: str, *, subject: bytes = b"", headers: bytes = b"", body: bytes = b"") -> bytes:
    """A message from Rachel to Dana with CRLF line endings; `name` makes it distinct."""
    return (
        b"From: Rachel Kim <rachel@acme.example>\r\nTo: dana@northwind.example\r\n"
        b"Subject: " + (subject or name.encode()) + b"\r\nDate: Mon, 04 Mar 2024 10:00:00 +0000\r\n"
        b"Message-ID: <" + name.encode() + b"@acme.example>\r\n" + headers + b"\r\n"
        + (body or b"Hello, can you send pricing? " + name.encode()) + b"\r\n"
    )  # fmt: skip


QP_NUL = raw_mail(
    "qp-nul",
    headers=b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    body=b"Price list=00attached",  # decodes to a NUL; Dovecot would drop a raw one on APPEND
)
RAW_8BIT_SUBJECT = raw_mail("raw-8bit", subject=b"Pr\xe9sentation caf\xe9 \xff\xfe")  # Latin-1, not UTF-8


@pytest.fixture
def pg_config(tmp_path, dovecot, imap_user, monkeypatch, pg_fresh_url):
    """A config syncing the test's INBOX into the test's own PostgreSQL database."""
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", pg_fresh_url)
    return imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"])


def cli(config, *args: str) -> int:
    """`mailsync -c config args...` in-process; its exit code.

    The CLI leaves its engines to the process exit, which closes their connections; in-process the
    garbage collector finds them open later and psycopg warns, in whatever runs then. Collect them now.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*deleted while still open", ResourceWarning)
        code = main(["-c", str(config), *args])
        gc.collect()
    return code


def sync_once(config) -> int:
    assert cli(config, "db", "upgrade") == 0
    return cli(config, "sync", "--once")


def captured(url: str) -> dict[int, tuple[str, str, str, str | None]]:
    """UID -> (status, subject, body, quarantine reason) of every message captured from IMAP."""
    repo = Repo(url)
    try:
        with repo.session() as s:
            rows = s.execute(
                select(
                    m.Provenance.uid,
                    m.Message.status,
                    m.Message.subject,
                    m.Message.body_text,
                    m.Quarantine.reason,
                )
                .join(m.Message, m.Message.id == m.Provenance.message_pk)
                .outerjoin(m.Quarantine, m.Quarantine.message_pk == m.Message.id)
            ).all()
            return {uid: (status, subject, body, reason) for uid, status, subject, body, reason in rows}
    finally:
        repo.dispose()


def cursor(url: str) -> int:
    repo = Repo(url)
    try:
        with repo.session() as s:
            return s.scalar(select(m.FolderState.last_uid).where(m.FolderState.name == "INBOX"))
    finally:
        repo.dispose()


def test_the_migrations_build_on_postgresql_exactly_the_schema_the_models_describe(pg_url):
    """pg_url was migrated from empty, as `mailsync db upgrade` does; the text types need no migration."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_name": include_schema_name}
            )
            assert compare_metadata(context, m.Base.metadata) == []
    finally:
        engine.dispose()


def test_nul_and_lone_surrogates_reach_postgresql_as_replacement_characters(pg_fresh_url):
    """In text columns and inside JSON, where PostgreSQL refuses \\u0000 and unpaired surrogate escapes."""
    repo = Repo(pg_fresh_url)
    try:
        with repo.session() as s:
            s.add(
                m.Suggestion(
                    key="k\x00",
                    kind="new_contact",
                    summary="caf\udce9",
                    payload={"name\x00": "caf\udce9", "nested": [{"quote": "x\x00y\ud83d"}]},
                    confidence=0.5,
                    evidence=[],
                )
            )
        with repo.session() as s:
            row = s.scalars(select(m.Suggestion)).one()
    finally:
        repo.dispose()
    assert (row.key, row.summary) == ("k\ufffd", "caf\ufffd")
    assert row.payload == {"name\ufffd": "caf\ufffd", "nested": [{"quote": "x\ufffdy\ufffd"}]}


def test_sync_once_captures_a_decoded_nul_and_everything_after_it(
    dovecot, imap_user, pg_config, pg_fresh_url
):
    """The NUL used to fail the message's UPDATE ("PostgreSQL text fields cannot contain NUL (0x00)
    bytes"): exit 1, and every retry stopped at the same message."""
    first = raw_mail("before-nul")
    uids = dovecot.append_many(imap_user.name, "INBOX", [first, QP_NUL, RAW_8BIT_SUBJECT])
    assert sync_once(pg_config) == 0
    rows = captured(pg_fresh_url)
    assert sorted(rows) == uids
    assert [rows[uid][0] for uid in uids] == ["parsed", "parsed", "parsed"]
    assert rows[uids[1]][2] == "Price list\ufffdattached"  # the NUL, marked, not dropped
    assert "\x00" not in "".join(str(v) for row in rows.values() for v in row)
    assert rows[uids[2]][1].startswith("Pr")  # the 8-bit subject, however the parser decoded it
    assert cursor(pg_fresh_url) == uids[-1]


def test_messages_postgresql_rejects_are_quarantined_and_the_folder_goes_on(
    dovecot, imap_user, pg_config, pg_fresh_url
):
    """Rejections the text sanitiser cannot prevent: too long for a column, a constraint of the server."""
    engine = create_engine(pg_fresh_url)
    with engine.begin() as conn:  # this test's own database: a rule the server enforces, as a DBA might add
        conn.execute(
            text(
                "ALTER TABLE participant ADD CONSTRAINT test_no_mallory"
                " CHECK (email <> 'mallory@evil.example')"
            )
        )
    engine.dispose()
    long_id = "x" * 1100
    messages = [
        raw_mail("ok-1"),
        raw_mail(long_id),  # Message-ID over message.message_id VARCHAR(1000): refused at the first INSERT
        raw_mail("ok-2"),
        raw_mail(
            "long-ref", headers=b"References: <" + b"r" * 1100 + b"@acme.example>\r\n"
        ),  # at the thread stage
        raw_mail("ok-3"),
        raw_mail(
            "mallory", headers=b"Cc: Mallory <mallory@evil.example>\r\n"
        ),  # CHECK, once participants are written
        raw_mail("ok-4"),
    ]
    uids = dovecot.append_many(imap_user.name, "INBOX", messages)
    assert sync_once(pg_config) == 0
    rows = captured(pg_fresh_url)
    assert sorted(rows) == uids
    assert [rows[uid][0] for uid in uids] == ["parsed", "quarantined"] * 3 + ["parsed"]
    reasons = [rows[uid][3] or "" for uid in uids[1::2]]
    assert all(r.startswith("database rejected the message: ") for r in reasons), reasons
    assert "value too long" in reasons[0]
    assert "value too long" in reasons[1]
    assert "test_no_mallory" in reasons[2]
    assert cursor(pg_fresh_url) == uids[-1]


def test_a_message_another_process_stores_first_becomes_a_copy(settings, parse_worker, pg_fresh_url):
    """Two daemons ingest the same email from two mailboxes at once: the one that loses the race on
    the unique fingerprint records its copy, it does not quarantine the message or fail the pass."""
    raw = RawMessage(raw_mail("race"), Provenance("sam", folder="INBOX", uidvalidity=1, uid=1))
    fingerprint = identify_stream(raw.chunks).fingerprint
    other_blob = hashlib.sha256(b"dana's copy of the same email").hexdigest()
    repo = Repo(pg_fresh_url)
    pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)
    engine = create_engine(pg_fresh_url)
    results = []
    with (
        engine.connect() as other,
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watch,
    ):  # the other daemon, inside its message transaction
        other.execute(
            text("INSERT INTO blob (sha256, size, archived_at) VALUES (:b, 1, now())"), {"b": other_blob}
        )
        other.execute(
            text(
                "INSERT INTO message (fingerprint, blob_sha256, message_id, status, subject, body_text,"
                " attachments, captured_at) VALUES (:f, :b, 'race@acme.example', 'parsed', '', '', '[]', now())"
            ),
            {"f": fingerprint, "b": other_blob},
        )
        worker = threading.Thread(
            target=lambda: results.append(pipeline.ingest(raw, "sam@northwind.example"))
        )
        worker.start()
        _wait_for_lock_wait(watch)  # our INSERT of the same fingerprint now waits for the other's commit
        other.commit()
    worker.join(timeout=60)
    engine.dispose()
    with repo.session() as s:
        copies = s.scalars(select(m.Provenance.mailbox)).all()
        statuses = s.scalars(select(m.Message.status)).all()
    repo.dispose()
    assert [r.outcome for r in results] == ["copy"]
    assert copies == ["sam"]
    assert statuses == ["parsed"]


def _wait_for_lock_wait(conn) -> None:
    # Polled outside any transaction: PostgreSQL keeps one pg_stat_activity snapshot per transaction.
    deadline = time.monotonic() + 30
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while not conn.execute(query).scalar():
        assert time.monotonic() < deadline, "the ingest never reached the conflicting INSERT"
        time.sleep(0.02)
