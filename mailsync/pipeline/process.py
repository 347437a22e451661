"""Processing: the pending messages parsed, matched, threaded and proposed, a batch at a time.

    pending (oldest first) ─> blobs from the archive ─> parse pool (every core, a killable worker per
    message) ─> ONE transaction: claim, match, thread each message; propose ONCE per touched thread ─>
    commit

Parsing happens before the transaction, so a transaction holds no lock while a parser works. The batch
is threaded at once (threads.assign_threads: a few queries, the threads one message at a time would
give). Each thread's proposals are recomputed once per batch, from the thread as the batch left it,
instead of after every message; the touched threads are read in one go, and a stored message is
re-matched only when it or the CRM changed (followups.MatchCache). The claim (FOR UPDATE SKIP LOCKED
on PostgreSQL) keeps two processes from processing one message; a message killed half-way is still
pending and is processed by the next drain.

A message the parser refuses is quarantined with the reason; one the database refuses (a value too long
for a column, a constraint) likewise, and the rest of the batch commits (refusals.py).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from config.errors import ParseError
from mailsync import faults
from mailsync.mail import thread as threading_rules
from mailsync.mail.digest_mail import is_digest_mail
from mailsync.mail.parse_worker import ParseJob
from mailsync.pipeline.followups import ThreadViews, remember_match, thresholds
from mailsync.pipeline.refusals import blame, commit_batch
from nlp.intent import model_text
from nlp.match import match_message
from nlp.noise import automated_reason
from nlp.propose import from_outside, human_messages, propose
from storage import forget, leases, mailstore, threads
from storage import models as m
from storage.deal_context import OUTCOMES
from storage.models import db_time
from storage.records import Proposal, ProposalKind

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterable
    from datetime import datetime

    from sqlalchemy.orm import Session

    from mailsync.pipeline.ingest import Pipeline
    from storage.mailstore import Pending
    from storage.records import CrmSnapshot, Match, ParsedEmail

log = structlog.get_logger()
BATCH = 200  # messages per processing transaction
DRAIN_CHUNK = 1_000  # messages processed under one take of the drain lease
_PARSED_AHEAD = 3  # batches taken and parsing, the one being processed included


def drain(
    pipeline: Pipeline, limit: int | None = None, stop: threading.Event | None = None
) -> dict[int, str]:
    """Process pending messages until none is left, `limit` were taken or `stop` is set (between
    batches); returns message id -> "new" (processed) or "quarantined" for each one processed here.
    The next batch is read and parsed (in the pool) while this one is matched, threaded and committed."""
    done: dict[int, str] = {}
    taken = 0

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def take(after: int) -> list[Pending]:
        nonlocal taken
        if stopped():
            return []
        size = BATCH if limit is None else min(BATCH, limit - taken)
        if size <= 0:
            return []
        with pipeline.repo.session() as session:
            batch = mailstore.pending(session, size, after=after)
        taken += len(batch)
        return batch

    queue = take(0)
    if not queue:
        return done
    with ThreadPoolExecutor(1, thread_name_prefix="mailsync-read") as ahead:
        # Up to _PARSED_AHEAD batches are taken and parsed (in that order) while one is processed: a
        # batch of large mail parses slower than the batch before it is processed. One drain runs to
        # the end of the queue, giving the drain lease back now and then, rather than drain a chunk at
        # a time: each new drain would wait for its first batch's parse with nothing to overlap it.
        # The first batch parses while the CRM loads.
        parsing = deque([(queue, ahead.submit(_parse, pipeline, queue))])
        pipeline.refresh_crm_if_changed()  # a CRM import since the last drain changes what mail matches
        turn = 0  # messages done when the lease was last given back
        while parsing and not stopped():
            give_back = len(done) - turn >= DRAIN_CHUNK
            if not _still_draining(pipeline, give_back=give_back):
                break
            turn = len(done) if give_back else turn
            while len(parsing) < _PARSED_AHEAD and (following := take(parsing[-1][0][-1].id)):
                parsing.append((following, ahead.submit(_parse, pipeline, following)))  # skip past: pending
            queue, future = parsing.popleft()
            done.update(_process_batch(pipeline, queue, future.result()))
    return done


def _still_draining(pipeline: Pipeline, *, give_back: bool) -> bool:
    """Renew the drain lease before each batch: a drain slower than the lease keeps it, and a drainer
    whose lease ran out and was taken meanwhile (paused past it) stops before it processes another.
    `give_back`: released first (after each DRAIN_CHUNK messages), so that processes take turns."""
    if give_back:
        with pipeline.repo.session() as session:
            leases.release(session, leases.DRAIN, pipeline.holder)
    with pipeline.repo.session() as session:
        if leases.take(session, leases.DRAIN, pipeline.holder, leases.DRAIN_SECONDS) is not None:
            return True
    log.warning("drain_lease_lost", reason="another process drains now")
    return False


def _process_batch(
    pipeline: Pipeline, queue: list[Pending], parsed: list[ParsedEmail | ParseError]
) -> dict[int, str]:
    def work(session: Session, refused: dict[int, str], careful: bool) -> dict[int, str]:
        outcomes = _apply(pipeline, session, queue, parsed, refused, careful=careful)
        faults.point("before_commit")
        return outcomes

    outcomes, refused = commit_batch(pipeline.repo, work)
    faults.point("after_commit")
    for index, reason in refused.items():
        log.warning("message_quarantined", reason=reason, archive_key=queue[index].blob_sha256)
    for item in queue:
        if outcomes.get(item.id) == "new":
            log.debug("message_ingested", archive_key=item.blob_sha256)
    return outcomes


def _parse(pipeline: Pipeline, queue: list[Pending]) -> list[ParsedEmail | ParseError]:
    """Every message parsed (or its ParseError), in the pool, which reads each blob from the archive
    itself (a missing or corrupt one is that message's ParseError); blobs over the size limit never read."""
    limit = pipeline.settings.limits.max_bytes
    store = pipeline.archive.spec()
    jobs = [ParseJob(None, item.fingerprint, item.blob_sha256, store) for item in queue if item.size <= limit]
    parsed = iter(pipeline.parser.parse_many(jobs))
    return [
        next(parsed)
        if item.size <= limit
        else ParseError(f"message too large: {item.size:,} bytes > limit {limit:,}")
        for item in queue
    ]


def _apply(
    pipeline: Pipeline,
    session: Session,
    queue: list[Pending],
    parsed: list[ParsedEmail | ParseError],
    refused: dict[int, str],
    *,
    careful: bool,
) -> dict[int, str]:
    """Match every claimed message and write what it says (one flush for the batch), then thread them
    in order, then propose for each thread touched."""
    crm = pipeline.crm
    claimed = mailstore.claim(session, (item.id for item in queue))
    outcomes: dict[int, str] = {}
    to_thread: list[tuple[int, m.Message, ParsedEmail, Match]] = []
    people: list[dict[str, Any]] | None = None if careful else []  # careful: each message's own flush
    for index, (item, result) in enumerate(zip(queue, parsed, strict=True)):
        message = claimed.get(item.id)
        if message is None:
            continue  # another process has it
        with blame(session, index, careful=careful):
            outcomes[item.id] = "new"
            if forget.held(session, pipeline.settings, message, result):  # names a forgotten person
                continue
            match = _match(session, message, refused.get(index), result, crm, people=people)
            if match is None:
                outcomes[item.id] = message.status if message.status == "quarantined" else "new"
            else:
                assert not isinstance(result, ParseError)  # noqa: S101 - _match returned None for those
                to_thread.append((index, message, result, match))
                remember_match(message, match, crm)  # its thread's view below need not match it again
                message.status = "parsed"  # here, not once threaded: one UPDATE of the batch's messages
    _read_ahead(pipeline, [match for *_, match in to_thread])
    mailstore.add_participants(session, people or [])  # the batch's participants: one executemany
    session.flush()  # the references of the whole batch, in a few INSERT rounds
    last_of_thread: dict[int, int] = {}  # message id -> its index, for the threads touched
    to_assign: list[threads.ThreadInput] = []
    for index, message, result, match in to_thread:
        with blame(session, index, careful=careful):
            faults.point("during_thread")
            refs = threading_rules.references(result, match.automated)
            threaded = threads.ThreadInput(
                message,
                refs=refs,
                key=threading_rules.thread_key(result, refs),
                subject_key=threading_rules.subject_key(result.subject),
                participants=[p.address.email for p in match.participants],
                join_by_subject=threading_rules.may_join_by_subject(result, match.automated),
            )
            if careful:  # one message at a time, so that a refusal names its message
                threads.assign_thread(session, **threaded._asdict())
            to_assign.append(threaded)
            last_of_thread[message.id] = index
    if not careful:
        threads.assign_threads(session, to_assign)  # the same threads, in a handful of queries
    session.flush()
    _propose_touched(pipeline, session, queue, last_of_thread, careful=careful)
    return outcomes


def _read_ahead(pipeline: Pipeline, matches: list[Match]) -> None:
    """The classifier reads the batch's customer mail in one pass; propose asks it a message at a time."""
    model = thresholds(pipeline.settings.matching).model
    if model is not None:
        model.read_ahead(
            model_text(match.text, match.attachments)
            for match in human_messages(matches)
            if from_outside(match) and match.text.strip()
        )


def _match(
    session: Session,
    message: m.Message,
    refused: str | None,
    result: ParsedEmail | ParseError,
    crm: CrmSnapshot,
    *,
    people: list[dict[str, Any]] | None = None,
) -> Match | None:
    """Quarantine a claimed message, keep it as mailsync's own mail, or match it and write what it
    says (participants, references); the match when it is to be threaded."""
    reason = refused or (str(result) if isinstance(result, ParseError) else None)
    if reason is not None:
        mailstore.quarantine(session, message, reason)
        if refused is None:
            # Info, not a warning: junk and hostile mail is expected; it is counted (metrics,
            # summaries) and listed by `mailsync quarantine`.
            log.info("message_quarantined", reason=reason, archive_key=message.blob_sha256)
        return None
    assert not isinstance(result, ParseError)  # noqa: S101 - handled just above
    message.message_id = result.message_id
    if is_digest_mail(result):  # never customer mail, whose mailbox ever holds it
        _keep_digest_mail(message, result)
        log.info("digest_mail_kept", archive_key=message.blob_sha256)
        return None
    faults.point("during_match")
    match = match_message(result, crm, automated_reason(result))
    mailstore.fill_parsed(session, message, result, match, people=people)
    mailstore.add_refs(session, message, threading_rules.references(result, match.automated))
    return match


def _propose_touched(
    pipeline: Pipeline, session: Session, queue: list[Pending], processed: dict[int, int], *, careful: bool
) -> int:
    """Proposals once for each thread the batch touched (threads merged meanwhile count once), for the
    owner of the last message of the batch in it."""
    if not processed:
        return 0
    owner_of: dict[int, tuple[int, str]] = {}
    rows = session.execute(select(m.Message.id, m.Message.thread_id).where(m.Message.id.in_(list(processed))))
    for message_id, thread_id in rows:
        index = processed[message_id]
        if thread_id is not None and index >= owner_of.get(thread_id, (-1, ""))[0]:
            owner_of[thread_id] = (index, queue[index].owner)
    crm = pipeline.crm
    settings = thresholds(pipeline.settings.matching)
    changed = 0
    settled: dict[int, tuple[datetime, int]] = {}  # deal -> when the batch's mail won or lost it, and where
    position: dict[int, int] = {}  # touched thread -> its place in the loop below
    # What the touched threads had already proposed: an outcome proposed again with no earlier evidence
    # changes no other thread's reading (their own proposals read it), so it sends none back to propose.
    before = mailstore.open_outcomes(session, owner_of)
    touched = _threads(session, owner_of)
    views = ThreadViews(session, touched, crm, mailstore.threads_messages(session, owner_of))
    for thread in touched:
        index, owner = owner_of[thread.id]
        position[thread.id] = len(position)
        with blame(session, index, careful=careful):
            proposals = propose(views.view(thread, owner), crm, settings)
            changed += mailstore.sync_suggestions(session, thread.id, proposals, batch=views)
            for deal, when in filter(None, map(_settled, proposals)):
                earlier = before.get((thread.id, deal))
                if (earlier is None or when < earlier) and (deal not in settled or when < settled[deal][0]):
                    settled[deal] = (when, position[thread.id])
    if settled:  # a deal already settled earlier on another thread: its later threads pass it over already
        session.flush()  # the batch's suggestions, for the Core read below (the batch reads flushed none)
        known = mailstore.earliest_outcomes(session, settled, but=set(owner_of))
        spans = {
            deal: (when, known.get(deal))
            for deal, (when, _) in settled.items()
            if deal not in known or when < known[deal]
        }
        # Touched threads proposed after the one that settled a deal read it already; those proposed
        # before it did not, and go back like any other thread of the account.
        read = {deal: {t for t, at in position.items() if at >= settled[deal][1]} for deal in spans}
        changed += _propose_again(pipeline, session, spans, read=read)
    return changed


def _settled(proposal: Proposal) -> tuple[int, datetime] | None:
    """(deal, date of its evidence) for a won or lost stage change; None for any other proposal."""
    deal = proposal.payload.get("opportunity_id")
    dates = [when for e in proposal.evidence if (when := db_time(e.sent_at)) is not None]
    outcome = proposal.kind == ProposalKind.STAGE_CHANGE and proposal.payload.get("to_stage") in OUTCOMES
    return (deal, min(dates)) if outcome and isinstance(deal, int) and dates else None


def _propose_again(
    pipeline: Pipeline,
    session: Session,
    settled: dict[int, tuple[datetime, datetime | None]],
    *,
    read: dict[int, set[int]],
) -> int:
    """Proposals again for the threads at the account of a deal the batch's mail won or lost that began
    after that: such a thread is the next deal, not this one (nlp/link.py), whichever was read first (a
    backfill reads mail in folder order, not date order). `settled`: deal -> (the batch's date, the
    earlier known one or None); a thread begun after the known date passed the deal over already, and
    reads the same with the new one (nlp/link.py compares the dates only with its start), so it is not
    read again: otherwise every new outcome re-read the account's whole later history, a cost that grew
    with the database. `read`: deal -> the batch's threads that read the new date already."""
    crm = pipeline.crm
    account_of = {o.id: o.account_id for deals in crm.open_opportunities.values() for o in deals}
    again: set[int] = set()
    for deal, (when, until) in settled.items():
        if deal in account_of:
            again |= mailstore.threads_begun_since(session, [account_of[deal]], when, until) - read[deal]
    owners = mailstore.thread_owners(session, again)
    if not owners:
        return 0
    settings, changed = thresholds(pipeline.settings.matching), 0
    again_threads = _threads(session, owners)
    views = ThreadViews(session, again_threads, crm, mailstore.threads_messages(session, owners))
    for thread in again_threads:
        proposals = propose(views.view(thread, owners[thread.id]), crm, settings)
        changed += mailstore.sync_suggestions(session, thread.id, proposals, batch=views)
    return changed


def _threads(session: Session, ids: Iterable[int]) -> list[m.Thread]:
    """The threads, in id order: the order the propose stage reads them in."""
    return list(session.scalars(select(m.Thread).where(m.Thread.id.in_(list(ids))).order_by(m.Thread.id)))


def _keep_digest_mail(message: m.Message, parsed: ParsedEmail) -> None:
    """A digest, a confirmation or a rep's reply: kept with what reading the reply needs, and status
    "digest" so that no thread, match or proposal ever counts it."""
    message.status = "digest"
    message.subject = parsed.subject
    message.sender = parsed.sender.email if parsed.sender else None
    message.sent_at = db_time(parsed.sent_at)
    message.body_text = parsed.body_text
