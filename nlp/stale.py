"""Lost by silence: our follow-up to an open deal's contact, unanswered for N days, is a lost signal.

A pure function of the threads, the CRM and "now" (the caller owns the clock: the daemon's daily
job, `mailsync digest`, the evaluation). A thread qualifies when all of these hold:

- its last message from a person is ours, to a CRM contact of the target opportunity's account, and
  is a follow-up ("just checking in", "ich wollte kurz nachhaken", "¿habéis podido revisar?"): a
  thread that merely ends with our quote is not yet being ignored;
- that follow-up is at least `after_days` old at `now`;
- the thread targets one open opportunity (linked, or a clear best candidate: nlp/propose.py) and
  shows no won/lost outcome already;
- nobody from that account wrote to us since, in any thread (`last_inbound`: a customer may answer
  with a fresh mail, or by phone and then a new thread).

The proposal is a stage change to closed_lost with a weaker confidence than a stated loss, and the
unanswered follow-up as its evidence. Its key differs from the thread's other stage change, so a
stated advance and the silence that followed are both shown; a reply withdraws it (mailsync/pipeline).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from nlp.clean import sentences
from nlp.propose import Thresholds, from_outside, human_messages, outcome_hits, target_opportunity
from nlp.signals import FOLLOW_UP
from storage.records import Evidence, Proposal, ProposalKind

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from nlp.propose import ThreadView
    from storage.records import CrmSnapshot, Match

CONFIDENCE = 0.45


def unanswered_follow_up(thread: ThreadView) -> tuple[Match, str] | None:
    """Our follow-up that ends the thread (with its follow-up sentence), or None."""
    human = human_messages(thread.messages)
    if not human:
        return None
    last = human[-1]
    if from_outside(last) or last.internal_only:
        return None
    sentence = next((s for s in sentences(last.text) if FOLLOW_UP.search(s)), None)
    return (last, sentence) if sentence else None


def lost_by_silence(
    threads: Iterable[ThreadView],
    crm: CrmSnapshot,
    *,
    now: datetime,
    after_days: int,
    last_inbound: Mapping[int, datetime] | None = None,
    thresholds: Thresholds | None = None,
) -> list[tuple[ThreadView, Proposal]]:
    """Each qualifying thread with its lost-signal proposal (see the module docstring)."""
    found = []
    for thread in threads:
        unanswered = unanswered_follow_up(thread)
        if unanswered is None:
            continue
        last, sentence = unanswered
        if last.sent_at is None or _utc(now) - _utc(last.sent_at) < timedelta(days=after_days):
            continue
        opp = target_opportunity(thread, crm)
        if opp is None or outcome_hits(human_messages(thread.messages), (thresholds or Thresholds()).model):
            continue
        if not any(p.contact and p.account and p.account.id == opp.account_id for p in last.external):
            continue  # not written to a contact of the deal's account
        heard = (last_inbound or {}).get(opp.account_id)
        if heard is not None and _utc(heard) > _utc(last.sent_at):
            continue
        since = last.sent_at.date().isoformat()
        found.append(
            (
                thread,
                Proposal(
                    kind=ProposalKind.STAGE_CHANGE,
                    key=f"stale:{thread.key}:{opp.id}",
                    summary=f"Move {opp.name} from {opp.stage} to closed_lost: no reply since {since}",
                    payload={
                        "opportunity_id": opp.id,
                        "opportunity": opp.name,
                        "from_stage": opp.stage,
                        "to_stage": "closed_lost",
                        "reason": "no reply",
                        "silent_since": since,
                    },
                    confidence=CONFIDENCE,
                    evidence=(Evidence(last.fingerprint, last.sent_at, sentence[:400]),),
                    owner_rep=opp.owner_rep or thread.owner,
                ),
            )
        )
    return found


def _utc(when: datetime) -> datetime:
    """Aware in UTC; a naive datetime (the database's) is taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
