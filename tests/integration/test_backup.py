"""`mailsync backup` while `mailsync run` captures from a real Dovecot, then `mailsync restore` into a new
place, on SQLite and PostgreSQL: the restored data verifies, and a sync after it ends with every message
once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.repo import Repo
from tests.conftest import write_config
from tests.support.config import PASSWORD_ENV, imap_mailbox
from tests.support.mail import plain_mail

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BEFORE, DURING = 12, 12  # messages in the mailbox before the daemon starts, and arriving during the backup
DAEMON = '\n[daemon]\npoll_interval = 1\njitter = 0\nidle = false\n[web]\nlisten = "127.0.0.1:0"\n'


def config_in(directory: Path, dovecot, user, database_url: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, imap_mailbox(dovecot, user.name, password_env=PASSWORD_ENV) + DAEMON)
    if database_url is not None:
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace('sqlite:///var/mailsync.db"', f'{database_url}"', 1), encoding="utf-8")
    return config


def count(config: Path) -> int:
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as session:
            return int(session.scalar(select(func.count()).select_from(m.Message)) or 0)
    finally:
        repo.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest) -> tuple[str | None, str | None]:
    """(source, restore target) database URLs; None: the config's own SQLite file."""
    if request.param == "sqlite":
        return None, None
    cluster = request.getfixturevalue("pg_cluster")
    return request.getfixturevalue("pg_fresh_url"), cluster.url(cluster.create())


def test_backup_while_the_daemon_captures_restores_to_a_verified_copy_that_syncs_the_rest_once(
    tmp_path, dovecot, imap_user, monkeypatch, databases, capsys
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, imap_user.password)
    source_url, target_url = databases
    live = config_in(tmp_path / "live", dovecot, imap_user, source_url)
    for n in range(BEFORE):
        dovecot.append(imap_user.name, "INBOX", plain_mail(f"before {n}"))
    mailsync = [sys.executable, "-c", "from mailsync.cli import run; run()", "-c", str(live)]
    assert subprocess.run([*mailsync, "db", "upgrade"], check=False, capture_output=True).returncode == 0
    daemon = subprocess.Popen(
        [*mailsync, "run"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MAILSYNC_LOG_FORMAT": "json"},
    )
    drain = threading.Thread(target=daemon.stderr.read)
    try:
        for line in daemon.stderr:  # the first pass is done: the backup starts while mail keeps coming
            if json.loads(line)["event"] == "folder_synced":
                break
        drain.start()  # keep the pipe flowing
        arriving = threading.Thread(
            target=lambda: [
                dovecot.append(imap_user.name, "INBOX", plain_mail(f"during {n}")) for n in range(DURING)
            ]
        )
        arriving.start()
        assert main(["-c", str(live), "backup", str(tmp_path / "backup"), "--json"]) == 0
        arriving.join()
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(30)
        if drain.ident is not None:
            drain.join()
        daemon.stderr.close()
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["messages"] >= BEFORE

    restored = config_in(tmp_path / "restored", dovecot, imap_user, target_url)
    if target_url is None:
        assert main(["-c", str(restored), "db", "upgrade"]) == 0  # a database already there: refused below
        (tmp_path / "restored" / "var" / "mailsync.db").unlink()
    assert main(["-c", str(restored), "restore", str(tmp_path / "backup")]) == 0
    assert count(restored) >= manifest["messages"]
    assert main(["-c", str(restored), "restore", str(tmp_path / "backup")]) == 1  # holds mail now: refused
    assert "--force" in capsys.readouterr().err
    assert main(["-c", str(restored), "sync", "--once"]) == 0  # what came after the snapshot
    assert main(["-c", str(restored), "verify"]) == 0  # every blob named and whole, none orphaned
    assert count(restored) == BEFORE + DURING
    assert count(live) <= BEFORE + DURING


def test_restore_refuses_a_directory_that_is_not_a_finished_backup(tmp_path, capsys) -> None:
    config = write_config(tmp_path)
    (tmp_path / "half").mkdir()
    assert main(["-c", str(config), "restore", str(tmp_path / "half")]) == 1
    assert "not a complete backup" in capsys.readouterr().err
