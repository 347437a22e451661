"""The rep's digest: open proposals as questions with their evidence, as HTML and plain text (jinja2).

Ranked and bounded. Proposals are grouped by kind, most valuable first (new opportunities, stage
changes, links, moved contacts, new contacts; within a kind the larger deal, then the surer proposal),
numbered 1..N in that order (what a rep types in "approve 1 3"), and at most `max_items` are shown in
full; the rest are counted by kind, with a link to the full list. A digest that would still be over
BUDGET bytes (long quotes, long links) shows fewer cards until it fits, so one mail stays under
100 KB whatever the mailbox held.

Safe to render: every string from mail or the CRM is `safe_line` text (see mailsync/approval/wording.py),
the HTML template autoescapes, and the Subject is built from our own words and numbers only, so no
CR/LF from mail can reach a header.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from sqlalchemy import and_, select
from sqlalchemy.orm import object_session

from mailsync.approval.money import count, day, decimal_of, locale_of, short_day
from mailsync.approval.render import TEMPLATES
from mailsync.approval.wording import Deal, Phrase, confidence_words, shown, word
from mailsync.mail.display import safe_line
from storage import models as m
from storage.mailstore import open_suggestions

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import tzinfo

    from babel import Locale
    from sqlalchemy.orm import Session

log = structlog.get_logger()

# Sections in the order of what they are worth to a rep: (title, one, many).
KINDS = {
    "new_opportunity": ("New opportunities", "new opportunity", "new opportunities"),
    "stage_change": ("Stage changes", "stage change", "stage changes"),
    "link_thread": ("Conversations to link", "conversation to link", "conversations to link"),
    "contact_moved": ("Contacts who changed company", "contact who moved", "contacts who moved"),
    "new_contact": ("New contacts", "new contact", "new contacts"),
}
Action = Literal["approve", "reject", "edit", "approve_all", "unsubscribe", "list"]
BUDGET = 72_000  # bytes of HTML + text: base64 in the sent message makes that under 100 KB
# Evidence that is not a sentence but the propose stage's note on a message (nlp/signals.py).
NOTES = {"attachment: ": "Attached: ", "calendar invite: ": "Calendar invite: "}
PREVIEW_ITEMS = 25  # settings.digest.max_items' default
QUOTE_CHARS = 220  # a sentence; longer ones are cut with an ellipsis
MAX_EVIDENCE = 3


class LinkMaker(Protocol):
    """Signed links into the approval pages (mailsync/approval/links.py's LinkSigner is one)."""

    def url(
        self, action: Action, rep: str, key: str | None = None, digest_token: str | None = None
    ) -> str: ...


class RepView(Protocol):
    """Who the digest is for: a models.Rep, a storage.overview.RepLine, anything with these two."""

    @property
    def email(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class DigestEntry:
    n: int  # the number the rep sees and types
    key: str  # the suggestion's stable key it stands for


@dataclass(frozen=True, slots=True)
class Digest:
    subject: str
    html: str
    text: str
    items: tuple[DigestEntry, ...]  # the proposals shown, by number; the rest are in the full list


@dataclass(frozen=True, slots=True)
class Preview:
    """`render_digest`'s result for `mailsync digest --preview`: the two parts and the shown count."""

    html: str
    text: str
    items: int


@dataclass(frozen=True, slots=True)
class Said:
    """One evidence line: the sentence, who wrote it and when."""

    quote: str
    who: str
    when: str
    quoted: bool  # a sentence someone wrote; else our note on the message ("Attached: quote.pdf")


@dataclass(frozen=True, slots=True)
class Card:
    n: int
    key: str
    kind: str
    ask: Phrase
    likelihood: str
    details: tuple[tuple[str, str], ...]
    evidence: tuple[Said, ...]
    approve: str | None  # links, when the digest has them
    reject: str | None
    edit: str | None


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the cards show beyond a suggestion's own row, looked up in bulk."""

    deals: Mapping[int, Deal]
    senders: Mapping[str, str]  # message fingerprint -> the sender's name, else address


def build_digest(
    session: Session,
    rep: RepView,
    *,
    now: datetime,
    links: LinkMaker | None,
    token: str | None,
    locale: str | None,
    max_items: int,
) -> Digest:
    """The digest of `rep`'s open proposals. `now` is aware; dates show in its zone (pass the rep's
    local time). With `links` None the cards show reply commands ("reply `approve 3`") instead of buttons."""
    rows = open_suggestions(session, rep.email)
    return _compose(
        session, rows, rep, now=now, links=links, token=token, locale=locale_of(locale), max_items=max_items
    )


@dataclass(frozen=True, slots=True)
class _Rep:
    email: str
    name: str


def render_digest(rep_email: str, rep_name: str, suggestions: list[m.Suggestion], now: datetime) -> Preview:
    """The preview `mailsync digest --preview` writes: no links, en_US, the first 25 in full. Senders
    and deals are looked up through the suggestions' own session when they have one."""
    session = object_session(suggestions[0]) if suggestions else None
    rep = _Rep(rep_email, rep_name)
    digest = _compose(
        session,
        suggestions,
        rep,
        now=now,
        links=None,
        token=None,
        locale=locale_of(None),
        max_items=PREVIEW_ITEMS,
    )
    return Preview(digest.html, digest.text, len(digest.items))


def _compose(
    session: Session | None,
    rows: Sequence[m.Suggestion],
    rep: RepView,
    *,
    now: datetime,
    links: LinkMaker | None,
    token: str | None,
    locale: Locale,
    max_items: int,
) -> Digest:
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    deals = _deals(session, rows)
    ranked = sorted(rows, key=lambda row: _rank(row, deals))
    facts = _facts(session, ranked[:max_items], deals)
    shown_count = min(max_items, len(ranked))
    digest = _render(ranked, shown_count, rep, facts, now=now, links=links, token=token, locale=locale)
    if _size(digest) <= BUDGET:
        return digest
    # Too big (long quotes, long links): the most cards that fit, found by halving, at least one.
    fits, low, high = None, 1, shown_count - 1
    while low <= high:
        middle = (low + high) // 2
        candidate = _render(ranked, middle, rep, facts, now=now, links=links, token=token, locale=locale)
        if _size(candidate) <= BUDGET:
            fits, low = candidate, middle + 1
        else:
            high = middle - 1
    log.info("digest_trimmed", rep=rep.email, shown=len((fits or digest).items), size=_size(digest))
    return fits or _render(ranked, 1, rep, facts, now=now, links=links, token=token, locale=locale)


def _size(digest: Digest) -> int:
    return len(digest.html.encode()) + len(digest.text.encode())


def _rank(row: m.Suggestion, deals: Mapping[int, Deal]) -> tuple[int, Any, float, int]:
    """Kind first (KINDS order), then the larger amount, then the surer proposal; id keeps it stable."""
    if row.kind == "new_opportunity":
        amount = decimal_of(row.payload.get("amount"))
    else:
        deal = _deal_of(row, deals)
        amount = deal.amount if deal else None
    order = list(KINDS).index(row.kind) if row.kind in KINDS else len(KINDS)
    return order, -(amount or 0), -row.confidence, row.id or 0


def _render(
    ranked: Sequence[m.Suggestion],
    shown_count: int,
    rep: RepView,
    facts: _Facts,
    *,
    now: datetime,
    links: LinkMaker | None,
    token: str | None,
    locale: Locale,
) -> Digest:
    cards = [
        _card(n, row, facts, rep.email, now=now, links=links, token=token, locale=locale)
        for n, row in enumerate(ranked[:shown_count], start=1)
    ]
    sections = [
        (KINDS.get(kind, (kind, kind, kind))[0], list(group))
        for kind, group in groupby(cards, lambda c: c.kind)
    ]
    rest = ranked[shown_count:]
    total = count(len(ranked), locale)
    context = {
        "rep_name": shown(rep.name or rep.email),
        "rep_email": shown(rep.email, 320),
        "date": short_day(now, locale),
        "headline": f"{total} proposal{'' if len(ranked) == 1 else 's'} to review",
        "summary": _tally(ranked, locale),
        "capped": _capped(ranked, locale),
        "sections": sections,
        "count": len(cards),
        "rest": f"{count(len(rest), locale)} more: {_tally(rest, locale)}." if rest else "",
        "list_url": links.url("list", rep.email) if links and rest else None,
        "approve_all": links.url("approve_all", rep.email, digest_token=token) if links and token else None,
        "unsubscribe": links.url("unsubscribe", rep.email, digest_token=token) if links and token else None,
        "buttons": links is not None,
    }
    subject = f"CRM digest for {short_day(now, locale)}: {context['headline']}"
    return Digest(
        subject=" ".join(subject.split()),  # our words only, never a line break
        html=TEMPLATES.get_template("digest.html.j2").render(context),
        text=TEMPLATES.get_template("digest.txt.j2").render(context),
        items=tuple(DigestEntry(card.n, card.key) for card in cards),
    )


def _card(
    n: int,
    row: m.Suggestion,
    facts: _Facts,
    rep: str,
    *,
    now: datetime,
    links: LinkMaker | None,
    token: str | None,
    locale: Locale,
) -> Card:
    first = row.evidence[0] if row.evidence and isinstance(row.evidence[0], dict) else {}
    first_seen = _local(first.get("sent_at"), now.tzinfo) if row.kind == "new_opportunity" else None
    wording = word(row.kind, row.payload, _deal_of(row, facts.deals), locale, first_seen=first_seen)

    def url(action: Action) -> str | None:
        return links.url(action, rep, key=row.key, digest_token=token) if links else None

    return Card(
        n=n,
        key=row.key,
        kind=row.kind,
        ask=wording.ask,
        likelihood=confidence_words(row.confidence),
        details=wording.details,
        evidence=_evidence(row.evidence, facts.senders, now.tzinfo, locale),
        approve=url("approve"),
        reject=url("reject"),
        edit=url("edit"),
    )


def _evidence(
    entries: Iterable[Any], senders: Mapping[str, str], zone: tzinfo | None, locale: Locale
) -> tuple[Said, ...]:
    """Each distinct sentence once (the same sentence quoted twice is one piece of evidence)."""
    seen: set[str] = set()
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        quote = shown(entry.get("quote") or "", QUOTE_CHARS)
        same = unicodedata.normalize("NFKC", quote).casefold()
        if not quote or same in seen:
            continue
        seen.add(same)
        fingerprint = entry.get("fingerprint")
        who = senders.get(fingerprint, "") if isinstance(fingerprint, str) else ""
        note = next((shown_as for prefix, shown_as in NOTES.items() if quote.startswith(prefix)), None)
        text = f"{note}{quote.partition(': ')[2]}" if note else quote
        found.append(Said(text, who, _when(entry.get("sent_at"), zone, locale), quoted=note is None))
        if len(found) == MAX_EVIDENCE:
            break
    return tuple(found)


def _when(value: object, zone: tzinfo | None, locale: Locale) -> str:
    """A stored timestamp as the rep's local date; "" when there is none or it is not one."""
    at = _local(value, zone)
    return day(at, locale) if at else ""


def _local(value: object, zone: tzinfo | None) -> datetime | None:
    """A stored timestamp (ISO text, naive UTC) in the rep's zone; None when it is not one."""
    try:
        at = datetime.fromisoformat(safe_line(str(value))) if value else None
    except ValueError:
        return None
    if at is None:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(zone)


def _tally(rows: Sequence[m.Suggestion], locale: Locale) -> str:
    """ "3 new opportunities, 1 stage change and 12 new contacts"."""
    counts = {
        kind: sum(1 for row in rows if row.kind == kind) for kind in dict.fromkeys(r.kind for r in rows)
    }
    ordered = sorted(
        counts.items(), key=lambda kc: list(KINDS).index(kc[0]) if kc[0] in KINDS else len(KINDS)
    )
    parts = []
    for kind, number in ordered:
        _, one, many = KINDS.get(kind, (kind, kind.replace("_", " "), kind.replace("_", " ")))
        parts.append(f"{count(number, locale)} {one if number == 1 else many}")
    if len(parts) < 2:  # noqa: PLR2004 - "a and b" needs two
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def _capped(rows: Sequence[m.Suggestion], locale: Locale) -> str:
    """What the per-message cap on new contacts left out (nlp/propose.py), said once."""
    left_out: dict[str, int] = {}
    for row in rows:
        number = row.payload.get("not_proposed") if row.kind == "new_contact" else None
        if isinstance(number, int) and row.evidence and isinstance(row.evidence[0], dict):
            left_out[str(row.evidence[0].get("fingerprint"))] = number
    if not left_out:
        return ""
    messages = len(left_out)
    return (
        f"{count(sum(left_out.values()), locale)} more people copied on {count(messages, locale)} large "
        f"message{'' if messages == 1 else 's'} are not proposed as contacts: a mailing introduces nobody."
    )


def _opportunity_id(row: m.Suggestion) -> int | None:
    value = row.payload.get("opportunity_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _deal_of(row: m.Suggestion, deals: Mapping[int, Deal]) -> Deal | None:
    opportunity = _opportunity_id(row)
    return deals.get(opportunity) if opportunity is not None else None


def _deals(session: Session | None, rows: Sequence[m.Suggestion]) -> dict[int, Deal]:
    ids = {i for i in map(_opportunity_id, rows) if i is not None}
    if session is None or not ids:
        return {}
    found = session.execute(
        select(m.Opportunity.id, m.Opportunity.name, m.Opportunity.amount, m.Opportunity.currency).where(
            m.Opportunity.id.in_(ids)
        )
    )
    return {i: Deal(name, amount, currency) for i, name, amount, currency in found}


def _facts(session: Session | None, rows: Sequence[m.Suggestion], deals: Mapping[int, Deal]) -> _Facts:
    if session is None:
        return _Facts(deals, {})
    prints = {
        e["fingerprint"]
        for row in rows
        for e in row.evidence
        if isinstance(e, dict) and isinstance(e.get("fingerprint"), str)
    }
    senders: dict[str, str] = {}
    if prints:
        found = session.execute(
            select(m.Message.fingerprint, m.Message.sender, m.Participant.name)
            .outerjoin(
                m.Participant, and_(m.Participant.message_pk == m.Message.id, m.Participant.role == "from")
            )
            .where(m.Message.fingerprint.in_(prints))
        )
        senders = {fp: shown(name or sender or "", 120) for fp, sender, name in found}
    return _Facts(deals, senders)
