"""Huge mail is captured without being held in memory: a 150 MB message and a 50 MB header line.

The CLI runs in a subprocess so its peak RSS can be read with wait4(); over IMAP the message is
fetched in partial pieces into a spool file, archived while streaming and quarantined by the size
limit before any parser sees it. The archive is compared with the bytes Dovecot serves (it turns LF
into CRLF), read back the same way in pieces. The file import and the long header line run on SQLite
and on PostgreSQL; the 150 MB sync (its database part is the file import's) on SQLite.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import load_settings
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import write_config
from tests.support.config import imap_config
from tests.support.database import use_database

pytestmark = pytest.mark.slow

# The CLI reports its own peak RSS (VmHWM) at exit: wait4()'s ru_maxrss would include the pytest
# process it was forked from.
_REPORT_PEAK = """
import atexit, sys
def hwm():
    with open('/proc/self/status') as status:
        kb = next(line.split()[1] for line in status if line.startswith('VmHWM'))
    print(f'peak-rss-kb {kb}', file=sys.stderr)
atexit.register(hwm)
from mailsync.cli import run
run()
"""
CLI = [sys.executable, "-c", _REPORT_PEAK]
MB = 1024 * 1024
RSS_LIMIT_MB = 300


def _head(name: str, extra: bytes = b"") -> bytes:
    return (
        b"From: Rachel Kim <rachel@acme.example>\nTo: dana@northwind.example\n"
        b"Date: Mon, 3 Jun 2024 10:00:00 +0000\nMessage-ID: <" + name.encode() + b"@acme.example>\n"
        b"Subject: " + name.encode() + b"\nMIME-Version: 1.0\n" + extra
    )


def write_huge_attachment(path: Path, megabytes: int) -> None:
    """A multipart mail whose base64 attachment makes it `megabytes` long (random, so it barely compresses)."""
    with path.open("wb") as out:
        out.write(_head("huge", b'Content-Type: multipart/mixed; boundary="b"\n\n'))
        out.write(
            b"--b\nContent-Type: text/plain\n\nThe scans you asked for.\n--b\nContent-Type: application/pdf\n"
        )
        out.write(
            b'Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="scans.pdf"\n\n'
        )
        line_bytes = 57  # 76 base64 characters per line
        lines_per_block = 16_384
        while out.tell() < megabytes * MB:
            block = os.urandom(line_bytes * lines_per_block)
            out.write(
                b"".join(
                    base64.b64encode(block[i : i + line_bytes]) + b"\n"
                    for i in range(0, len(block), line_bytes)
                )
            )
        out.write(b"--b--\n")


def write_long_header_line(path: Path, megabytes: int) -> None:
    with path.open("wb") as out:
        out.write(_head("long-header", b"X-Padding: "))
        chunk = b"x" * MB
        for _ in range(megabytes):
            out.write(chunk)
        out.write(b"\nContent-Type: text/plain\n\nshort body\n")


def run_cli(config: Path, *args: str, timeout: float = 600) -> tuple[int, float, str]:
    """Run the CLI; return (exit code, peak RSS in MB of the CLI process itself, stderr)."""
    done = subprocess.run(
        [*CLI, "--config", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MAILSYNC_LOG_FORMAT": "json", "MAILSYNC_LOG_LEVEL": "info"},
        timeout=timeout,
        check=False,
    )
    stderr = done.stderr.decode("utf-8", "replace")
    peak_kb = next(int(line.split()[1]) for line in stderr.splitlines() if line.startswith("peak-rss-kb"))
    return done.returncode, peak_kb / 1024, stderr


def server_sha256(dovecot, user: str, uid: int) -> str:
    """SHA-256 of the bytes Dovecot serves for `uid`, read in 8 MB partial fetches."""
    digest = hashlib.sha256()
    offset, piece = 0, 8 * MB
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        while True:
            data = client.fetch([uid], [f"BODY.PEEK[]<{offset}.{piece}>"])[uid][f"BODY[]<{offset}>".encode()]
            digest.update(data)
            offset += len(data)
            if len(data) < piece:
                return digest.hexdigest()


@pytest.fixture(scope="module")
def huge_mail(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "huge.eml"
    write_huge_attachment(path, 150)
    return path


def _imap_config(tmp_path: Path, dovecot, user: str, password: str, monkeypatch, limits: str = "") -> Path:
    return imap_config(tmp_path, dovecot, user, password, monkeypatch, folders=["INBOX"], extra=limits)


def _only_message(config: Path) -> tuple[m.Message, list[m.Provenance], str | None]:
    settings = load_settings(config)
    repo = Repo(settings.database_url)
    try:
        with repo.session() as session:
            (message,) = session.scalars(select(m.Message)).all()
            copies = list(session.scalars(select(m.Provenance)).all())
            reason = session.scalar(select(m.Quarantine.reason).where(m.Quarantine.message_pk == message.id))
            session.expunge_all()
    finally:
        repo.dispose()
    return message, copies, reason


def test_150mb_message_synced_over_imap_is_streamed_archived_and_quarantined(
    tmp_path, dovecot, imap_user, monkeypatch, huge_mail
):
    user, password = imap_user
    dovecot.append_file(user, "INBOX", huge_mail)
    config = _imap_config(tmp_path, dovecot, user, password, monkeypatch)
    assert run_cli(config, "db", "upgrade")[0] == 0

    code, rss_mb, stderr = run_cli(config, "sync", "--once")
    print(f"sync of a {huge_mail.stat().st_size / MB:.0f} MB message: peak RSS {rss_mb:.0f} MB")

    assert code == 0, stderr
    assert rss_mb < RSS_LIMIT_MB, f"peak RSS {rss_mb:.0f} MB while capturing a 150 MB message"
    assert "message_fetched_in_pieces" in stderr
    message, copies, reason = _only_message(config)
    assert message.status == "quarantined"
    assert reason is not None
    assert reason.startswith("message too large")
    assert [c.uid for c in copies] == [1]
    expected = server_sha256(dovecot, user, 1)
    assert message.blob_sha256 == expected
    settings = load_settings(config)
    blob = Archive(settings.archive_dir).path_for(expected)
    assert blob.exists()
    assert not list((settings.archive_dir / "spool").iterdir()), "spool file left behind"
    # A second pass fetches nothing; a third after a restart of the CLI neither.
    assert run_cli(config, "sync", "--once")[0] == 0
    assert len(_only_message(config)[1]) == 1


@pytest.mark.both_dbs
def test_150mb_file_import_streams_from_the_file(tmp_path, huge_mail, db_url):
    config = write_config(tmp_path, "", database_url=db_url)
    mail_dir = tmp_path / "export"
    mail_dir.mkdir()
    (mail_dir / "huge.eml").symlink_to(huge_mail)
    assert run_cli(config, "db", "upgrade")[0] == 0

    code, rss_mb, stderr = run_cli(config, "import", str(mail_dir), "--mailbox", "dana")
    print(f"import of a {huge_mail.stat().st_size / MB:.0f} MB file: peak RSS {rss_mb:.0f} MB")

    assert code == 0, stderr
    assert rss_mb < RSS_LIMIT_MB
    message, _copies, reason = _only_message(config)
    assert message.status == "quarantined"
    assert reason is not None
    assert reason.startswith("message too large")
    digest = hashlib.sha256()
    with huge_mail.open("rb") as stream:
        while piece := stream.read(MB):
            digest.update(piece)
    assert message.blob_sha256 == digest.hexdigest()


@pytest.mark.both_dbs
def test_50mb_header_line_within_the_size_limit_is_parsed_or_quarantined_without_hanging(
    tmp_path, dovecot, imap_user, monkeypatch, db_url
):
    use_database(monkeypatch, db_url)
    user, password = imap_user
    mail = tmp_path / "long-header.eml"
    write_long_header_line(mail, 50)
    dovecot.append_file(user, "INBOX", mail)
    # Raise the size limit over the message so the parser itself has to cope with the line.
    config = _imap_config(
        tmp_path, dovecot, user, password, monkeypatch, limits="\n[limits]\nmax_bytes = 104857600\n"
    )
    assert run_cli(config, "db", "upgrade")[0] == 0

    began = time.monotonic()
    code, rss_mb, stderr = run_cli(config, "sync", "--once", timeout=300)
    message, _copies, reason = _only_message(config)
    print(
        f"50 MB header line: {time.monotonic() - began:.1f} s, peak RSS {rss_mb:.0f} MB, {reason or 'parsed'}"
    )

    assert code == 0, stderr
    assert message.status in {"parsed", "quarantined"}
    assert message.status == "parsed" or reason
    assert message.blob_sha256 == server_sha256(dovecot, user, 1)
