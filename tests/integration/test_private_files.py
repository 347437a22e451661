"""Everything under the data directory is private to its owner: it holds every message body."""

from __future__ import annotations

import os
import stat

import pytest

from mailsync.cli import main
from storage.eventlog import EventLog
from storage.private import private_dir
from tests.conftest import DEMO, write_config


@pytest.fixture
def open_umask():
    """The common default umask, under which plain open()/mkdir() make world-readable files."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def open_to_others(root):
    return [
        f"{oct(stat.S_IMODE(path.lstat().st_mode))} {path.relative_to(root)}"
        for path in root.rglob("*")
        if stat.S_IMODE(path.lstat().st_mode) & 0o077
    ]


def test_database_event_log_and_archive_are_created_private(tmp_path, open_umask, capsys):
    config = str(write_config(tmp_path))
    for argv in (
        ("db", "upgrade"),
        ("crm", "import", str(DEMO / "crm")),
        ("import", str(DEMO / "Maildir"), "--mailbox", "dana"),
    ):
        assert main(["--config", config, *argv]) == 0, capsys.readouterr().err
    var = tmp_path / "var"
    assert (var / "mailsync.db").exists()
    assert any((var / "events").iterdir())
    assert any((var / "archive").rglob("*.zst"))
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert open_to_others(var) == []


def test_an_existing_world_readable_event_log_is_made_private(tmp_path, open_umask):
    log = EventLog(tmp_path / "events")
    log.append("test", {"n": 1}, actor="test")
    (path,) = (tmp_path / "events").iterdir()
    path.chmod(0o644)  # as an older mailsync left it
    log.append("test", {"n": 2}, actor="test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(list(log)) == 2


def test_private_dir_creates_missing_parents_private_and_leaves_existing_ones(tmp_path, open_umask):
    (tmp_path / "shared").mkdir(mode=0o755)
    private_dir(tmp_path / "shared" / "a" / "b")
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "shared" / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "shared" / "a" / "b").stat().st_mode) == 0o700
