"""Thread -> opportunity: the open deals of the thread's accounts, scored on what the mail says.

    score = prior + (1 - prior) * evidence          prior = 0.5 / (number of candidates)

The prior is what the account alone says: with one open deal a thread about business is probably
about it (0.5), with two it is a coin toss (0.25 each). The evidence (0..1) is a weighted sum:

    name     0.55  CRM phrase hits: the opportunity's name beats its product terms (nlp/phrases.py)
    words    0.15  share of the opportunity's own name words in the text
    amount   0.15  an amount in the thread within a few percent of the deal's amount, same currency
    people   0.10  someone who writes on this thread wrote on another thread linked to the deal
    recency  0.05  the deal was opened near the thread's start (fades out over a year)

So a single candidate reaches the default link threshold (0.6) with a little evidence, and one of
two needs its name or several weaker hints. The CRM holds no contact-to-opportunity relation, so
"people" comes from thread history: the customer-side senders of threads already linked to the deal.
Senders, not everyone copied: the manager in Cc on every deal of an account says nothing about which.

A second deal at a known account is not the open one: when the thread says it is another matter ("a
different topic", "ein zweites Lager", "un presupuesto aparte", or that what we delivered runs well:
nlp/signals.py ANOTHER_DEAL), a candidate that nothing in the thread names as itself (a phrase of its
name beyond its product terms, or its amount) is passed over; with none left, the thread is free to
become a new opportunity at the account. Its product alone does not keep it: "a second LX7 for Leeds"
is a new deal for the same product. So is a deal the customer already won or lost for us on another
thread (a won or lost stage change waits for the rep: the CRM still shows it open): a thread that starts
after that and names neither the deal nor its amount is the next deal, not this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nlp.money import find_amounts
from nlp.phrases import index_for
from nlp.signals import says_another_deal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime
    from decimal import Decimal

    from storage.records import CrmSnapshot, Match, OpportunityRef

_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_STOP = frozenset({"the", "and", "for", "with", "renewal", "deal", "project", "new", "opportunity"})
WEIGHTS = {"name": 0.55, "words": 0.15, "amount": 0.15, "people": 0.10, "recency": 0.05}
_PRIOR = 0.5
_AMOUNT_EXACT = 0.03  # within 3 %: the deal's amount
_AMOUNT_NEAR = 0.15  # within 15 %: a revised figure of it
_YEAR = 365.0
CLEAR_MARGIN = 0.1  # how far ahead the best candidate must be for the link to be made


@dataclass(frozen=True, slots=True)
class Candidate:
    opp: OpportunityRef
    score: float  # 0..1, prior included
    evidence: float  # 0..1, what the mail says beyond the account
    reasons: tuple[str, ...]  # the evidence parts that counted, strongest first
    named: bool = False  # the deal's own name was mentioned, not only a product term it shares
    amount_stated: bool = False  # the thread states the deal's amount (within a few percent)


def candidates(
    human: Sequence[Match],
    crm: CrmSnapshot,
    *,
    opened: Mapping[int, datetime] | None = None,
    history: Mapping[int, frozenset[str]] | None = None,
    settled: Mapping[int, datetime] | None = None,
) -> list[Candidate]:
    """Open opportunities of the thread's accounts, best first: one whose amount the thread states, then by
    score (ties: lower id)."""
    seen: dict[int, OpportunityRef] = {}
    for msg in human:
        for account in msg.accounts:
            for opp in crm.open_opportunities.get(account.id, ()):
                seen.setdefault(opp.id, opp)
    if not seen:
        return []
    messages = [f"{m.subject}\n{m.text}" for m in human]
    text = "\n".join(messages)
    index = index_for(crm)
    mentions = frozenset().union(*map(index.mentions, messages))  # message by message: each one cached
    lowered = text.lower()
    amounts = [(value, currency) for m in human for value, currency, _ in find_amounts(m.text)]
    people = {p.address.email for m in human for p in m.external if p.role == "from"}
    start = thread_start(human)
    another: bool | None = None  # read when a candidate's fate depends on it (the search is not free)
    scored = []
    for opp in seen.values():
        own = index.products.get(opp.id, frozenset())
        hits = index.hits(opp.id, mentions)
        named = _named(opp, crm, hits - own)
        parts = {
            "name": index.score(opp.id, hits),
            "words": _word_overlap(opp, crm, lowered),
            "amount": _amount_fit(opp, amounts),
            "people": 1.0 if people & (history or {}).get(opp.id, frozenset()) else 0.0,
            "recency": _recency(start, (opened or {}).get(opp.id)),
        }
        if not (named or parts["amount"]):
            if settled_before(start, (settled or {}).get(opp.id)):
                continue  # the customer signed or turned it down before this thread began
            if another is None:
                another = any(map(says_another_deal, messages))
            if another:
                continue  # the thread says it is another matter, and nothing in it is this deal's own
        scored.append((opp, parts, named))
    prior = _PRIOR / len(scored) if scored else _PRIOR
    found = []
    for opp, parts, named in scored:
        evidence = sum(WEIGHTS[k] * v for k, v in parts.items())
        reasons = tuple(k for k, v in sorted(parts.items(), key=lambda kv: -WEIGHTS[kv[0]] * kv[1]) if v > 0)
        stated = parts["amount"] == 1.0
        found.append(Candidate(opp, prior + (1 - prior) * evidence, evidence, reasons, named, stated))
    # The deal whose own amount the thread states comes first, whatever the others' phrases: a signed
    # contract for the scanner's figure that also mentions the service plan is the scanner's. Its lower
    # score keeps it from being linked unasked (clear_winner).
    return sorted(found, key=lambda c: (not c.amount_stated, -c.score, c.opp.id))


def clear_winner(scored: Sequence[Candidate], margin: float = 0.0) -> bool:
    """One candidate, or the best ahead of the next by more than `margin`."""
    return len(scored) == 1 or scored[0].score - scored[1].score > margin


def first_by_amount(scored: Sequence[Candidate]) -> bool:
    """The first candidate is the only one whose amount the thread states."""
    return bool(scored) and scored[0].amount_stated and not any(c.amount_stated for c in scored[1:])


def _named(opp: OpportunityRef, crm: CrmSnapshot, phrases: frozenset[str]) -> bool:
    """A phrase of the deal's name that is not its account's ("Brunner - AccessOne Werk Uster" is named by
    "AccessOne Werk Uster", not by "Brunner", which every signature of the account carries)."""
    account = crm.accounts.get(opp.account_id)
    account_name = account.name.lower() if account else ""
    return any(phrase not in account_name for phrase in phrases)


def _word_overlap(opp: OpportunityRef, crm: CrmSnapshot, text: str) -> float:
    """Share of the opportunity's own words (not its account's: those are in every signature) in text."""
    account = crm.accounts.get(opp.account_id)
    account_words = {w.lower() for w in _WORD.findall(account.name)} if account else set()
    words = {w.lower() for w in _WORD.findall(opp.name)} - _STOP - account_words
    if not words:
        return 0.0
    return sum(1 for w in words if w in text) / len(words)


def _amount_fit(opp: OpportunityRef, amounts: Sequence[tuple[Decimal, str]]) -> float:
    """1.0 for an amount within 3 % of the deal's, 0.5 within 15 %; a different currency never fits."""
    if not opp.amount:
        return 0.0
    best = 0.0
    for value, currency in amounts:
        if opp.currency and currency and currency != opp.currency:
            continue
        low, high = sorted((value, opp.amount))
        if high <= 0:
            continue
        gap = float(1 - low / high)
        best = max(best, 1.0 if gap <= _AMOUNT_EXACT else 0.5 if gap <= _AMOUNT_NEAR else 0.0)
    return best


def thread_start(human: Sequence[Match]) -> datetime | None:
    """When the thread began, as candidates reads it: its first dated human message."""
    return next((m.sent_at for m in human if m.sent_at is not None), None)


def settled_before(start: datetime | None, settled: datetime | None) -> bool:
    """A deal won or lost (`settled`) before the thread began: the thread passes it over."""
    return (
        start is not None
        and settled is not None
        and start.replace(tzinfo=None) > settled.replace(tzinfo=None)
    )


def _recency(start: datetime | None, opened: datetime | None) -> float:
    if start is None or opened is None:
        return 0.0
    days = abs((start.replace(tzinfo=None) - opened.replace(tzinfo=None)).days)
    return max(0.0, 1.0 - days / _YEAR)
