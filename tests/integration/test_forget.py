"""`mailsync forget EMAIL`: after it, a byte search of the whole data directory (database and WAL,
every archive blob decompressed, event log, provenance journal, an export) finds the person nowhere,
in any case or encoding; a re-import of the same mail does not bring them back."""

from __future__ import annotations

import base64
import json
import quopri
import shutil
from pathlib import Path

import pytest
import zstandard
from sqlalchemy import func, select, text

from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import DEMO, write_config

PERSON = "rachel.kim@acme.example"  # a contact who wrote, and was copied with Tom Becker
NAME = "Rachel Kim"
STAYS = "tom.becker@acme.example"  # on some of the same mail: kept
KEY_ENV = "FORGET_TEST_TOMBSTONE_KEY"
PRIVACY = f'\n[privacy]\ntombstone_key_env = "{KEY_ENV}"\n'


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def needles(*values: str) -> set[bytes]:
    """Each value in the cases and encodings mail and files use for it."""
    found: set[bytes] = set()
    for value in values:
        raw = value.encode()
        found |= {raw.lower(), raw.upper(), value.title().encode()}
        found.add(quopri.encodestring(raw).strip())
        found.add(value.replace("@", "%40").encode())  # URL-encoded (a link in an export, a path)
        found.add(json.dumps(value).strip('"').encode())
        for skip in range(3):  # base64 at each of the three alignments a text can start at
            encoded = base64.b64encode(raw[skip:])
            found.add(encoded[2 : len(encoded) - 4])
    return {n for n in found if len(n) >= 8}


def traces(root: Path, *values: str) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in any file under `root`, blobs decompressed."""
    wanted = needles(*values)
    hits = []
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".zst":
            data = zstandard.ZstdDecompressor().decompress(data)
        lowered = data.lower()
        hits += [(str(path.relative_to(root)), n.decode()) for n in wanted if n.lower() in lowered]
    return hits


@pytest.fixture
def data_dir(tmp_path, capsys, monkeypatch):
    """The demo CRM and Maildir imported, with a tombstone key; the config and the data directory."""
    monkeypatch.setenv(KEY_ENV, "a-long-random-tombstone-key-for-tests")
    config = write_config(tmp_path, PRIVACY)
    for argv in (
        ["db", "upgrade"],
        ["crm", "import", DEMO / "crm"],
        ["import", DEMO / "Maildir", "-m", "dana"],
    ):
        code, _, err = run(capsys, "-c", config, *argv)
        assert code == 0, err
    return config, tmp_path / "var"


def _people(config: Path, email: str) -> tuple[int, int]:
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            participants = session.scalar(
                select(func.count())
                .select_from(m.Participant)
                .where(func.lower(m.Participant.email) == email)
            )
            contacts = session.scalar(
                select(func.count()).select_from(m.ContactAddress).where(m.ContactAddress.email == email)
            )
        return participants or 0, contacts or 0
    finally:
        repo.dispose()


def _messages(config: Path) -> int:
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            return session.scalar(select(func.count()).select_from(m.Message)) or 0
    finally:
        repo.dispose()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_forget_leaves_no_trace_and_a_reimport_does_not_bring_them_back(data_dir, capsys):
    config, var = data_dir
    assert traces(var, PERSON, NAME)  # the search finds them before: it can fail
    assert _people(config, PERSON)[0] > 0
    kept_before = _people(config, STAYS)[0]
    assert kept_before > 0

    archive_before = _files(var / "archive")
    events_before = _files(var / "events")
    code, out, err = run(capsys, "-c", config, "forget", PERSON.upper(), "--dry-run", "--json")
    assert code == 0, err
    preview = json.loads(out)
    assert preview["dry_run"] is True
    assert preview["messages_deleted"] >= 1
    assert preview["messages_redacted"] >= 1
    assert _files(var / "archive") == archive_before  # a dry run changes nothing
    assert _files(var / "events") == events_before
    assert _people(config, PERSON)[0] > 0

    code, out, err = run(capsys, "-c", config, "forget", PERSON.upper(), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["messages_deleted"], report["messages_redacted"]) == (
        preview["messages_deleted"],
        preview["messages_redacted"],
    )
    assert report["contacts_deleted"] == 1
    assert report["event_files_rewritten"]  # the CRM import event named her
    assert report["journal_files_rewritten"]
    assert PERSON not in out.lower()

    code, _, err = run(capsys, "-c", config, "export", "--out", var / "export", "--format", "both")
    assert code == 0, err
    assert traces(var, PERSON, NAME) == []
    assert _people(config, PERSON) == (0, 0)
    assert 0 < _people(config, STAYS)[0] <= kept_before  # the others on her mail stay
    code, out, err = run(capsys, "-c", config, "verify")
    assert code == 0, out + err  # no blob missing, no orphan: the database and archive agree

    messages = _messages(config)
    shutil.rmtree(var / "export")
    code, _, err = run(capsys, "-c", config, "import", DEMO / "Maildir", "-m", "dana")
    assert code == 0, err
    assert traces(var, PERSON, NAME) == []
    assert _people(config, PERSON) == (0, 0)
    assert _messages(config) == messages  # re-imported copies: deleted again, or merged into the redacted
    code, out, err = run(capsys, "-c", config, "verify")
    assert code == 0, out + err

    _rebuild_without_her(config, var, capsys)

    code, out, _ = run(capsys, "-c", config, "forget", PERSON)
    assert code == 0
    assert "already forgotten" in out


def _rebuild_without_her(config: Path, var: Path, capsys) -> None:
    """The journal names only blobs the archive has, and archive + journal + event log rebuild a
    database as big as this one, without her."""
    journal = [
        json.loads(line)
        for path in (var / "archive" / "journal").glob("*.jsonl")
        for line in path.read_text(encoding="ascii").splitlines()
    ]
    archive = Archive(var / "archive")
    assert journal
    assert all(archive.exists(row["sha256"]) for row in journal if row["type"] == "copy")
    rebuilt = var.parent / "rebuilt.db"
    code, _, err = run(capsys, "-c", config, "rebuild", "--into", f"sqlite:///{rebuilt}")
    assert code == 0, err
    assert traces(var.parent, PERSON, NAME) == []
    assert _messages(config) == _count_messages(f"sqlite:///{rebuilt}")


def _count_messages(url: str) -> int:
    repo = Repo(url)
    try:
        with repo.session() as session:
            return session.scalar(select(func.count()).select_from(m.Message)) or 0
    finally:
        repo.dispose()


def test_forget_refuses_reps_and_internal_addresses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "k")
    config = write_config(tmp_path, PRIVACY)
    assert run(capsys, "-c", config, "db", "upgrade")[0] == 0
    for address in ("dana@northwind.example", "someone@northwind.example"):
        code, _, err = run(capsys, "-c", config, "forget", address)
        assert code == 2
        assert "forget is for outside people" in err


def test_forget_without_a_key_names_the_setting(tmp_path, capsys):
    config = write_config(tmp_path)
    assert run(capsys, "-c", config, "db", "upgrade")[0] == 0
    code, _, err = run(capsys, "-c", config, "forget", PERSON)
    assert code == 2
    assert "tombstone_key_env" in err
    assert "fix:" in err


def test_the_tombstone_is_a_keyed_hash_never_the_address(data_dir, capsys):
    config, var = data_dir
    code, out, _ = run(capsys, "-c", config, "forget", PERSON, "--json")
    assert code == 0
    stone = json.loads(out)["tombstone"]
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            stones = set(session.scalars(select(m.Tombstone.digest)))
        assert stone in stones
        assert len(stones) > 2  # the address, her name, each message forget deleted or redacted
        assert all(len(digest) == 64 and int(digest, 16) >= 0 for digest in stones)
    finally:
        repo.dispose()
    forget_events = [
        json.loads(line)
        for path in (var / "events").glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
        if '"forget' in line
    ]
    assert {e["kind"] for e in forget_events} == {"forget", "forget_applied"}
    assert all(PERSON not in json.dumps(e).lower() for e in forget_events)


# --- PostgreSQL --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_forget_on_postgresql(tmp_path, pg_fresh_url, monkeypatch):
    """The 0007 migration ran (the fixture upgrades to head); forget leaves no row naming her."""
    monkeypatch.setenv(KEY_ENV, "a-long-random-tombstone-key-for-tests")
    config = write_config(tmp_path, PRIVACY)
    monkeypatch.setenv("MAILSYNC_DATABASE_URL", pg_fresh_url)
    settings = load_settings(config)
    assert main(["-c", str(config), "crm", "import", str(DEMO / "crm")]) == 0
    assert main(["-c", str(config), "import", str(DEMO / "Maildir"), "-m", "dana"]) == 0
    from mailsync.admin.forget import forget  # noqa: PLC0415

    repo = Repo(pg_fresh_url)
    try:
        report = forget(repo, Archive(settings.archive_dir), settings, PERSON)
        assert report.messages_deleted >= 1
        assert report.messages_redacted >= 1
        with repo.engine.connect() as conn:
            columns = conn.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'json', 'jsonb')"
                )
            ).all()
            for table, column in columns:
                found = conn.execute(
                    text(f'SELECT count(*) FROM "{table}" WHERE lower("{column}"::text) LIKE :p'),
                    {"p": f"%{PERSON}%"},
                ).scalar()
                assert found == 0, f"{table}.{column}"
            assert conn.execute(text("SELECT count(*) FROM tombstone")).scalar() > 1  # address, name, mail
    finally:
        repo.dispose()
    assert traces(tmp_path / "var", PERSON, NAME) == []


def test_held_messages_are_purged_by_the_pipeline(data_dir, capsys):
    """A message that arrives after forget (a new one, not a re-import) is held by processing and
    purged: the person never reaches a participant row, and the blob is redacted."""
    config, var = data_dir
    assert run(capsys, "-c", config, "forget", PERSON)[0] == 0
    settings = load_settings(config)
    late = (
        b"From: Tom Becker <tom.becker@acme.example>\r\nTo: dana@northwind.example\r\n"
        b"Cc: =?utf-8?q?Rachel_Kim?= <Rachel.Kim+deals@ACME.example>\r\n"
        b"Subject: late news\r\nMessage-ID: <late-1@acme.example>\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"Rachel Kim (rachel.kim@acme.example) will call you.\n")
    )
    folder = var.parent / "late" / "cur"
    folder.mkdir(parents=True)
    (folder / "1.late:2,S").write_bytes(late)
    code, _, err = run(capsys, "-c", config, "import", folder.parent, "-m", "dana")
    assert code == 0, err
    assert traces(var, PERSON, NAME) == []
    assert _people(config, PERSON) == (0, 0)
    repo = Repo(settings.database_url)
    try:
        with repo.session() as session:
            late_row = session.scalar(select(m.Message).where(m.Message.message_id == "late-1@acme.example"))
            assert late_row is not None
            assert late_row.status == "parsed"  # the redacted copy was processed
            assert "will call you" in late_row.body_text
    finally:
        repo.dispose()
