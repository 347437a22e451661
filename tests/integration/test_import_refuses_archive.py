"""`mailsync import` of the archive itself (or its blobs/, a blob, a copy of some blobs) is refused with
one line and the command that does process archived mail; nothing is stored a second time."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.repo import Repo
from tests.conftest import DEMO, write_config


def _counts(repo: Repo) -> tuple[int, int, int]:
    with repo.session() as session:
        return (
            session.scalar(select(func.count()).select_from(m.Message)) or 0,
            session.scalar(select(func.count()).select_from(m.Blob)) or 0,
            session.scalar(select(func.count()).select_from(m.Provenance)) or 0,
        )


@pytest.fixture
def imported(tmp_path, capsys):
    config = write_config(tmp_path)
    assert main(["-c", str(config), "db", "upgrade"]) == 0
    assert main(["-c", str(config), "import", str(DEMO / "Maildir" / ".Sent"), "-m", "dana"]) == 0
    capsys.readouterr()
    repo = Repo(load_settings(config).database_url)
    yield config, repo
    repo.dispose()


def _archive_like(tmp_path, which):
    archive = tmp_path / "var" / "archive"
    if which == "archive":
        return archive
    if which == "blobs":
        return archive / "blobs"
    blob = next((archive / "blobs").rglob("*.zst"))
    if which == "one blob":
        return blob
    copied = tmp_path / "copied-blobs"  # blobs copied out of the archive, flat, beside a README
    copied.mkdir()
    for path in (archive / "blobs").rglob("*.zst"):
        shutil.copy(path, copied / path.name)
    (copied / "README.txt").write_text("blobs from the old server\n", encoding="utf-8")
    return copied


@pytest.mark.parametrize("which", ["archive", "blobs", "one blob", "a copy of blobs"])
def test_importing_the_archive_is_refused_and_stores_nothing(imported, tmp_path, capsys, which):
    config, repo = imported
    before = _counts(repo)
    files_before = sorted(p.name for p in (tmp_path / "var" / "archive").rglob("*") if p.is_file())
    assert before[0] > 0

    target = _archive_like(tmp_path, which)
    code = main(["-c", str(config), "import", str(target), "-m", "dana"])
    captured = capsys.readouterr()

    assert code == 1
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert lines[0] == f"error: {target} is a mailsync archive ({lines[0].split('(')[1]}"
    assert "not a mailbox" in lines[0]
    assert lines[1].startswith("fix:")
    assert "`mailsync replay`" in lines[1]
    assert len(lines) == 2  # one line and its fix: no progress bar, no table, no traceback
    assert _counts(repo) == before
    assert sorted(p.name for p in (tmp_path / "var" / "archive").rglob("*") if p.is_file()) == files_before


def test_a_maildir_beside_it_is_still_imported(imported, tmp_path, capsys):
    config, repo = imported
    before = _counts(repo)
    maildir = tmp_path / "Maildir"
    (maildir / "cur").mkdir(parents=True)
    for path in sorted((DEMO / "Maildir" / "cur").iterdir())[:2]:
        shutil.copy(path, maildir / "cur" / path.name)
    code = main(["-c", str(config), "import", str(maildir), "-m", "dana"])
    capsys.readouterr()
    assert code == 0
    assert _counts(repo)[0] == before[0] + 2
