"""An open proposal `mailsync reassign` moved to a successor stays theirs when its thread is processed
again: a replay re-proposes it with the owner processing gives it (the departed rep's mailbox owner)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from storage import models as m
from tests.integration.test_departed_reps import DANA, SAM, TAKEOUT, as_json, config, query, run, takeout_mbox

__all__ = ["config"]  # the fixture: Dana's archive mailbox and the CRM imported, on SQLite and PostgreSQL

pytestmark = pytest.mark.slow  # several CLI commands, one of them loads the matcher


def test_a_replay_after_reassign_leaves_open_proposals_with_the_successor(config, tmp_path, capsys):
    takeout_mbox(tmp_path / TAKEOUT)
    code, out = run(capsys, config, "import", str(tmp_path / "Takeout"), "--mailbox", "dana-archive")
    assert code == 0, out
    proposals = select(m.Suggestion.kind, m.Suggestion.owner_rep).where(m.Suggestion.status == "open")
    kinds = {kind for kind, _ in query(config, proposals)}
    assert {"new_opportunity", "link_thread"} <= kinds
    assert {rep for _, rep in query(config, proposals)} == {DANA}

    assert as_json(capsys, config, "reassign", "--from", DANA, "--to", SAM)["changed"] is True
    assert {rep for _, rep in query(config, proposals)} == {SAM}

    code, out = run(capsys, config, "replay")
    assert code == 0, out
    assert {kind for kind, _ in query(config, proposals)} == kinds  # proposed again, still open
    assert {rep for _, rep in query(config, proposals)} == {SAM}
