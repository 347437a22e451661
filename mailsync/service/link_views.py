"""What the link pages show of proposals: database reads turned into display values, nothing more.

A proposal is worded as in the digest (mailsync.approval.wording: what it asks, never "Linked"), in the
rep's locale. Every string that came from mail or the CRM goes through `safe_line` (bidi and invisible
characters dropped); the templates escape it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from config.settings import CANONICAL_STAGES
from mailsync.approval.decisions import EDITABLE
from mailsync.approval.money import day, locale_of
from mailsync.approval.wording import Deal, Phrase, confidence_words, word
from mailsync.mail.display import safe_line
from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Sequence

    from babel import Locale
    from sqlalchemy.orm import Session

KIND_TITLES = {
    "new_opportunity": "New opportunity",
    "stage_change": "Stage change",
    "link_thread": "Link a conversation",
    "new_contact": "New contact",
    "contact_moved": "Contact changed company",
}
LABELS = {
    "name": "Name", "amount": "Amount", "currency": "Currency (ISO code, e.g. EUR)", "stage": "Stage",
    "close_date": "Expected close date", "opportunity": "Opportunity (its name or CRM id)",
}  # fmt: skip
_SOURCES = {
    ("stage_change", "stage"): "to_stage"
}  # the payload field an edit field starts from, if not its own
STAGES = CANONICAL_STAGES


@dataclass(frozen=True, slots=True)
class Field:
    """One editable field of a proposal: its name, label and the proposed value."""

    name: str
    label: str
    value: str


@dataclass(frozen=True, slots=True)
class ProposalView:
    """One proposal as a link page shows it."""

    key: str
    kind: str
    title: str
    ask: Phrase  # the question, in parts; the emphasised ones are shown in bold
    confidence: str
    details: tuple[tuple[str, str], ...]
    evidence: tuple[tuple[str, str, str], ...]  # (date, sender, quote)
    status: str
    fields: tuple[Field, ...]


def rep_locale(session: Session, rep: str, default: str) -> Locale:
    """The rep's locale (reps.csv `locale`), else `default` ([digest] locale)."""
    chosen = session.scalar(select(m.Rep.locale).where(func.lower(m.Rep.email) == rep.lower()))
    return locale_of(chosen or default)


def proposal(session: Session, key: str, locale: Locale) -> ProposalView | None:
    """The proposal with stable key `key`, or None when there is none (any more)."""
    row = session.scalar(select(m.Suggestion).where(m.Suggestion.key == key))
    return None if row is None else _view(session, row, locale)


def open_proposals(
    session: Session, locale: Locale, *, keys: Sequence[str] = (), rep: str | None = None
) -> list[ProposalView]:
    """Open proposals: those among `keys` (in that order), or all of `rep`'s, most confident first."""
    query = select(m.Suggestion).where(m.Suggestion.status == "open")
    if rep is not None:
        mine = query.where(func.lower(m.Suggestion.owner_rep) == rep.lower())
        rows = session.scalars(mine.order_by(m.Suggestion.confidence.desc(), m.Suggestion.id)).all()
        return [_view(session, row, locale) for row in rows]
    found = {row.key: row for row in session.scalars(query.where(m.Suggestion.key.in_(keys)))}
    return [_view(session, found[key], locale) for key in keys if key in found]


def digest_keys(session: Session, token: str) -> tuple[str, list[str]] | None:
    """(rep, proposal keys in the digest's order) of the digest with `token`, or None when unknown."""
    row = session.scalar(select(m.DigestSend).where(m.DigestSend.token == token))
    if row is None:
        return None
    items = sorted((i for i in row.items if isinstance(i, dict)), key=lambda i: int(i.get("n", 0)))
    return row.rep, [str(i["key"]) for i in items if i.get("key")]


def decided_note(session: Session, key: str) -> str:
    """Who decided the proposal `key`, how and when, as one sentence ("" when nobody did)."""
    row = session.execute(
        select(m.Decision.verdict, m.Decision.who, m.Decision.how, m.Decision.at)
        .join(m.Suggestion, m.Suggestion.id == m.Decision.suggestion_id)
        .where(m.Suggestion.key == key)
        .order_by(m.Decision.at.desc(), m.Decision.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return ""
    verdict, who, how, at = row
    done = {"approve": "approved", "reject": "rejected"}.get(verdict, verdict)
    way = {"link": "by link", "reply": "by reply", "cli": "from the command line"}.get(how, how)
    return f"It was {done} by {safe_line(who)} {way} on {at:%Y-%m-%d at %H:%M} UTC."


def _view(session: Session, row: m.Suggestion, locale: Locale) -> ProposalView:
    payload: dict[str, Any] = row.payload or {}
    evidence = [e for e in row.evidence or () if isinstance(e, dict)]
    wording = word(row.kind, payload, _deal(session, payload), locale)
    return ProposalView(
        key=row.key,
        kind=row.kind,
        title=KIND_TITLES.get(row.kind, row.kind.replace("_", " ")),
        ask=wording.ask,
        confidence=confidence_words(row.confidence),
        details=wording.details,
        evidence=_evidence(
            evidence, _senders(session, [str(e.get("fingerprint")) for e in evidence]), locale
        ),
        status=row.status,
        fields=tuple(
            Field(
                name,
                LABELS.get(name, name),
                safe_line(str(payload.get(_SOURCES.get((row.kind, name), name)) or "")),
            )
            for name in EDITABLE.get(row.kind, ())
        ),
    )


def _deal(session: Session, payload: dict[str, Any]) -> Deal | None:
    """The CRM opportunity a proposal is about, when it names one that exists."""
    ident = payload.get("opportunity_id")
    if not isinstance(ident, int) or isinstance(ident, bool):
        return None
    opp = session.get(m.Opportunity, ident)
    return None if opp is None else Deal(safe_line(opp.name), opp.amount, opp.currency)


def _evidence(
    entries: list[dict[str, Any]], senders: dict[str, str], locale: Locale
) -> tuple[tuple[str, str, str], ...]:
    """(date, sender, quote) per entry; the same quote twice is shown once."""
    shown: dict[str, tuple[str, str, str]] = {}
    for entry in entries:
        quote = safe_line(str(entry.get("quote") or ""))
        shown.setdefault(
            quote,
            (_date(entry.get("sent_at"), locale), senders.get(str(entry.get("fingerprint")), ""), quote),
        )
    return tuple(shown.values())


def _date(value: object, locale: Locale) -> str:
    """A stored ISO timestamp as the locale writes the day (UTC); "undated" when there is none."""
    try:
        return day(datetime.fromisoformat(str(value)), locale) if value else "undated"
    except ValueError:
        return "undated"


def _senders(session: Session, fingerprints: list[str]) -> dict[str, str]:
    if not fingerprints:
        return {}
    rows = session.execute(
        select(m.Message.fingerprint, m.Message.sender).where(m.Message.fingerprint.in_(fingerprints))
    )
    return {fingerprint: safe_line(sender or "") for fingerprint, sender in rows}
