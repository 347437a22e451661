"""Retention: `[retention] keep_years` and `mailsync retention apply` delete mail older than the cutoff,
archive blobs and journal lines included, recorded in the event log; the rest stays whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.admin.retention import apply_retention, cutoff_for
from mailsync.cli import main
from storage import models as m
from storage.archive import Archive
from storage.models import db_time
from storage.repo import Repo
from tests.conftest import DEMO, write_config

NOW = datetime(2027, 3, 15, 12, 0, tzinfo=UTC)  # one year back splits the demo's mail (2026)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def imported(tmp_path, capsys, db_url):
    config = write_config(tmp_path, "\n[retention]\nkeep_years = 1\n", database_url=db_url)
    for argv in (
        ["db", "upgrade"],
        ["crm", "import", DEMO / "crm"],
        ["import", DEMO / "Maildir", "-m", "dana"],
    ):
        code, _, err = run(capsys, "-c", config, *argv)
        assert code == 0, err
    settings = load_settings(config)
    repo = Repo(settings.database_url)
    yield config, settings, repo
    repo.dispose()


def _dates(repo: Repo) -> list[datetime]:
    with repo.session() as session:
        return list(session.scalars(select(func.coalesce(m.Message.sent_at, m.Message.captured_at))))


def test_cutoff_is_the_same_date_years_back():
    assert cutoff_for(1, NOW) == datetime(2026, 3, 15, tzinfo=UTC)
    assert cutoff_for(3, datetime(2028, 2, 29, 23, 0, tzinfo=UTC)) == datetime(2025, 2, 28, tzinfo=UTC)


@pytest.mark.both_dbs
def test_retention_deletes_old_mail_with_its_blobs(imported):
    config, settings, repo = imported
    del config
    archive = Archive(settings.archive_dir)
    cutoff = db_time(cutoff_for(1, NOW))
    dates = _dates(repo)
    old = sum(d < cutoff for d in dates)
    assert 0 < old < len(dates)  # the test splits the mail: it can fail both ways
    blobs_before = set(archive.keys())

    preview = apply_retention(repo, archive, settings, dry_run=True, now=NOW)
    assert preview.messages_deleted == old
    assert set(archive.keys()) == blobs_before
    assert len(_dates(repo)) == len(dates)

    report = apply_retention(repo, archive, settings, now=NOW)
    assert report.messages_deleted == old
    assert report.cutoff == "2026-03-15"
    left = _dates(repo)
    assert len(left) == len(dates) - old
    assert all(d >= cutoff for d in left)
    with repo.session() as session:
        known = set(session.scalars(select(m.Blob.sha256)))
        named = set(session.scalars(select(m.Provenance.blob_sha256))) | set(
            session.scalars(select(m.Message.blob_sha256))
        )
    on_disk = set(archive.keys())
    assert report.blobs_deleted == len(blobs_before - on_disk) > 0
    assert on_disk == known == named  # no orphan blob, no row naming a deleted one
    assert archive.verify(known).ok
    journal = "\n".join(p.read_text() for p in (settings.archive_dir / "journal").glob("*.jsonl"))
    assert journal
    assert not any(sha in journal for sha in blobs_before - on_disk)  # a rebuild will not look for them
    events = [
        json.loads(line)
        for path in settings.events_dir.glob("*.jsonl")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    applied = [e for e in events if e["kind"] == "retention_applied"]
    assert [e["payload"] for e in applied] == [{"keep_years": 1, "cutoff": "2026-03-15", "messages": old}]

    again = apply_retention(repo, archive, settings, now=NOW)
    assert again.messages_deleted == 0


@pytest.mark.both_dbs
def test_retention_command(tmp_path, capsys, db_url):
    config = write_config(tmp_path, database_url=db_url)
    assert run(capsys, "-c", config, "db", "upgrade")[0] == 0
    code, _, err = run(capsys, "-c", config, "retention", "apply")
    assert code == 2
    assert "keep_years" in err
    assert "fix:" in err
    config = write_config(tmp_path, "\n[retention]\nkeep_years = 100\n", database_url=db_url)
    code, out, err = run(capsys, "-c", config, "retention", "apply", "--dry-run", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["dry_run"] is True
    assert result["messages_deleted"] == 0
    assert result["keep_years"] == 100
