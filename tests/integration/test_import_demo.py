"""End to end on the bundled demo: CRM import, Maildir import (twice), proposals, archive, quarantine."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from mailsync.admin.crm_import import import_crm
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.importer import import_source
from storage import models as m
from storage.eventlog import EventLog
from tests.conftest import DEMO


def dump(repo):
    """Every row of every table, sorted: equal dumps mean equal databases."""
    with repo.engine.connect() as conn:
        tables = list(m.Base.metadata.sorted_tables)
        return {t.name: sorted(map(tuple, conn.execute(select(t)).all()), key=repr) for t in tables}


@pytest.fixture
def imported(settings, repo, pipeline):
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline.refresh_crm()
    return import_source(pipeline, FileSource(DEMO / "Maildir", "dana"), "dana@northwind.example")


@pytest.mark.both_dbs
def test_demo_import_counts(imported):
    assert imported == Counter({"new": 50, "copy": 2, "quarantined": 1})


@pytest.mark.both_dbs
def test_second_import_changes_nothing(settings, repo, pipeline, imported):
    before = dump(repo)
    again = import_source(pipeline, FileSource(DEMO / "Maildir", "dana"), "dana@northwind.example")
    assert again == Counter({"known": 53})
    report = import_crm(settings, repo, [DEMO / "crm"], {})
    assert report.unchanged
    assert dump(repo) == before
    assert len(list(EventLog(settings.events_dir))) == 1


def test_every_message_and_copy_is_archived(settings, repo, imported, pipeline):
    with repo.session() as s:
        blobs = list(s.scalars(select(m.Blob.sha256)))
        messages = s.scalar(select(func.count()).select_from(m.Message))
        copies = list(s.execute(select(m.Provenance.message_pk, m.Provenance.blob_sha256)))
    assert messages == 51
    assert len(blobs) == 52  # 50 emails + the junk file + one copy with an extra Received header
    assert len(copies) == 53
    for sha in blobs:
        assert pipeline.archive.get(sha)
    report = pipeline.archive.verify(blobs)
    assert report.ok
    assert report.checked == 52


def test_same_email_in_two_folders_is_one_message_with_both_provenances(repo, imported):
    folders = func.count(func.distinct(m.Provenance.folder))
    blobs = func.count(func.distinct(m.Provenance.blob_sha256))
    with repo.session() as s:
        rows = s.execute(
            select(m.Message.id, folders, blobs)
            .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
            .group_by(m.Message.id)
            .having(func.count() > 1)
        ).all()
    assert len(rows) == 2
    assert sorted((folders, blobs) for _, folders, blobs in rows) == [(2, 1), (2, 2)]


def test_quarantined_junk_is_listed_with_its_reason(repo, imported):
    with repo.session() as s:
        rows = s.execute(
            select(m.Quarantine.reason, m.Provenance.path).join(
                m.Provenance, m.Provenance.message_pk == m.Quarantine.message_pk
            )
        ).all()
    assert len(rows) == 1
    reason, path = rows[0]
    assert reason == "no header block: the first line is not a header"
    assert path.endswith("1774960000.M99P4199.demo")


def suggestions(repo):
    with repo.session() as s:
        return list(s.scalars(select(m.Suggestion).order_by(m.Suggestion.id)))


def opp_id(repo, external):
    with repo.session() as s:
        return s.scalar(select(m.Opportunity.id).where(m.Opportunity.external_id == external))


def test_proposals_match_the_demo_readme(repo, imported):
    found = suggestions(repo)
    by_kind = Counter(s.kind for s in found)
    stage = {(s.payload["opportunity_id"], s.payload["to_stage"]) for s in found if s.kind == "stage_change"}
    assert (opp_id(repo, "OPP-002"), "closed_lost") in stage
    assert (opp_id(repo, "OPP-003"), "closed_won") in stage
    contacts = {s.payload["email"] for s in found if s.kind == "new_contact"}
    assert "nadia.petrova@acme.example" in contacts
    assert "cjensen@summitagri.example" not in contacts  # named only in an out-of-office reply
    new_opps = {
        s.payload.get("new_account_domain") or s.payload["account"]: s.payload
        for s in found
        if s.kind == "new_opportunity"
    }
    assert new_opps["granitepeak.example"]["first_seen_at"] == "2026-01-22"
    assert new_opps["spedition-bergmann.example"]["first_seen_at"] == "2026-05-26"
    assert new_opps["spedition-bergmann.example"]["currency"] == "EUR"
    assert not any("gmail.com" in str(p.get("new_account_domain")) for p in new_opps.values())
    links = {s.payload["opportunity_id"] for s in found if s.kind == "link_thread"}
    assert opp_id(repo, "OPP-001") in links
    assert by_kind["new_opportunity"] == 3
    for suggestion in found:
        assert suggestion.evidence
        assert all(e["quote"] and e["fingerprint"] for e in suggestion.evidence)


def test_noise_and_internal_threads_have_no_proposals(repo, imported):
    with repo.session() as s:
        proposed = select(m.Suggestion.thread_id).where(m.Suggestion.thread_id.is_not(None))
        quiet = s.scalars(select(m.Thread.subject).where(~m.Thread.id.in_(proposed))).all()
        auto_replies = s.scalars(
            select(m.Message.subject).where(m.Message.automated.like("auto-submitted%"))
        ).all()
    assert sorted(quiet) == [
        "Fleet Technology Weekly #212: ELD update, EV telematics and more",
        "Fleet Technology Weekly #225: Cold-chain buyers' guide",
        "Out of Office: RouteIQ harvest pilot - next steps",  # stands alone: no activity on the pilot
        "Q2 pipeline review - Thursday",
    ]
    assert [subject.lower().startswith("out of office") for subject in auto_replies] == [True]


def test_mbox_export_of_the_same_mail_is_the_same_messages(tmp_path, settings, repo, pipeline, imported):
    import mailbox  # noqa: PLC0415

    export = mailbox.mbox(tmp_path / "dana.mbox")
    sent = sorted((DEMO / "Maildir" / ".Sent" / "cur").iterdir())
    for path in sent:
        data = path.read_bytes()
        export.add(data.replace(b"\nFrom ", b"\n>From "))  # quoted as an mbox export would
    export.close()
    counts = import_source(pipeline, FileSource(tmp_path / "dana.mbox", "dana"), "dana@northwind.example")
    assert counts == Counter({"copy": len(sent)})  # known emails, new places: no new messages
    with repo.session() as s:
        paths = s.scalars(select(m.Provenance.path).where(m.Provenance.path.like("%dana.mbox#%"))).all()
    assert len(paths) == len(sent)
