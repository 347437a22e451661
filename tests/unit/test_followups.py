"""Stored threads through the propose stage: attachments read back, superseded suggestions withdrawn,
the no-reply job at a given "now". On the migrated SQLite database and parse worker of tests/conftest.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from sqlalchemy import select

from mailsync.admin.crm_import import import_crm
from mailsync.pipeline import process
from mailsync.pipeline.followups import flag_unanswered
from nlp.propose import propose
from storage import mailstore
from storage import models as m
from storage.records import Proposal, ProposalKind, Provenance, RawMessage

REP = "dana@northwind.example"
CUSTOMER = "rachel@acme.example"
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def crm(tmp_path, settings, repo, pipeline):
    folder = tmp_path / "crm"
    folder.mkdir()
    (folder / "reps.csv").write_text(f"email,name,team\n{REP},Dana,West\n", encoding="utf-8")
    (folder / "accounts.csv").write_text(
        "id,name,domain\nACC-1,Acme Logistics,acme.example\n", encoding="utf-8"
    )
    (folder / "contacts.csv").write_text(
        f"id,account_id,name,email,owner_rep\nCON-1,ACC-1,Rachel Kim,{CUSTOMER},{REP}\n", encoding="utf-8"
    )
    (folder / "opportunities.csv").write_text(
        "id,account_id,name,stage,amount,currency,owner_rep,created_at\n"
        f"OPP-1,ACC-1,Acme - FleetSense rollout,Demo,48000.00,USD,{REP},2026-02-01\n",
        encoding="utf-8",
    )
    import_crm(settings, repo, [folder], {})
    pipeline.refresh_crm()
    return pipeline.crm


def mail(number, sender, to, body, *, day, reply_to=None, attachment=None, subject="FleetSense rollout"):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject if reply_to is None else f"Re: {subject}"
    msg["Date"] = format_datetime(START + timedelta(days=day))
    msg["Message-ID"] = f"<m{number}@test.example>"
    if reply_to is not None:
        msg["In-Reply-To"] = msg["References"] = f"<m{reply_to}@test.example>"
    msg.set_content(body)
    if attachment:
        msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename=attachment)
    return RawMessage(msg.as_bytes(), Provenance("dana", path=f"m{number}.eml"))


def suggestions(repo):
    with repo.session() as session:
        rows = session.scalars(select(m.Suggestion).order_by(m.Suggestion.id))
        return [(r.kind, r.status, r.payload.get("to_stage") or r.payload.get("mode")) for r in rows]


def test_attachment_names_stored_with_the_message_count_as_evidence_later(crm, repo, pipeline):
    pipeline.ingest(mail(1, CUSTOMER, REP, "Can you send pricing for FleetSense?", day=0), REP)
    pipeline.ingest(
        mail(2, CUSTOMER, REP, "All approved, see attached.", day=5, reply_to=1, attachment="PO-4471.pdf"),
        REP,
    )
    assert ("stage_change", "open", "closed_won") in suggestions(repo)


def test_a_suggestion_the_thread_no_longer_supports_is_withdrawn_and_may_come_back(crm, repo, pipeline):
    # From a private address nothing ties the request to Acme: a new opportunity, for now.
    pipeline.ingest(
        mail(1, "rachel.kim@gmail.com", REP, "Could you send us a quote for 40 vans?", day=0), REP
    )
    assert ("new_opportunity", "open", None) in suggestions(repo)
    # Our answer goes to her company address: the thread is about Acme's open deal after all.
    pipeline.ingest(
        mail(2, REP, f"{CUSTOMER}, rachel.kim@gmail.com", "Quote attached.", day=1, reply_to=1), REP
    )
    found = suggestions(repo)
    assert ("new_opportunity", "withdrawn", None) in found
    assert ("link_thread", "open", "link") in found
    with repo.session() as session:
        thread_id = session.scalar(select(m.Thread.id))
        row = session.scalar(select(m.Suggestion).where(m.Suggestion.kind == "new_opportunity"))
        again = Proposal(ProposalKind.NEW_OPPORTUNITY, row.key, row.summary, dict(row.payload), 0.5, (), REP)
        assert (
            mailstore.sync_suggestions(session, thread_id, [again], withdraw=False) == 2
        )  # reopened, updated
    assert ("new_opportunity", "open", None) in suggestions(repo)


def test_the_no_reply_job_flags_an_unanswered_follow_up_and_a_reply_withdraws_it(
    crm, settings, repo, pipeline
):
    pipeline.ingest(mail(1, CUSTOMER, REP, "Could you send the FleetSense quote?", day=0), REP)
    pipeline.ingest(mail(2, REP, CUSTOMER, "Quote attached: USD 48,000.", day=1, reply_to=1), REP)
    pipeline.ingest(mail(3, REP, CUSTOMER, "Just checking in on the quote.", day=10, reply_to=2), REP)
    follow_up = START + timedelta(days=10)
    days = settings.matching.lost_after_days
    assert flag_unanswered(repo, crm, settings.matching, follow_up + timedelta(days=days - 1)) == 0
    assert flag_unanswered(repo, crm, settings.matching, follow_up + timedelta(days=days + 1)) == 1
    assert ("stage_change", "open", "closed_lost") in suggestions(repo)
    assert (
        flag_unanswered(repo, crm, settings.matching, follow_up + timedelta(days=days + 2)) == 0
    )  # idempotent
    pipeline.ingest(mail(4, CUSTOMER, REP, "Sorry for the silence, still on it.", day=60, reply_to=3), REP)
    assert ("stage_change", "withdrawn", "closed_lost") in suggestions(repo)
    assert flag_unanswered(repo, crm, settings.matching, START + timedelta(days=200)) == 0


def _threads(repo):
    with repo.session() as session:
        rows = session.execute(
            select(m.Message.message_id, m.Message.thread_id).where(m.Message.thread_id.is_not(None))
        )
        return dict(rows.all())


def test_an_out_of_office_answering_our_follow_up_stands_alone_and_a_later_reply_does_not(
    crm, repo, pipeline
):
    pipeline.ingest(mail(1, CUSTOMER, REP, "We are reviewing the FleetSense rollout quote.", day=0), REP)
    ooo = mail(2, CUSTOMER, REP, "I am out of the office until Monday.", day=1, reply_to=1)
    ooo = RawMessage(
        ooo.data.replace(b"\nSubject: Re:", b"\nAuto-Submitted: auto-replied\nSubject: Re:"), ooo.provenance
    )
    pipeline.ingest(ooo, REP)
    # A bounce that names the deal message only by subject, and a person's reply after both.
    bounce = mail(
        3, "mailer-daemon@acme.example", REP, "Delivery failed.", day=1, subject="Re: FleetSense rollout"
    )
    pipeline.ingest(bounce, REP)
    pipeline.ingest(
        mail(4, CUSTOMER, REP, "Back now: FleetSense rollout looks good.", day=2, reply_to=1), REP
    )
    found = _threads(repo)
    assert found["m4@test.example"] == found["m1@test.example"]
    assert len({found[f"m{n}@test.example"] for n in (1, 2, 3)}) == 3  # no activity on the deal's thread


@pytest.mark.parametrize("won_first", [True, False, None], ids=["won-first", "won-later", "one-batch"])
def test_a_request_after_the_customer_signed_their_deal_is_the_next_deal_in_either_order(
    crm, repo, pipeline, won_first
):
    signed = [
        mail(1, CUSTOMER, REP, "Could you confirm the FleetSense rollout terms?", day=0),
        mail(
            2, CUSTOMER, REP, "We signed the order, PO attached.", day=5, reply_to=1, attachment="PO-77.pdf"
        ),
    ]
    later = mail(
        3,
        CUSTOMER,
        REP,
        "Could you send us a quote for 12 temperature sensors?",
        day=9,
        subject="Depot",
    )
    if won_first is None:  # one batch, the later request's thread proposed before the signed one
        pipeline.capture([later, *signed], REP)
        pipeline.drain()
    for raw in () if won_first is None else (*signed, later) if won_first else (later, *signed):
        pipeline.ingest(raw, REP)
    with repo.session() as session:
        depot = session.scalar(select(m.Message.thread_id).where(m.Message.message_id == "m3@test.example"))
        rows = session.scalars(select(m.Suggestion).where(m.Suggestion.status == "open")).all()
        on_depot = {r.kind for r in rows if r.thread_id == depot}
        won = [r for r in rows if r.kind == "stage_change" and r.payload["to_stage"] == "closed_won"]
    assert len(won) == 1
    assert "link_thread" not in on_depot  # not the deal Acme already signed
    assert "new_opportunity" in on_depot


def _signed_then_recorded(pipeline, monkeypatch, *, depot_day: int) -> list[str]:
    """Acme signs the FleetSense rollout on its thread (day 5) and asks for a new quote on a Depot thread;
    then the keys of the threads proposed for are recorded, in order."""
    for raw in (
        mail(1, CUSTOMER, REP, "Could you confirm the FleetSense rollout terms?", day=0),
        mail(
            2, CUSTOMER, REP, "We signed the order, PO attached.", day=5, reply_to=1, attachment="PO-77.pdf"
        ),
        mail(
            3,
            CUSTOMER,
            REP,
            "Could you send us a quote for 12 temperature sensors?",
            day=depot_day,
            subject="Depot",
        ),
    ):
        pipeline.ingest(raw, REP)
    proposed: list[str] = []

    def recording(view, *args, **kwargs):
        proposed.append(view.key)
        return propose(view, *args, **kwargs)

    monkeypatch.setattr(process, "propose", recording)
    return proposed


def _signed_again(*, day: int) -> bytes:
    """A second thread (m4) saying the FleetSense rollout was signed, dated `day`."""
    return mail(
        4,
        CUSTOMER,
        REP,
        "We signed the FleetSense rollout order, PO attached.",
        day=day,
        subject="Purchase order",
        attachment="PO-78.pdf",
    )


def test_an_outcome_proposed_again_sends_no_thread_back_to_propose(crm, repo, pipeline, monkeypatch):
    """Only a new outcome (or earlier evidence of it) changes how the account's later threads read; a
    reply on the signed deal's thread proposes the same won stage change and nothing else again (a
    backfill's every batch re-read every later thread of the account, a cost that grew with the mail)."""
    proposed = _signed_then_recorded(pipeline, monkeypatch, depot_day=9)
    pipeline.ingest(mail(4, CUSTOMER, REP, "Thanks, see you at the kick-off.", day=12, reply_to=2), REP)
    with repo.session() as session:
        keys = dict(session.execute(select(m.Message.message_id, m.Thread.key).join(m.Thread)).all())
        won = session.scalars(
            select(m.Suggestion).where(m.Suggestion.kind == "stage_change", m.Suggestion.status == "open")
        ).all()
    assert proposed == [keys["m4@test.example"]]  # the signed deal's thread, and not the Depot thread
    assert keys["m4@test.example"] == keys["m1@test.example"]
    assert [w.payload["to_stage"] for w in won] == ["closed_won"]


def test_a_deal_settled_again_later_on_another_thread_sends_no_thread_back_to_propose(
    crm, repo, pipeline, monkeypatch
):
    """The account's later threads already pass over a deal from its earliest open won/lost evidence on
    another thread; a second thread that says the same deal was won, later, changes none of them."""
    proposed = _signed_then_recorded(pipeline, monkeypatch, depot_day=20)
    pipeline.ingest(_signed_again(day=12), REP)
    with repo.session() as session:
        keys = dict(session.execute(select(m.Message.message_id, m.Thread.key).join(m.Thread)).all())
        won = session.scalars(
            select(m.Suggestion.thread_id).where(
                m.Suggestion.kind == "stage_change",
                m.Suggestion.status == "open",
                m.Suggestion.payload["to_stage"].as_string() == "closed_won",
            )
        ).all()
    assert len(set(won)) == 2  # the second thread settles the deal too
    assert len(set(keys.values())) == 3
    assert proposed == [keys["m4@test.example"]]  # not the Depot thread, begun after both


def test_an_earlier_outcome_sends_back_only_the_threads_begun_between_the_two_dates(
    crm, repo, pipeline, monkeypatch
):
    """Acme signed on day 5 (known); a thread begun on day 20 passes the deal over already. A second
    thread now shows the deal signed on day 2: the thread begun on day 3 reads differently (it began after
    the deal was settled) and is proposed again; the one begun on day 20 reads the same and is not."""
    proposed = _signed_then_recorded(pipeline, monkeypatch, depot_day=20)
    between = mail(5, CUSTOMER, REP, "Could you send us a quote for 40 door sensors?", day=3, subject="Doors")
    pipeline.ingest(between, REP)
    del proposed[:]
    pipeline.ingest(_signed_again(day=2), REP)
    with repo.session() as session:
        keys = dict(session.execute(select(m.Message.message_id, m.Thread.key).join(m.Thread)).all())
    assert len(set(keys.values())) == 4
    assert proposed == [keys["m4@test.example"], keys["m5@test.example"]]  # not m3's, begun on day 20
