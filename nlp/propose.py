"""Propose: a thread's matched messages -> suggestions for the rep, each with its evidence.

Rules (a first, plain set; each suggestion is partial where the mail is):
- new contact: an unknown person writing from, or copied at, a known account's domain;
- link thread: the thread's accounts have open opportunities and the thread is not linked yet
  (one candidate: link it; several: the best scored, with the others listed);
- new opportunity: an external business thread with deal intent and no open opportunity to link,
  first_seen_at = date of the first message showing the intent;
- stage change: won, lost or a stage advance stated by someone outside the company.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nlp.clean import sentences
from nlp.money import find_amounts
from nlp.phrases import index_for
from nlp.signals import Hit, find_signals
from storage.records import Evidence, Proposal, ProposalKind

if TYPE_CHECKING:
    from storage.records import CrmSnapshot, Match, OpportunityRef, Participant

_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
_STOP = frozenset({"the", "and", "for", "with", "renewal", "deal", "project", "new", "opportunity"})
_MAX_EVIDENCE = 3
_MIN_INTENT = 2  # distinct deal sentences needed when nobody asked for a quote and we sent none
_ORDER = {"qualification": 0, "discovery": 1, "demo": 2, "proposal": 3, "negotiation": 4}
_GREETING = re.compile(
    r"^(?:hi|hello|hey|dear|good\s+(?:morning|afternoon)|hallo|guten\s+(?:tag|morgen)|sehr\s+geehrte\w*|liebe\w*|"
    r"hola|buen[oa]s\s+\w+|estimad[oa]s?)\b[^.!?]{0,60}[,!]?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class ThreadView:
    key: str
    subject: str
    linked_opportunity: int | None
    messages: tuple[Match, ...]  # oldest first
    owner: str  # the rep whose mailbox brought the thread in


def propose(thread: ThreadView, crm: CrmSnapshot) -> list[Proposal]:
    """Every proposal the thread supports now; keys make re-proposing idempotent."""
    human = [msg for msg in thread.messages if not msg.automated]
    if not human or all(msg.internal_only for msg in human):
        return []
    proposals = _new_contacts(human, crm, thread.owner)
    scored = _scored_candidates(human, crm)
    if thread.linked_opportunity is None and scored and _about_a_deal(scored, human):
        proposals.append(_link(thread, scored, human))
    target = _target(thread, scored)
    if target is not None:
        proposals.extend(_stage_changes(thread, target, human))
    elif not scored:
        proposal = _new_opportunity(thread, human)
        if proposal is not None:
            proposals.append(proposal)
    return proposals


def _from_outside(msg: Match) -> bool:
    sender = next((p for p in msg.participants if p.role == "from"), None)
    return sender is not None and not sender.internal


def _evidence(msg: Match, quote: str) -> Evidence:
    return Evidence(fingerprint=msg.fingerprint, sent_at=msg.sent_at, quote=quote)


def _new_contacts(human: list[Match], crm: CrmSnapshot, owner: str) -> list[Proposal]:
    found: dict[str, tuple[Participant, Match]] = {}
    for msg in human:
        for person in msg.participants:
            unknown = person.contact is None and person.account is not None and not person.internal
            current = found.get(person.address.email)
            if unknown and (current is None or (person.role == "from" and current[0].role != "from")):
                found[person.address.email] = (person, msg)
    proposals = []
    for email, (person, msg) in sorted(found.items()):
        account = person.account
        assert account is not None  # noqa: S101 - filtered above
        wrote = person.role == "from"
        quote = _first_statement(msg.text) if wrote else f"copied on “{msg.subject}”"
        opps = crm.open_opportunities.get(account.id, ())
        proposals.append(
            Proposal(
                kind=ProposalKind.NEW_CONTACT,
                key=f"new_contact:{email}",
                summary=f"Add {person.address.name or email} <{email}> as a contact at {account.name}",
                payload={
                    "email": email,
                    "name": person.address.name,
                    "account_id": account.id,
                    "account": account.name,
                },
                confidence=0.9 if wrote else 0.7,
                evidence=(_evidence(msg, quote),),
                owner_rep=(opps[0].owner_rep if len(opps) == 1 else None) or owner,
            )
        )
    return proposals


def _first_statement(text: str) -> str:
    """The first sentence that is not a greeting: what the person came to say."""
    found = next((s for s in sentences(text) if not _GREETING.match(s)), "")
    return found[:200]


def _scored_candidates(human: list[Match], crm: CrmSnapshot) -> list[tuple[float, OpportunityRef]]:
    """Open opportunities of the thread's accounts, best first: CRM phrase hits, then name words."""
    seen: dict[int, OpportunityRef] = {}
    for msg in human:
        for account in msg.accounts:
            for opp in crm.open_opportunities.get(account.id, ()):
                seen.setdefault(opp.id, opp)
    if not seen:
        return []
    text = "\n".join(f"{m.subject}\n{m.text}" for m in human)
    index = index_for(crm)
    mentions = index.mentions(text)
    lowered = text.lower()
    scored = [
        (0.7 * index.score(opp.id, mentions) + 0.3 * _word_overlap(opp, crm, lowered), opp)
        for opp in seen.values()
    ]
    return sorted(scored, key=lambda so: (-so[0], so[1].id))


def _word_overlap(opp: OpportunityRef, crm: CrmSnapshot, text: str) -> float:
    """Share of the opportunity's own words (not its account's: those are in every signature) in text."""
    account = crm.accounts.get(opp.account_id)
    account_words = {w.lower() for w in _WORD.findall(account.name)} if account else set()
    words = {w.lower() for w in _WORD.findall(opp.name)} - _STOP - account_words
    if not words:
        return 0.0
    return sum(1 for w in words if w in text) / len(words)


def _about_a_deal(scored: list[tuple[float, OpportunityRef]], human: list[Match]) -> bool:
    """A link claims the conversation is about a deal: it names one, or talks deals at all."""
    return scored[0][0] > 0 or any(h.kind != "selling" for m in human for h in find_signals(m.text))


def _clear_winner(scored: list[tuple[float, OpportunityRef]]) -> bool:
    return len(scored) == 1 or scored[0][0] > scored[1][0]


def _link(thread: ThreadView, scored: list[tuple[float, OpportunityRef]], human: list[Match]) -> Proposal:
    best_score, best = scored[0]
    single = len(scored) == 1
    confidence = 0.85 if single else (0.5 + 0.3 * best_score if _clear_winner(scored) else 0.3)
    first = human[0]
    return Proposal(
        kind=ProposalKind.LINK_THREAD,
        key=f"link:{thread.key}",
        summary=f"Link “{thread.subject}” to {best.name}"
        + ("" if single else f" ({len(scored)} open opportunities at this account)"),
        payload={
            "opportunity_id": best.id,
            "opportunity": best.name,
            "candidates": "; ".join(f"{o.name} ({s:.2f})" for s, o in scored),
        },
        confidence=confidence,
        evidence=(_evidence(first, f"{first.subject}"),),
        owner_rep=best.owner_rep or thread.owner,
    )


def _target(thread: ThreadView, scored: list[tuple[float, OpportunityRef]]) -> OpportunityRef | None:
    """The opportunity a stage change would apply to: the linked one, else a clear best candidate."""
    if thread.linked_opportunity is not None:
        return next((o for _, o in scored if o.id == thread.linked_opportunity), None)
    return scored[0][1] if scored and _clear_winner(scored) else None


def _stage_changes(thread: ThreadView, opp: OpportunityRef, human: list[Match]) -> list[Proposal]:
    """Won or lost as the customer says it; otherwise the furthest stage advance either side states."""
    outcome = next((mh for mh in reversed(_outcomes(human)) if mh[1].kind in {"won", "lost"}), None)
    if outcome is not None:
        chosen = outcome
    else:
        advances = [(m, h) for m in human for h in find_signals(m.text) if h.kind in _ORDER]
        if not advances:
            return []
        chosen = max(advances, key=lambda mh: _ORDER[mh[1].kind])
        if _ORDER[chosen[1].kind] <= _ORDER.get(opp.stage, -1):
            return []
    msg, hit = chosen
    stage = {"won": "closed_won", "lost": "closed_lost"}.get(hit.kind, hit.kind)
    return [
        Proposal(
            kind=ProposalKind.STAGE_CHANGE,
            key=f"stage:{thread.key}:{opp.id}",
            summary=f"Move {opp.name} from {opp.stage} to {stage}",
            payload={
                "opportunity_id": opp.id,
                "opportunity": opp.name,
                "from_stage": opp.stage,
                "to_stage": stage,
            },
            confidence=0.8 if hit.kind in {"won", "lost"} else 0.6,
            evidence=(_evidence(msg, hit.sentence),),
            owner_rep=opp.owner_rep or thread.owner,
        )
    ]


def _outcomes(human: list[Match]) -> list[tuple[Match, Hit]]:
    """Won/lost as the customer states it, or a win our rep acknowledges ("thanks for the order")."""
    found = []
    for msg in human:
        outside = _from_outside(msg)
        for hit in find_signals(msg.text):
            if outside and hit.kind in {"won", "lost"}:
                found.append((msg, hit))
            elif not outside and hit.kind == "won_ack":
                found.append((msg, Hit("won", hit.sentence)))
    return found


def _new_opportunity(thread: ThreadView, human: list[Match]) -> Proposal | None:
    """A deal nobody entered: someone outside wrote, wants to buy, and is not selling to us."""
    external = [p for m in human for p in m.external]
    inbound = [m for m in human if _from_outside(m)]
    if not external or not inbound:
        return None  # an unanswered cold email of ours is not a deal yet
    signals = [(m, h, _from_outside(m)) for m in human for h in find_signals(m.text)]
    intent = [(m, h) for m, h, _ in signals if h.kind in {"intent", "request", "proposal", "demo"}]
    requested = any(h.kind == "request" for _, h, outside in signals if outside)
    they_sell = any(h.kind == "selling" for _, h, outside in signals if outside)
    we_sell = any(h.kind in {"selling", "proposal"} for _, h, outside in signals if not outside)
    if they_sell and not (requested or we_sell):
        return None  # a supplier quoting us: we are the buyer
    if not (requested or we_sell or len({h.sentence for _, h in intent}) >= _MIN_INTENT):
        return None
    first_msg = next(m for m, _ in intent)
    account = next((p.account for p in external if p.account), None)
    company = next((p for p in external if not p.free_mail), None)
    # The deal's value is the largest amount named (unit prices and line items are smaller).
    amounts = sorted((a for m in human for a in find_amounts(m.text)), key=lambda a: a[0], reverse=True)
    outcome = next((h.kind for _, h in reversed(_outcomes(human))), None)
    if account is not None:
        account_name = account.name
    elif company is not None:
        account_name = company.address.domain.split(".")[0].replace("-", " ").title()
    else:
        account_name = external[0].address.name or external[0].address.email
    contacts = sorted({p.address.email for p in external})
    return Proposal(
        kind=ProposalKind.NEW_OPPORTUNITY,
        key=f"new_opportunity:{thread.key}",
        summary=f"New opportunity: {account_name} – {thread.subject or '(no subject)'}",
        payload={
            "name": f"{account_name} – {thread.subject}"[:200],
            "account_id": account.id if account else None,
            "account": account_name,
            "new_account_domain": company.address.domain if company and not account else None,
            "contacts": "; ".join(contacts),
            "amount": str(amounts[0][0]) if amounts else None,
            "currency": amounts[0][1] if amounts else None,
            "first_seen_at": first_msg.sent_at.date().isoformat() if first_msg.sent_at else None,
            "outcome": outcome,
        },
        confidence=min(0.9, 0.5 + 0.1 * len(intent) + (0.2 if requested else 0.0)),
        evidence=tuple(_evidence(m, h.sentence) for m, h in intent[:_MAX_EVIDENCE]),
        owner_rep=thread.owner,
    )
