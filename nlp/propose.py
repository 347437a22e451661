"""Propose: a thread's matched messages -> suggestions for the rep, each with its evidence.

Rules (a first, plain set; each suggestion is partial where the mail is):
- new contact: an unknown person writing from, or copied at, a known account's domain;
- contact moved: a known contact writing from another company's address (nlp/moved.py);
- link thread: the thread's accounts have open opportunities, scored in nlp/link.py. At or above the
  link threshold, with a clear lead, the link is made: a link proposal in mode "link", which the
  approval step may apply without asking (an automatic link is still a decision, so it goes through
  the event log like any other; this stage is pure and never writes). Between the suggest and the
  link threshold: mode "suggest", listing the top candidates with their scores. Below: nothing (the
  suggest threshold is calibrated on the dev corpus: lower, a listed link was wrong two times in three),
  except a tie between deals of the account, none ahead: then the rep is asked which;
- new opportunity: an external business thread with deal intent and no open opportunity to link,
  first_seen_at = date of the first message showing the intent;
- stage change: won, lost or a stage advance stated by someone outside the company, for the linked
  deal or a clear best candidate (at or above _CANDIDATE_FLOOR: the proposal names its deal, so the rep
  sees which; a PO sent about the account's one open deal is that deal's, however little it says).
  Evidence is a
  sentence, an attached document by its name (our quote, their PO or signed contract), a customer's
  calendar invite (a meeting on the thread: a demo when it says so), or a demo the customer agreed to
  a date for. Lost by silence (no answer to our follow-up) is the daily job in nlp/stale.py.

Calendar mail is machine mail (nlp/noise.py) except a customer's own invite or acceptance: that is
a person saying a meeting will happen. Internal invites and calendar-service mail stay noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nlp.clean import first_sentence, sentences
from nlp.company import closing_lines, company_name, domain_name
from nlp.intent import IntentModel, model_text, shipped
from nlp.link import (
    CLEAR_MARGIN,
    Candidate,
    candidates,
    clear_winner,
    first_by_amount,
    settled_before,
    thread_start,
)
from nlp.match import match_participant
from nlp.money import find_amounts
from nlp.moved import moved_contacts
from nlp.phrases import index_for
from nlp.probes import says
from nlp.signals import (
    CONFIRM,
    DEMO,
    JOB,
    Hit,
    attachment_signals,
    find_signals,
    imagined,
    meeting_signals,
)
from nlp.support import is_support
from nlp.weblead import find_lead
from storage.records import Address, Evidence, Proposal, ProposalKind

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from storage.records import CrmSnapshot, Match, OpportunityRef, Participant

_MAX_EVIDENCE = 3
_MAX_CANDIDATES = 3  # listed in a link suggestion
_CANDIDATE_FLOOR = 0.2  # a deal a stage change or a tie may name (a lone link needs the suggest threshold)
# One message to thousands (a mailing, a huge Cc list) introduces nobody: the sender and the first few
# recipients at known accounts are proposed, the rest counted in the first ones' payload.
_MAX_NEW_CONTACTS = 10
_CONFIRM_LOOKBACK = 2  # a customer's "Thursday works" confirms a demo named this many messages earlier
_MEETING = frozenset({"calendar: invite", "calendar: accepted"})
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
    opened: Mapping[int, datetime] = field(default_factory=dict)  # candidate deal -> CRM created_at
    history: Mapping[int, frozenset[str]] = field(default_factory=dict)  # deal -> people on its other threads
    settled: Mapping[int, datetime] = field(
        default_factory=dict
    )  # deal -> won or lost on another thread, when
    # People already on an open new-opportunity proposal of an earlier thread: a PO or a notice sent as a
    # new mail continues that deal, it does not start a second one.
    proposed_elsewhere: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Thresholds:
    """settings.matching: link at or above `link`, list candidates at or above `suggest`, and whether the
    learned classifier (nlp/intent.py) adds what the customer's words say beside the phrase rules."""

    link: float = 0.6
    suggest: float = 0.55
    classifier: bool = True

    @property
    def model(self) -> IntentModel | None:
        return shipped() if self.classifier else None


def propose(thread: ThreadView, crm: CrmSnapshot, thresholds: Thresholds | None = None) -> list[Proposal]:
    """Every proposal the thread supports now; keys make re-proposing idempotent."""
    limits = thresholds or Thresholds()
    human = human_messages(thread.messages)
    if not human:
        return []
    if all(msg.internal_only for msg in human):
        lead = _web_lead(thread, human, crm)
        return [lead] if lead is not None and thread.linked_opportunity is None else []
    moved = moved_contacts(human, crm, thread.owner)
    skip = {str(p.payload["email"]) for p in moved}
    proposals = [p for p in _new_contacts(human, crm, thread.owner) if p.payload["email"] not in skip]
    proposals += moved
    read = _Reading(human, limits.model)
    settled = _passed_over(thread, human, read.model, read)
    scored = candidates(human, crm, opened=thread.opened, history=thread.history, settled=settled)
    plausible = [c for c in scored if c.score >= _CANDIDATE_FLOOR]
    listed = [c for c in plausible if c.score >= limits.suggest] or _tie(plausible)
    if thread.linked_opportunity is None and listed and _about_a_deal(listed, read):
        proposals.append(_link(thread, listed, human, limits))
    target = _target(thread, scored, plausible, crm)
    if target is not None:
        proposals.extend(_stage_changes(thread, target, read))
    elif not scored:
        proposal = _new_opportunity(thread, read, crm)
        if proposal is not None:
            proposals.append(proposal)
    return proposals


def target_opportunity(thread: ThreadView, crm: CrmSnapshot) -> OpportunityRef | None:
    """The open opportunity a stage change on this thread would apply to, if there is one."""
    human = human_messages(thread.messages)
    settled = _passed_over(thread, human, Thresholds().model)
    scored = candidates(human, crm, opened=thread.opened, history=thread.history, settled=settled)
    return _target(thread, scored, [c for c in scored if c.score >= _CANDIDATE_FLOOR], crm)


def _passed_over(
    thread: ThreadView, human: list[Match], model: IntentModel | None, read: _Reading | None = None
) -> Mapping[int, datetime]:
    """The deals won or lost on other threads that this thread may pass over if it began later
    (nlp/link.py): none when it is service talk about what was bought, or states an outcome itself (a
    purchase order sent as a new mail is the signed deal's)."""
    read = read or _Reading(human, model)
    start = thread_start(human)
    # Only a deal settled before the thread began is passed over (candidates): when there is none, the
    # reading below (support talk, outcomes: a classifier pass) decides nothing. A backfill read out of
    # date order meets many threads that began before the outcome another thread states.
    before = {deal: when for deal, when in thread.settled.items() if settled_before(start, when)}
    if not before or read.support():
        return {}
    return {} if read.outcomes() else before


def _tie(plausible: list[Candidate]) -> list[Candidate]:
    """Deals of the account the thread may be about, none ahead of the next: a question for the rep
    (which one?), not a guess. A lone weak candidate is not asked about: it was mostly another deal."""
    return plausible if len(plausible) > 1 and not clear_winner(plausible, CLEAR_MARGIN) else []


def human_messages(messages: Sequence[Match]) -> list[Match]:
    """What people wrote: everything but machine mail, plus a customer's own calendar invite."""
    return [msg for msg in messages if not msg.automated or _customer_meeting(msg)]


def from_outside(msg: Match) -> bool:
    sender = next((p for p in msg.participants if p.role == "from"), None)
    return sender is not None and not sender.internal


def _customer_meeting(msg: Match) -> bool:
    return msg.automated in _MEETING and from_outside(msg)


def signals(msg: Match, model: IntentModel | None = None) -> list[Hit]:
    """Every signal of one message: its sentences, its attachments by name, a customer's invite, and
    what the classifier reads in a customer's words where the rules found nothing of that kind."""
    return list(_Reading([msg], model).signals(msg))


class _Reading:
    """One propose call's reading of the thread's human messages: its rules ask for a message's signals
    (outcomes, stages, deal talk) and for the thread's support talk again and again; each is read once."""

    def __init__(self, human: list[Match], model: IntentModel | None) -> None:
        self.human, self.model = human, model
        self._rules: dict[int, list[Hit]] = {}  # by id(message): the phrase rules alone, signals(msg)
        self._all: dict[int, list[Hit]] = {}  # and with the classifier: signals(msg, model)
        self._outcomes: list[tuple[Match, Hit]] | None = None
        self._support: bool | None = None

    def rules(self, msg: Match) -> list[Hit]:
        if id(msg) not in self._rules:
            hits = find_signals(msg.text) + attachment_signals(msg.attachments, outside=from_outside(msg))
            meeting = meeting_signals(msg.subject, msg.text) if _customer_meeting(msg) else []
            self._rules[id(msg)] = hits + meeting
        return self._rules[id(msg)]

    def signals(self, msg: Match) -> list[Hit]:
        if id(msg) not in self._all:
            hits = self.rules(msg)
            if self.model is not None and from_outside(msg) and msg.text.strip():
                hits = hits + _learned(msg, self.model, {h.kind for h in hits})
            self._all[id(msg)] = hits
        return self._all[id(msg)]

    def outcomes(self) -> list[tuple[Match, Hit]]:  # outcome_hits(human, model)
        if self._outcomes is None:
            self._outcomes = _outcome_hits(self)
        return self._outcomes

    def support(self) -> bool:  # support talk (nlp/support.py) in the first subject and every text
        if self._support is None:
            self._support = is_support([self.human[0].subject, *(m.text for m in self.human)])
        return self._support


# The classifier's classes as signals: a customer's deal interest counts as their request.
_LEARNED = {"won": "won", "lost": "lost", "intent": "request"}


def _learned(msg: Match, model: IntentModel, found: set[str]) -> list[Hit]:
    if found & {"won", "lost"}:
        return []  # the rules already read an outcome in this message: they are the evidence
    read = model.find(model_text(msg.text, msg.attachments))
    if read is None:
        return []
    label, sentence = read
    kind = _LEARNED[label]
    if kind in found or (kind == "request" and "selling" in found):
        return []  # the rules said it already; a supplier offering is not a buyer asking
    if kind in {"won", "lost"} and imagined(sentence):
        return []  # "if we ordered …", "when is the deposit due?"
    return [Hit(kind, sentence, learned=True)]


def _evidence(msg: Match, quote: str) -> Evidence:
    return Evidence(fingerprint=msg.fingerprint, sent_at=msg.sent_at, quote=quote)


def _new_contacts(human: list[Match], crm: CrmSnapshot, owner: str) -> list[Proposal]:
    """Unknown people at known accounts: the sender first, then at most _MAX_NEW_CONTACTS per message."""
    found: dict[str, tuple[Participant, Match]] = {}
    left_out: dict[str, int] = {}  # message -> unknown people on it not proposed (over the cap)
    for msg in human:
        unknown = [
            p for p in msg.participants if p.contact is None and p.account is not None and not p.internal
        ]
        taken = 0
        for person in sorted(unknown, key=lambda p: p.role != "from"):
            current = found.get(person.address.email)
            if current is not None and (person.role != "from" or current[0].role == "from"):
                continue
            if current is None and taken == _MAX_NEW_CONTACTS:
                left_out[msg.fingerprint] = left_out.get(msg.fingerprint, 0) + 1
                continue
            found[person.address.email] = (person, msg)
            taken += current is None
    proposals = []
    for email, (person, msg) in sorted(found.items()):
        account = person.account
        assert account is not None  # noqa: S101 - filtered above
        wrote = person.role == "from"
        quote = _first_statement(msg.text) if wrote else f"copied on “{msg.subject}”"
        opps = crm.open_opportunities.get(account.id, ())
        payload: dict[str, str | int | float | None] = {
            "email": email,
            "name": person.address.name,
            "account_id": account.id,
            "account": account.name,
        }
        if msg.fingerprint in left_out:
            payload["not_proposed"] = left_out[msg.fingerprint]  # the digest says the message was capped
        proposals.append(
            Proposal(
                kind=ProposalKind.NEW_CONTACT,
                key=f"new_contact:{email}",
                summary=f"Add {person.address.name or email} <{email}> as a contact at {account.name}",
                payload=payload,
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


def _about_a_deal(listed: list[Candidate], read: _Reading) -> bool:
    """A link claims the conversation is about a deal: it names one, or talks deals at all. A service
    thread (a fault, a spare part, a warranty, an invoice query) is not, unless it shows the deal itself."""
    best = listed[0]
    if _service_talk(best, read):
        # The classifier's "intent" in "what does a replacement cost?" is a spare part's price: only an
        # outcome or a stage, as a phrase rule reads it, makes a service thread the deal's business.
        return any(h.kind in _DEAL_STEPS for m in read.human for h in read.rules(m))
    named = any(reason != "recency" for reason in best.reasons)  # recency alone says nothing
    return named or any(h.kind != "selling" for m in read.human for h in read.signals(m))


_DEAL_STEPS = frozenset({"won", "lost", "demo", "proposal", "negotiation"})


def _service_talk(best: Candidate, read: _Reading) -> bool:
    """Support talk (nlp/support.py) that shows nothing of the deal beyond the account and the installed
    product: neither the deal's own name nor its amount."""
    if best.named or "amount" in best.reasons:
        return False
    return read.support()


def _link(thread: ThreadView, listed: list[Candidate], human: list[Match], limits: Thresholds) -> Proposal:
    best = listed[0]
    made = best.score >= limits.link and clear_winner(listed, CLEAR_MARGIN)
    others = f" ({len(listed)} candidates)" if len(listed) > 1 else ""
    first = human[0]
    return Proposal(
        kind=ProposalKind.LINK_THREAD,
        key=f"link:{thread.key}",
        summary=(
            f"Linked “{thread.subject}” to {best.opp.name}"
            if made
            else f"Link “{thread.subject}” to {best.opp.name}?"
        )
        + others,
        payload={
            "opportunity_id": best.opp.id,
            "opportunity": best.opp.name,
            "mode": "link" if made else "suggest",
            "score": round(best.score, 2),
            "because": ", ".join(best.reasons) or "the account",
            "candidates": "; ".join(f"{c.opp.name} ({c.score:.2f})" for c in listed[:_MAX_CANDIDATES]),
        },
        confidence=best.score,
        evidence=(_evidence(first, f"{first.subject}"),),
        owner_rep=best.opp.owner_rep or thread.owner,
    )


def _target(
    thread: ThreadView, scored: list[Candidate], listed: list[Candidate], crm: CrmSnapshot
) -> OpportunityRef | None:
    """The opportunity a stage change would apply to: the linked one, else a clear best candidate, or the
    one whose amount the thread states."""
    if thread.linked_opportunity is not None:
        found = next((c.opp for c in scored if c.opp.id == thread.linked_opportunity), None)
        return found or next(
            (
                o
                for opps in crm.open_opportunities.values()
                for o in opps
                if o.id == thread.linked_opportunity
            ),
            None,
        )
    return listed[0].opp if listed and (clear_winner(listed) or first_by_amount(listed)) else None


def _stage_changes(thread: ThreadView, opp: OpportunityRef, read: _Reading) -> list[Proposal]:
    """Won or lost as the customer says it; otherwise the furthest stage advance either side states."""
    outcome = next((mh for mh in reversed(read.outcomes()) if mh[1].kind in {"won", "lost"}), None)
    if outcome is not None:
        chosen = outcome
    else:
        human = read.human
        advances = [(m, h) for m in human for h in read.rules(m) if h.kind in _ORDER] + _demo_agreed(human)
        if not advances:
            return []
        chosen = max(advances, key=lambda mh: _ORDER[mh[1].kind])
        if _ORDER[chosen[1].kind] <= _ORDER.get(opp.stage, -1):
            return []
    msg, hit = chosen
    stage = {"won": "closed_won", "lost": "closed_lost"}.get(hit.kind, hit.kind)
    outcome_confidence = 0.6 if hit.learned else 0.7 if hit.sentence.startswith("attachment:") else 0.8
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
            confidence=outcome_confidence if hit.kind in {"won", "lost"} else 0.6,
            evidence=(_evidence(msg, hit.sentence),),
            owner_rep=opp.owner_rep or thread.owner,
        )
    ]


def _demo_agreed(human: list[Match]) -> list[tuple[Match, Hit]]:
    """A demo named, then the customer agreeing to a date ("Thursday 11 works", "Confirmado el martes")."""
    found = []
    for index, msg in enumerate(human):
        if not from_outside(msg):
            continue
        confirmed = first_sentence(msg.text, CONFIRM)
        recent = human[max(0, index - _CONFIRM_LOOKBACK) : index + 1]
        if confirmed and any(says(DEMO, m.text) or says(DEMO, m.subject) for m in recent):
            found.append((msg, Hit("demo", confirmed[:400])))
    return found


def outcome_hits(human: list[Match], model: IntentModel | None = None) -> list[tuple[Match, Hit]]:
    """Won/lost as the customer states it (or attaches it), or a win our rep acknowledges."""
    return _outcome_hits(_Reading(list(human), model))


def _outcome_hits(read: _Reading) -> list[tuple[Match, Hit]]:
    found = []
    for msg in read.human:
        outside = from_outside(msg)
        for hit in read.signals(msg):
            if outside and hit.kind in {"won", "lost"}:
                found.append((msg, hit))
            elif not outside and hit.kind == "won_ack":
                found.append((msg, Hit("won", hit.sentence)))
    return found


def _new_opportunity(thread: ThreadView, read: _Reading, crm: CrmSnapshot) -> Proposal | None:
    """A deal nobody entered: someone outside wrote, wants to buy, and is not selling to us.

    With no CRM account for the other side, the new account is named by the first organisation the
    customer's mail names that the CRM does not know (statistical pipeline only), else by the domain.
    """
    human = read.human
    external = [p for m in human for p in m.external]
    inbound = [m for m in human if from_outside(m)]
    if not external or not inbound:
        return None  # an unanswered cold email of ours is not a deal yet
    if any(says(JOB, m.text) for m in inbound):
        return None  # a recruiter's "opportunity" is a job
    senders = {p.address.email for m in inbound for p in m.participants if p.role == "from"}
    if senders <= thread.proposed_elsewhere:
        return None  # their deal is already proposed from an earlier thread
    found = [(m, h, from_outside(m)) for m in human for h in read.signals(m)]
    selling = {(m.fingerprint, h.sentence) for m, h, _ in found if h.kind == "selling"}
    # A sentence that sells ("unser Angebot für Ihren Kundenabend") is never also a buyer's request.
    found = [
        (m, h, o) for m, h, o in found if h.kind != "request" or (m.fingerprint, h.sentence) not in selling
    ]
    intent = [(m, h) for m, h, _ in found if h.kind in {"intent", "request", "proposal", "demo"}]
    requested = any(h.kind == "request" for _, h, outside in found if outside)
    they_sell = any(h.kind == "selling" for _, h, outside in found if outside)
    we_sell = any(h.kind in {"selling", "proposal"} for _, h, outside in found if not outside)
    if they_sell and not (requested or we_sell):
        return None  # a supplier quoting us: we are the buyer
    if not (requested or we_sell or len({h.sentence for _, h in intent}) >= _MIN_INTENT):
        return None
    first_msg = next(m for m, _ in intent)
    account = next((p.account for p in external if p.account), None)
    company = next((p for p in external if not p.free_mail), None)
    # The deal's value is the largest amount named (unit prices and line items are smaller).
    amounts = sorted((a for m in human for a in find_amounts(m.text)), key=lambda a: a[0], reverse=True)
    outcome = next((h.kind for _, h in reversed(read.outcomes())), None)
    named, entities = _customer_entities(inbound, crm)
    if account is not None:
        account_name = account.name
    else:
        account_name = _new_account_name(company or external[0], inbound, thread.subject, named)
    contacts = sorted({p.address.email for p in external})
    payload: dict[str, str | int | float | None] = {
        "name": f"{account_name} – {thread.subject}"[:200],
        "account_id": account.id if account else None,
        "account": account_name,
        "new_account_domain": company.address.domain if company and not account else None,
        "contacts": "; ".join(contacts),
        "amount": str(amounts[0][0]) if amounts else None,
        "currency": amounts[0][1] if amounts else None,
        "first_seen_at": first_msg.sent_at.date().isoformat() if first_msg.sent_at else None,
        "outcome": outcome,
    }
    payload.update(entities)  # extra evidence; nothing with the blank pipeline
    return Proposal(
        kind=ProposalKind.NEW_OPPORTUNITY,
        key=f"new_opportunity:{thread.key}",
        summary=f"New opportunity: {account_name} – {thread.subject or '(no subject)'}",
        payload=payload,
        confidence=min(0.9, 0.5 + 0.1 * len(intent) + (0.2 if requested else 0.0)),
        evidence=tuple(_evidence(m, h.sentence) for m, h in intent[:_MAX_EVIDENCE]),
        owner_rep=thread.owner,
    )


def _web_lead(thread: ThreadView, human: list[Match], crm: CrmSnapshot) -> Proposal | None:
    """A web-form enquiry a colleague forwarded (nlp/weblead.py): a new opportunity that began when
    the form was sent, when the person asks for something a deal is made of."""
    for msg in human:
        lead = find_lead(msg.body, crm.internal_domains)
        if lead is None or not lead.message:
            continue
        if JOB.search(lead.message):
            continue  # a filled-in sales form is an enquiry; a job application is not
        person = match_participant(Address(name=lead.name or "", email=lead.email), "from", crm)
        if person.account is not None and crm.open_opportunities.get(person.account.id):
            return None  # a known account with an open deal: the rep links it, we don't invent one
        account = person.account
        name = account.name if account else lead.company or _lead_name(person)
        amounts = sorted(find_amounts(lead.message), key=lambda a: a[0], reverse=True)
        first = lead.submitted or (msg.sent_at.date() if msg.sent_at else None)
        return Proposal(
            kind=ProposalKind.NEW_OPPORTUNITY,
            key=f"new_opportunity:{thread.key}",
            summary=f"New opportunity (web form): {name} – {thread.subject or '(no subject)'}",
            payload={
                "name": f"{name} – {thread.subject}"[:200],
                "account_id": account.id if account else None,
                "account": name,
                "new_account_domain": None if account or person.free_mail else person.address.domain,
                "contacts": lead.email,
                "amount": str(amounts[0][0]) if amounts else None,
                "currency": amounts[0][1] if amounts else None,
                "first_seen_at": first.isoformat() if first else None,
                "outcome": None,
            },
            confidence=0.7,
            evidence=(_evidence(msg, lead.message[:400]),),
            owner_rep=thread.owner,
        )
    return None


def _lead_name(person: Participant) -> str:
    """A lead with no company field: a private person is named, a company by its domain."""
    if person.free_mail:
        return person.address.name or person.address.email
    return domain_name(person.address.domain)


def _new_account_name(person: Participant, inbound: list[Match], subject: str, named: str | None) -> str:
    """What the customer's own mail calls their company (nlp/company.py), else the organisation the
    statistical pipeline found, else the domain (for free mail: the person)."""
    free = person.free_mail
    theirs = [m for m in inbound if _sent_by(m, person.address, same_domain=not free)]
    sender = next((p for m in theirs for p in m.participants if p.role == "from"), person)
    found = company_name(
        person.address.email,
        display_name=sender.address.name,
        signature=[line for m in theirs for line in (*m.signature, *closing_lines(m.text))],
        texts=[subject, *(m.text for m in theirs)],
        free_mail=free,
    )
    if found is not None:
        return found
    if named is not None:
        return named
    return (person.address.name or person.address.email) if free else domain_name(person.address.domain)


def _sent_by(msg: Match, address: Address, *, same_domain: bool) -> bool:
    sender = next((p.address for p in msg.participants if p.role == "from"), None)
    if sender is None:
        return False
    return sender.domain == address.domain if same_domain else sender.email == address.email


def _customer_entities(inbound: list[Match], crm: CrmSnapshot) -> tuple[str | None, dict[str, str]]:
    """The first organisation the customer names that the CRM does not know, and the ORG, MONEY and DATE
    entities of the customer's mail as payload fields (none with the blank pipeline)."""
    index = index_for(crm)
    if not index.ner:
        return None, {}
    named = next((n for m in inbound for n in index.new_account_names(m.text)), None)
    found: dict[str, dict[str, None]] = {"organisations": {}, "money_named": {}, "dates_named": {}}
    for msg in inbound:
        entities = index.entities(msg.text)
        for field_name, values in zip(found, (entities.orgs, entities.money, entities.dates), strict=True):
            found[field_name].update(dict.fromkeys(values))
    return named, {k: "; ".join(v) for k, v in found.items() if v}
