"""A decision logged just before a crash is applied when the daemon starts: the event log is the record."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailsync.service.daemon import Daemon
from mailsync.service.metrics import Metrics
from storage import models as m
from storage.eventlog import EventLog
from storage.mailstore import save_proposals
from storage.records import Proposal, ProposalKind


@pytest.mark.both_dbs
def test_the_daemon_applies_logged_decisions_the_database_lacks_at_start(settings, repo, pipeline):
    proposal = Proposal(
        kind=ProposalKind.NEW_CONTACT, key="new_contact:jo@initech.example", summary="Jo (Initech)",
        payload={"email": "jo@initech.example", "name": "Jo", "account": "Initech"}, confidence=0.8,
        evidence=(), owner_rep="dana@northwind.example",
    )  # fmt: skip
    with repo.session() as session:
        save_proposals(session, None, [proposal])
    # What decide() writes first; the process died before applying it.
    EventLog(settings.events_dir).append(
        "decision",
        {
            "key": proposal.key,
            "verdict": "reject",
            "edits": {},
            "who": "dana@northwind.example",
            "how": "link",
            "digest_token": None,
            "at": "2026-11-30T08:00:00+00:00",
        },
        actor="dana@northwind.example",
    )
    daemon = Daemon(settings, pipeline, Metrics([]))
    daemon.catch_up_decisions()
    daemon.catch_up_decisions()  # twice is once
    with repo.session() as session:
        row = session.scalars(select(m.Suggestion).where(m.Suggestion.key == proposal.key)).one()
        decisions = session.scalars(select(m.Decision).where(m.Decision.suggestion_id == row.id)).all()
    assert row.status == "rejected"
    assert [(d.verdict, d.how) for d in decisions] == [("reject", "link")]
