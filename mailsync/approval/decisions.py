"""Decisions are data: a rep's approve, reject or edit, however it came (link, reply, CLI).

    decide(request) ── check: known? open? theirs? edits sound? (a trial run, rolled back)
          │                 └─ no: DecisionError(reason), nothing written
          ├── append to the event log (kind "decision", fsynced)   <- a crash after this loses nothing:
          └── apply_decision_events([event]): one transaction        replaying the log applies it
                 decision row (who, how, when, edits, digest, event id), proposal approved/rejected,
                 the CRM change, and the AppliedEvent that makes a second application a no-op

The event names the proposal by its stable key and carries checked, normalised edits, so a rebuild
from archive + event log applies the same decision to the same proposal, whatever its database id.
Every applied event changes `storage.crm.crm_version`, so the pipeline reloads its CRM snapshot.
Replaying the whole log (`apply_decision_events(repo, EventLog(dir))`) is always safe: what was
applied is skipped, and of two decisions of one proposal the first in the log stands.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Literal

import structlog
from sqlalchemy import or_, select

from config.currencies import CURRENCIES
from config.errors import DecisionError
from config.settings import CANONICAL_STAGES, DEFAULT_STAGE_MAP
from storage import decisions as store
from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from sqlalchemy.orm import Session

    from storage.eventlog import Event, EventLog
    from storage.repo import Repo

log = structlog.get_logger()
KIND = "decision"
_DEAL = ("amount", "currency", "stage", "close_date")
EDITABLE: dict[str, tuple[str, ...]] = {  # what an approval of each kind may change
    "new_opportunity": ("name", *_DEAL),
    "link_thread": ("opportunity", *_DEAL),
    "stage_change": _DEAL,
    "new_contact": ("name",),
    "contact_moved": (),
}
_MAX_AMOUNT = Decimal("1e16")  # the column holds 18 digits, 2 after the point
_MAX_NAME = 300
SHORT_MIN = 6  # hex digits of a key's short form


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    key: str  # Suggestion.key
    verdict: Literal["approve", "reject"]
    who: str  # the rep's email, or "cli:<user>"
    how: Literal["link", "reply", "cli"]
    edits: Mapping[str, str] = field(default_factory=dict)  # approve with edits is an "edit"
    digest_token: str | None = None


@dataclass(frozen=True, slots=True)
class DecisionResult:
    key: str
    suggestion_id: int
    verdict: str
    summary: str  # what was done, in the past tense: "Linked “Pricing” to Acme - rollout"


@dataclass
class Replay:
    """What apply_decision_events did with the decision events it was given."""

    applied: list[DecisionResult] = field(default_factory=list)
    refused: list[DecisionError] = field(default_factory=list)  # e.g. decided by an earlier event
    pending: list[str] = field(default_factory=list)  # keys of proposals not in this database (yet)
    already: int = 0  # applied to this database before


def decide(
    repo: Repo,
    events: EventLog,
    request: DecisionRequest,
    now: datetime | None = None,
    *,
    stages: Callable[[str], str | None] | None = None,
    dry_run: bool = False,
) -> DecisionResult:
    """Check, log and apply one decision; DecisionError (nothing written) when it cannot be taken.

    `stages` maps a stage as a rep writes it to a canonical one (settings.stage_for; default: the
    built-in table). `dry_run` checks everything and says what would be done, writing nothing."""
    at = m.db_time(now) or m.utcnow()  # naive UTC, as the database keeps it; a naive `now` is UTC
    try:
        with repo.session() as session:
            row = _open(session, request.key)
            _may_decide(session, row, request)
            edits = clean_edits(request, stages or _default_stage)
            _edits_fit(row, edits)
            trial = _apply(session, row, request.verdict, edits, at)  # refusals surface here
            session.rollback()  # ...before anything is logged
    except DecisionError as exc:
        log.info("decision_refused", key=request.key, reason=exc.reason, who=request.who, how=request.how)
        raise
    if dry_run:
        return trial
    payload = {
        "key": request.key,
        "verdict": request.verdict,
        "edits": edits,
        "who": request.who,
        "how": request.how,
        "digest_token": request.digest_token,
        "at": at.replace(tzinfo=UTC).isoformat(),
    }
    event = events.append(KIND, payload, actor=request.who)
    replay = apply_decision_events(repo, [event])
    if replay.applied:
        return replay.applied[0]
    if replay.refused:  # another decision of the same proposal came first
        raise replay.refused[0]
    raise _unknown(request.key)  # gone between the check and the apply


def decide_all(  # noqa: PLR0917 - the signature the link and reply helpers code against
    repo: Repo,
    events: EventLog,
    keys: Sequence[str],
    who: str,
    how: Literal["link", "reply", "cli"],
    digest_token: str | None,
    *,
    verdict: Literal["approve", "reject"] = "approve",
    now: datetime | None = None,
) -> list[DecisionResult | DecisionError]:
    """Decide each key on its own (one refused does not stop the rest); results in the keys' order."""
    results: list[DecisionResult | DecisionError] = []
    for key in keys:
        try:
            request = DecisionRequest(key, verdict, who, how, digest_token=digest_token)
            results.append(decide(repo, events, request, now))
        except DecisionError as exc:
            results.append(exc)
    return results


def apply_decision_events(repo: Repo, events: Iterable[Event]) -> Replay:
    """Project decision events into the database, each in its own transaction, in order; others are
    skipped. One applied before is a no-op; one whose proposal is not here (yet) is left pending."""
    replay = Replay()
    for event in events:
        if event.kind != KIND:
            continue
        try:
            with repo.session() as session:
                _apply_event(session, event, replay)
        except DecisionError as exc:  # rolled back; not marked applied, so a later replay tries again
            log.warning("decision_not_applied", key=event.payload["key"], reason=exc.reason, detail=str(exc))
            replay.refused.append(exc)
    return replay


def _apply_event(session: Session, event: Event, replay: Replay) -> None:
    seen = or_(m.AppliedEvent.id == event.id, m.AppliedEvent.digest == event.digest)
    if session.scalar(select(m.AppliedEvent.id).where(seen)) is not None:
        replay.already += 1
        return
    payload = event.payload
    row = store.suggestion(session, payload["key"], lock=True)
    if row is None:
        replay.pending.append(payload["key"])
        return
    session.add(m.AppliedEvent(id=event.id, kind=KIND, digest=event.digest))
    if row.status in {"approved", "rejected"}:  # the first decision stands
        replay.refused.append(_decided(session, row))
        return
    at = m.db_time(datetime.fromisoformat(payload["at"]))
    assert at is not None  # noqa: S101 - every decision event has its time
    result = _apply(session, row, payload["verdict"], payload["edits"], at)
    store.record(
        session,
        row,
        verdict=payload["verdict"],
        who=payload["who"],
        how=payload["how"],
        at=at,
        edits=payload["edits"],
        digest_token=payload["digest_token"],
        event_id=event.id,
    )
    log.info(
        "decision_applied",
        key=row.key,
        verdict=payload["verdict"],
        who=payload["who"],
        how=payload["how"],
        event_id=event.id,
    )
    replay.applied.append(result)


def _apply(
    session: Session, row: m.Suggestion, verdict: str, edits: Mapping[str, str], at: datetime
) -> DecisionResult:
    if verdict == "approve":
        summary = store.approve(session, row, edits, at)
    else:
        summary = f"Rejected: {store.describe(row.kind, row.payload, store.subject_of(session, row))}"
    return DecisionResult(key=row.key, suggestion_id=row.id, verdict=verdict, summary=summary)


# --- checks before anything is written --------------------------------------------------------------


def _open(session: Session, key: str) -> m.Suggestion:
    row = store.suggestion(session, key)
    if row is None:
        raise _unknown(key)
    if row.status == "withdrawn":
        raise DecisionError(
            f"proposal {key} is no longer proposed: later mail withdrew it",
            reason="unknown",
            fix="nothing to do; `mailsync proposals` lists what is open",
        )
    if row.status != "open":
        raise _decided(session, row)
    return row


def _unknown(key: str) -> DecisionError:
    return DecisionError(
        f"no proposal {key}",
        reason="unknown",
        fix="`mailsync proposals` lists the open proposals and their keys",
    )


def _decided(session: Session, row: m.Suggestion) -> DecisionError:
    decision = store.last_decision(session, row.id)
    by = f" by {decision.who} on {decision.at:%Y-%m-%d %H:%M} UTC ({decision.how})" if decision else ""
    return DecisionError(
        f"proposal {row.key} was {row.status} already{by}",
        reason="decided",
        fix="nothing to do; `mailsync proposals` lists what is still open",
    )


def _may_decide(session: Session, row: m.Suggestion, request: DecisionRequest) -> None:
    """The proposal's rep, that rep's team lead, or an admin at the CLI."""
    who = request.who.strip().lower()
    owner = (row.owner_rep or "").lower()
    if request.how == "cli":
        return
    if store.has_left(session, who):  # a departed rep's links and replies keep working otherwise
        raise DecisionError(
            f"{request.who} has left the team (reps.csv active=false) and decides nothing any more",
            reason="not_yours",
            fix="their lead decides their open proposals (the manager digest lists them)",
        )
    if owner and who == owner:
        return
    lead = store.lead_of(session, owner) if owner else None
    if lead and who == lead.lower():
        return
    raise DecisionError(
        f"proposal {row.key} is {owner or 'nobody'}'s; {request.who} may not decide it",
        reason="not_yours",
        fix=f"{owner or 'an admin'}{f' or their lead {lead}' if lead else ''} can; "
        f"an admin can with `mailsync approve` or `mailsync reject`",
    )


def _edits_fit(row: m.Suggestion, edits: Mapping[str, str]) -> None:
    allowed = EDITABLE.get(row.kind)
    if allowed is None:
        raise DecisionError(
            f"proposal {row.key} is of a kind this version cannot apply ({row.kind})",
            reason="unknown",
            fix="upgrade mailsync, or reject it",
        )
    for name in edits:
        if name not in allowed:
            can = ", ".join(allowed) or "nothing"
            raise DecisionError(
                f"cannot edit {name} of a {row.kind.replace('_', ' ')} proposal ({row.key})",
                reason="bad_edit",
                fix=f"this kind of proposal takes: {can}",
            )


def clean_edits(request: DecisionRequest, stages: Callable[[str], str | None]) -> dict[str, str]:
    """The edits checked and normalised (field names lower-case, amount to cents, currency upper-case,
    stage canonical, close_date ISO); DecisionError "bad_edit" naming the field and what it takes."""
    if request.edits and request.verdict != "approve":
        raise DecisionError(
            f"edits go with approve, not {request.verdict}",
            reason="bad_edit",
            fix="approve with the edits, or reject without them",
        )
    cleaned = {}
    for raw_name, raw_value in request.edits.items():
        name, value = raw_name.strip().lower(), raw_value.strip()
        parse = _PARSERS.get(name)
        if parse is None:
            raise DecisionError(
                f"cannot edit {raw_name!r}",
                reason="bad_edit",
                fix=f"the fields are {', '.join(_PARSERS)}, e.g. amount=50000 stage=proposal",
            )
        try:
            cleaned[name] = parse(value, stages)
        except ValueError as exc:
            raise DecisionError(
                f"bad {name} {raw_value!r}: {exc}", reason="bad_edit", fix=_HINTS[name]
            ) from None
    return cleaned


def _amount(value: str, _stages: Callable[[str], str | None]) -> str:
    try:
        amount = Decimal(value)
    except InvalidOperation:
        msg = "not a plain number"
        raise ValueError(msg) from None
    if not amount.is_finite() or amount <= 0 or amount >= _MAX_AMOUNT:
        msg = "an amount is a number above 0"
        raise ValueError(msg)
    return str(amount.quantize(Decimal("0.01")))


def _currency(value: str, _stages: Callable[[str], str | None]) -> str:
    if value.upper() not in CURRENCIES:
        msg = "not an ISO 4217 currency code"
        raise ValueError(msg)
    return value.upper()


def _stage(value: str, stages: Callable[[str], str | None]) -> str:
    canonical = stages(value)
    if canonical is None:
        msg = "not a stage"
        raise ValueError(msg)
    return canonical


def _name(value: str, _stages: Callable[[str], str | None]) -> str:
    if not value or len(value) > _MAX_NAME or not value.isprintable():
        msg = f"a name is one line of up to {_MAX_NAME} characters"
        raise ValueError(msg)
    return value


def _close_date(value: str, _stages: Callable[[str], str | None]) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        msg = "not a date"
        raise ValueError(msg) from None


def _opportunity(value: str, _stages: Callable[[str], str | None]) -> str:
    if not value:
        msg = "give the opportunity's CRM id or name"
        raise ValueError(msg)
    return value


_PARSERS: dict[str, Callable[[str, Callable[[str], str | None]], str]] = {
    "amount": _amount,
    "currency": _currency,
    "stage": _stage,
    "name": _name,
    "close_date": _close_date,
    "opportunity": _opportunity,
}
_HINTS = {
    "amount": "write a plain number without separators: amount=50000 or amount=50000.00",
    "currency": "write a three-letter ISO 4217 code: currency=EUR",
    "stage": f"write one of {', '.join(CANONICAL_STAGES)}, or a name the [stage_map] knows",
    "name": "write the new name on one line",
    "close_date": "write an ISO date: close_date=2026-03-31",
    "opportunity": "write the opportunity's CRM id or its exact name: opportunity=OPP-001",
}


def _default_stage(raw: str) -> str | None:
    """The built-in stage table, for callers without settings (settings.stage_for adds [stage_map])."""
    key = " ".join(raw.strip().lower().split())
    return DEFAULT_STAGE_MAP.get(key) or (key if key in CANONICAL_STAGES else None)


# --- keys as people type them -----------------------------------------------------------------------


def short_id(key: str, length: int = SHORT_MIN) -> str:
    """A key's short form: the first hex digits of its SHA-256 (stable, like the key, across rebuilds)."""
    return hashlib.sha256(key.encode()).hexdigest()[:length]


def short_length(keys: Sequence[str]) -> int:
    """The fewest hex digits (at least SHORT_MIN) that tell every one of `keys` apart."""
    length = SHORT_MIN
    while len({short_id(k, length) for k in keys}) < len(set(keys)):
        length += 1
    return length


def resolve_key(repo: Repo, given: str) -> str:
    """The key `given` names: the key itself, a unique prefix of it, or of its short form."""
    with repo.session() as session:
        keys = store.keys(session)
    if given in keys:
        return given
    hexish = re.fullmatch(r"[0-9a-f]{4,64}", given.lower()) is not None
    found = sorted(
        {k for k in keys if k.startswith(given) or (hexish and short_id(k, 64).startswith(given.lower()))}
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise _unknown(given)
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")  # noqa: PLR2004 - a short list
    raise DecisionError(
        f"{given!r} matches {len(found)} proposals ({shown})",
        reason="unknown",
        fix="give more of the key, or the short form `mailsync proposals` shows",
    )
