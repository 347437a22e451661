"""Decisions and the pipeline on the demo: a rejection outlives later mail; an approval reloads the CRM."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from mailsync.admin.crm_import import import_crm
from mailsync.approval.decisions import DecisionRequest, decide
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.followups import thread_view, thresholds
from mailsync.pipeline.importer import import_source
from nlp.propose import propose
from storage import models as m
from storage.eventlog import EventLog
from tests.conftest import DEMO

DANA = "dana@northwind.example"
ROOT_ID = "8B5CC4DF7EEC7D32A7814ECA4AF047AE@EXCH01.pinecrest.example"
LINK = f"link:{ROOT_ID}"  # Dana's open proposal to link the Pinecrest board-approval thread
NOW = datetime(2026, 4, 21, 8, 0, tzinfo=UTC)
LATER_REPLY = f"""\
From: Marcus Bell <marcus.bell@pinecrest.example>
To: Dana Whitfield <dana@northwind.example>
Subject: Re: Board approval - FleetSense and RouteIQ
Date: Tue, 21 Apr 2026 10:15:00 -0400
Message-ID: <later-reply-1@EXCH01.pinecrest.example>
In-Reply-To: <{ROOT_ID}>
References: <{ROOT_ID}>

Dana,

One more thing for the FleetSense and RouteIQ agreement: Linda needs the final
price for all 85 trucks by Friday.

Marcus
"""


@pytest.fixture
def demo(settings, repo, pipeline):
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline.refresh_crm()
    import_source(pipeline, FileSource(DEMO / "Maildir", "dana"), DANA)
    return pipeline


def suggestion(repo, key):
    with repo.session() as s:
        return s.scalars(select(m.Suggestion).where(m.Suggestion.key == key)).one()


@pytest.mark.both_dbs
def test_a_rejected_proposal_stays_rejected_when_later_mail_on_its_thread_proposes_it_again(
    settings, repo, demo, tmp_path
):
    assert suggestion(repo, LINK).status == "open"
    decide(repo, EventLog(settings.events_dir), DecisionRequest(LINK, "reject", DANA, "reply"), NOW)
    before = suggestion(repo, LINK)
    demo.refresh_crm_if_changed()
    reply = tmp_path / "reply.eml"
    reply.write_text(LATER_REPLY, encoding="utf-8")
    assert import_source(demo, FileSource(reply, "dana"), DANA)["new"] == 1
    with repo.session() as s:
        thread = s.scalars(select(m.Thread).where(m.Thread.key == ROOT_ID)).one()
        again = propose(thread_view(s, thread, DANA, demo.crm), demo.crm, thresholds(settings.matching))
        assert LINK in {p.key for p in again}  # the thread proposes the same link again...
        assert (
            s.scalar(
                select(m.Message.thread_id).where(
                    m.Message.message_id == "later-reply-1@EXCH01.pinecrest.example"
                )
            )
            == thread.id
        )
    after = suggestion(repo, LINK)
    assert (after.status, after.updated_at, after.evidence) == (
        "rejected",
        before.updated_at,
        before.evidence,
    )  # ...and it stays rejected


def test_an_approval_makes_the_pipeline_reload_its_crm(settings, repo, demo):
    assert not demo.refresh_crm_if_changed()
    key = "new_opportunity:20260526081437.6AB9F1@mail.spedition-bergmann.example"
    decide(repo, EventLog(settings.events_dir), DecisionRequest(key, "approve", DANA, "link"), NOW)
    assert demo.refresh_crm_if_changed()
    assert "Spedition Bergmann GmbH" in {a.name for a in demo.crm.accounts.values()}
