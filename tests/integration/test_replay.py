"""`mailsync replay`: archived mail processed again, idempotent, resumable, and decisions stand.

The demo is imported and decided on (a link approved, a new opportunity approved, a contact rejected);
replaying it once and twice gives the same threads, links, proposals and decisions, and a replay
SIGKILLed in the middle of its processing, run again, ends in the same database. On SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from mailsync.faults import ENV as FAULT_ENV
from storage import models as m
from tests.support.database import use_database
from tests.support.mail import plain_mail
from tests.support.snapshot import cli, decided_demo, snapshot

if TYPE_CHECKING:
    from pathlib import Path

# What processing derives; a replay may change these only by a change of rules, CRM or model.
DERIVED = (
    "messages",
    "participants",
    "refs",
    "quarantine",
    "threads",
    "proposals",
    "decisions",
    "opportunities",
)
RUN_TIMEOUT = 300

pytestmark = pytest.mark.both_dbs


@pytest.fixture(autouse=True)
def _database(monkeypatch, db_url):
    """The demo's config, the CLI and the SIGKILLed replay process on the test's database."""
    use_database(monkeypatch, db_url)


def replay_json(config: Path, capsys, *argv: str) -> dict:
    capsys.readouterr()
    cli(config, "replay", "--json", *argv)
    return json.loads(capsys.readouterr().out)


def decided(repo) -> dict[str, str]:
    with repo.session() as s:
        return dict(
            s.execute(
                select(m.Suggestion.key, m.Suggestion.status).where(m.Suggestion.status != "open")
            ).all()
        )


def test_replay_twice_is_replay_once_and_decisions_stand(tmp_path, capsys):
    config, repo = decided_demo(tmp_path)
    decisions = decided(repo)
    assert sorted(decisions.values()) == ["approved", "approved", "rejected"]
    with repo.session() as s:
        linked = set(s.scalars(select(m.Thread.key).where(m.Thread.opportunity_id.is_not(None))))
    assert linked

    first = replay_json(config, capsys)
    assert first["requeued"] == 51  # every message, the quarantined one too (from the parse stage)
    assert first["processed"] == 51
    assert first["quarantined"] == 1
    once = snapshot(repo)
    second = replay_json(config, capsys)
    assert second["processed"] == 51
    twice = snapshot(repo)
    for table in DERIVED:
        assert twice[table] == once[table], table
    assert {k: v for k, v in decided(repo).items() if k in decisions} == decisions  # rejected stays rejected
    with repo.session() as s:
        assert linked <= set(s.scalars(select(m.Thread.key).where(m.Thread.opportunity_id.is_not(None))))
        assert (
            s.scalar(select(func.count()).select_from(m.AppliedEvent).where(m.AppliedEvent.kind == "replay"))
            == 0
        )
    repo.dispose()


def test_replay_selection_and_dry_run(tmp_path, capsys):
    config, repo = decided_demo(tmp_path)
    before = snapshot(repo)
    dry = replay_json(config, capsys, "--dry-run", "--from-stage", "match")
    assert dry["selected"] == 50  # parsed messages only: the quarantined one is not matched again
    assert dry["requeued"] == 0
    assert snapshot(repo) == before
    recent = replay_json(config, capsys, "--since", "2026-05-01", "--from-stage", "thread")
    assert 0 < recent["requeued"] < 50
    none = replay_json(config, capsys, "--mailbox", "dana", "--since", "2100-01-01")
    assert none["requeued"] == 0
    for table in DERIVED:
        assert snapshot(repo)[table] == before[table], table
    repo.dispose()


def test_killed_replay_resumes_and_ends_equal(tmp_path, capsys):
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(160):  # with the demo, two processing batches: the kill falls between them
        (extra / f"{i:03}.eml").write_bytes(
            plain_mail(f"Replay {i}", f"Pricing for {i} trucks?", id_prefix="replay")
        )
    config, repo = decided_demo(tmp_path / "db", extra)
    reference = replay_json(config, capsys)  # an uninterrupted replay of this history
    assert reference["processed"] == 211
    once = snapshot(repo)

    env = {k: v for k, v in os.environ.items() if k not in {FAULT_ENV, "MAILSYNC_CONFIG"}}
    env[FAULT_ENV] = "after_commit:1"  # the first processing batch committed, SIGKILL
    killed = subprocess.run(
        [sys.executable, "-c", "from mailsync.cli import run; run()", "-c", str(config), "replay"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")[-2000:]
    with repo.session() as s:
        statuses = dict(s.execute(select(m.Message.status, func.count()).group_by(m.Message.status)).all())
    assert 0 < statuses.get("pending", 0) < 211  # killed mid-way

    resumed = replay_json(config, capsys)
    assert resumed["resumed"] is True
    assert resumed["requeued"] == 0  # its queuing was complete: only the processing goes on
    assert resumed["processed"] == statuses["pending"]
    after = snapshot(repo)
    for table in DERIVED:
        assert after[table] == once[table], table
    repo.dispose()
