"""What each proposal asks the rep, in words: "Link *this conversation* to *Acme - rollout*?", never "Linked".

A proposal is a question until the rep answers it, so each kind is worded as one, with the parts a rep
scans for emphasised (the deal, the person, the amount). Every string that came from mail or the CRM
goes through `safe_line` and is cut to a length a card can hold; the HTML template escapes it.

Confidence in words (`confidence_words`), on the scale the propose stage scores with:

    >= 0.8  "very likely"  the customer said it in so many words: "we'd like to move ahead", a new
                           person writing from a customer's domain, a request for a quote
    >= 0.6  "likely"       at or above the matcher's link threshold (settings.matching.link = 0.6),
                           a stage advance, a person only copied on a thread
    <  0.6  "possible"     one candidate among several, or a single weak hint: check before approving
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from mailsync.approval.money import day, money
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from decimal import Decimal

    from babel import Locale

VERY_LIKELY = 0.8
LIKELY = 0.6
NAME_CHARS = 160  # a deal, account or person name on a card
STAGES = {"closed_won": "won", "closed_lost": "lost"}  # others read as they are, "_" as a space
REASONS = {  # nlp/link.py's reasons for a candidate, as a rep would say them
    "name": "names the deal",
    "words": "same words as the deal",
    "amount": "same amount",
    "recency": "recent deal",
    "account": "same account",
}


def confidence_words(confidence: float) -> str:
    """The confidence as a rep reads it: "very likely", "likely" or "possible" (see the module doc)."""
    if confidence >= VERY_LIKELY:
        return "very likely"
    return "likely" if confidence >= LIKELY else "possible"


@dataclass(frozen=True, slots=True)
class Phrase:
    """A sentence as (text, emphasised) parts: the HTML shows emphasised parts in bold, text as is."""

    parts: tuple[tuple[str, bool], ...]

    @property
    def plain(self) -> str:
        return "".join(text for text, _ in self.parts)


@dataclass(frozen=True, slots=True)
class Deal:
    """The CRM's opportunity a proposal is about, for its amount and current name."""

    name: str
    amount: Decimal | None
    currency: str | None


@dataclass(frozen=True, slots=True)
class Wording:
    ask: Phrase
    details: tuple[tuple[str, str], ...]  # (label, value), shown under the question


def shown(value: object, limit: int = NAME_CHARS) -> str:
    """Mail or CRM text fit for one line of a card: safe, and cut with an ellipsis past `limit`."""
    text = safe_line(str(value)) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def word(
    kind: str,
    payload: Mapping[str, Any],
    deal: Deal | None,
    locale: Locale,
    *,
    first_seen: datetime | None = None,
) -> Wording:
    """The question and the details for one proposal; the caller looks up `deal`, the CRM's opportunity.
    `first_seen`, the first evidence's time in the rep's zone, dates a new opportunity as the rep's
    evidence lines do (the payload's date is the UTC one)."""
    builder = _BUILDERS.get(kind)
    if builder is None:
        return Wording(_phrase("Review this proposal: ", (kind.replace("_", " "), True), "?"), ())
    if first_seen is not None:
        payload = {**payload, "first_seen_at": first_seen.date().isoformat()}
    return builder(payload, deal, locale)


def _phrase(*parts: str | tuple[str, bool]) -> Phrase:
    return Phrase(
        tuple((p, False) if isinstance(p, str) else p for p in parts if p and (isinstance(p, str) or p[0]))
    )


def _details(*pairs: tuple[str, str | None]) -> tuple[tuple[str, str], ...]:
    return tuple((label, value) for label, value in pairs if value)


def _link(payload: Mapping[str, Any], deal: Deal | None, locale: Locale) -> Wording:
    opportunity = shown(payload.get("opportunity") or (deal.name if deal else "an opportunity"))
    others = [c.rsplit(" (", 1)[0] for c in str(payload.get("candidates") or "").split("; ")[1:] if c]
    reasons = [REASONS.get(r.strip(), r.strip()) for r in str(payload.get("because") or "").split(",")]
    return Wording(
        _phrase("Link ", ("this conversation", True), " to ", (opportunity, True), "?"),
        _details(  # the conversation itself is the evidence line: its subject, who started it, when
            ("Deal value", _deal_money(deal, locale)),
            ("Or perhaps", "; ".join(shown(o) for o in others)),
            ("Why", shown(", ".join(r for r in reasons if r), 300)),
        ),
    )


def _new_opportunity(payload: Mapping[str, Any], deal: Deal | None, locale: Locale) -> Wording:
    del deal  # a new opportunity has no CRM deal yet
    amount = money(payload.get("amount"), payload.get("currency"), locale)
    started = _iso_day(payload.get("first_seen_at"), locale)
    account = shown(payload.get("account") or "")
    domain = shown(payload.get("new_account_domain") or "")
    outcome = str(payload.get("outcome") or "")
    return Wording(
        _phrase(
            "Create the opportunity ",
            (shown(payload.get("name") or account or "from this conversation"), True),
            *((" for ", (amount, True)) if amount else ()),
            *((", starting ", (started, True)) if started else ()),
            "?",
        ),
        _details(
            ("Account", f"{account} (new, {domain})" if domain else account),
            ("Contacts", shown(payload.get("contacts"), 300)),
            ("Note", f"The mail says it is already {outcome}." if outcome in {"won", "lost"} else None),
        ),
    )


def _stage_change(payload: Mapping[str, Any], deal: Deal | None, locale: Locale) -> Wording:
    opportunity = shown(payload.get("opportunity") or (deal.name if deal else "the opportunity"))
    to_stage = stage_words(payload.get("to_stage"))
    if payload.get("to_stage") in STAGES:
        ask = _phrase("Mark ", (opportunity, True), " as ", (to_stage, True), "?")
    else:
        ask = _phrase("Move ", (opportunity, True), " to ", (to_stage, True), "?")
    return Wording(
        ask,
        _details(
            ("Stage now", stage_words(payload.get("from_stage"))), ("Deal value", _deal_money(deal, locale))
        ),
    )


def _new_contact(payload: Mapping[str, Any], deal: Deal | None, locale: Locale) -> Wording:
    del deal, locale
    email = shown(payload.get("email") or "", 320)
    name = shown(payload.get("name") or "") or email
    account = shown(payload.get("account") or "")
    return Wording(
        _phrase("Add ", (name, True), f" ({account})" if account else "", " as a contact?"),
        _details(("Email", email if name != email else None)),
    )


def _contact_moved(payload: Mapping[str, Any], deal: Deal | None, locale: Locale) -> Wording:
    del deal, locale
    new = shown(payload.get("new_account") or payload.get("new_account_domain") or "a new company")
    old = shown(payload.get("old_account") or "")
    return Wording(
        _phrase(
            "Update ",
            (shown(payload.get("contact") or "this contact"), True),
            *((" from ", old) if old else ()),
            " to ",
            (new, True),
            "?",
        ),
        _details(("New email", shown(payload.get("email") or "", 320))),
    )


def stage_words(stage: object) -> str:
    """A canonical stage as a rep says it: "closed_won" -> "won", "negotiation" as is."""
    text = shown(stage or "", 60)
    return STAGES.get(text, text.replace("_", " "))


def _deal_money(deal: Deal | None, locale: Locale) -> str | None:
    return money(deal.amount, deal.currency, locale) if deal else None


def _iso_day(value: object, locale: Locale) -> str | None:
    try:
        return day(date.fromisoformat(str(value)[:10]), locale) if value else None
    except ValueError:
        return None


_BUILDERS: dict[str, Callable[[Mapping[str, Any], Deal | None, Locale], Wording]] = {
    "link_thread": _link,
    "new_opportunity": _new_opportunity,
    "stage_change": _stage_change,
    "new_contact": _new_contact,
    "contact_moved": _contact_moved,
}
