"""What the product stored, read back as values, and what it predicted on each product thread.

`observe` is the evaluation's only reader of the database; `Observed` is a plain value from then on,
which scoring.py takes without touching the store.

Predictions on a product thread: links = the thread's opportunity plus every open link_thread
suggestion; new opportunity = any open new_opportunity suggestion; won/lost = a stage_change to
closed_won/closed_lost or a new_opportunity whose outcome is won/lost; stage advances = stage_change
to demo/proposal/negotiation; moved contacts = the contact of every open contact_moved suggestion
(label `moved_contacts`); automatic links (info) = the thread's opportunity plus link suggestions in
mode "link", the ones made without asking.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from storage import models as m

if TYPE_CHECKING:
    from collections.abc import Mapping

    from storage.repo import Repo

STAGES = frozenset({"demo", "proposal", "negotiation"})
# Suggestion keys start with these (nlp/propose.py), then the thread key: the current thread's come first.
_KEY_PREFIX = {
    "link_thread": "link",
    "new_opportunity": "new_opportunity",
    "stage_change": "stage",
    "contact_moved": "contact_moved",
}


@dataclass(frozen=True, slots=True)
class Suggested:
    """An open suggestion, with internal ids already translated to CRM external ids."""

    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    quote: str
    opportunity: str | None  # external id of payload opportunity_id
    account: str | None  # external id of payload account_id
    contact: str | None = None  # external id of payload contact_id


@dataclass
class Observed:
    """The product's view, keyed by Message-ID and product thread id."""

    thread_of: dict[str, int | None] = field(default_factory=dict)  # message-id -> thread id
    status: dict[str, str] = field(default_factory=dict)  # message-id -> parsed | quarantined
    people: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)  # (email, contact)
    thread_key: dict[int, str] = field(default_factory=dict)
    thread_opportunity: dict[int, str | None] = field(default_factory=dict)
    suggestions: dict[int, list[Suggested]] = field(default_factory=lambda: defaultdict(list))
    known_ids: frozenset[str] = frozenset()  # every CRM external id in the store
    open_opportunities: frozenset[str] = frozenset()
    link_scores: dict[int, tuple[str, float]] = field(default_factory=dict)  # thread -> best link, any status

    def contacts(self, message_id: str) -> frozenset[str]:
        return frozenset(c for _, c in self.people.get(message_id, ()) if c is not None)

    def of_kind(self, thread_id: int | None, kind: str) -> list[Suggested]:
        if thread_id is None:
            return []
        found = [s for s in self.suggestions.get(thread_id, ()) if s.kind == kind]
        current = f"{_KEY_PREFIX[kind]}:{self.thread_key.get(thread_id)}"
        return sorted(found, key=lambda s: (not s.key.startswith(current), -s.id))

    def links(self, thread_id: int | None, *, automatic: bool = False) -> frozenset[str]:
        linked = self.thread_opportunity.get(thread_id) if thread_id is not None else None
        proposed = {
            s.opportunity
            for s in self.of_kind(thread_id, "link_thread")
            if s.opportunity and (not automatic or s.payload.get("mode") == "link")
        }
        return frozenset(proposed | ({linked} if linked else set()))

    def moved(self, thread_id: int | None) -> frozenset[str]:
        return frozenset(s.contact for s in self.of_kind(thread_id, "contact_moved") if s.contact)

    def outcomes(self, thread_id: int | None, deal: str | None = None) -> dict[str, str]:
        """won/lost -> the evidence for it; with `deal`, only stage changes of that opportunity."""
        found: dict[str, str] = {}
        for s in self.of_kind(thread_id, "new_opportunity"):
            if s.payload.get("outcome") in {"won", "lost"}:
                found.setdefault(str(s.payload["outcome"]), f"new opp with outcome {s.payload['outcome']}")
        for s in self.of_kind(thread_id, "stage_change"):
            if deal is not None and s.opportunity != deal:
                continue
            outcome = {"closed_won": "won", "closed_lost": "lost"}.get(str(s.payload.get("to_stage")))
            if outcome:
                found[outcome] = f"→{s.payload['to_stage']} “{s.quote}”"
        return found

    def stages(self, thread_id: int | None, deal: str | None = None) -> dict[str, str]:
        return {
            str(s.payload.get("to_stage")): f"→{s.payload.get('to_stage')} “{s.quote}”"
            for s in self.of_kind(thread_id, "stage_change")
            if s.payload.get("to_stage") in STAGES and (deal is None or s.opportunity == deal)
        }

    def summary(self, thread_id: int | None) -> str:
        """The product's suggestions on a thread, one short phrase each (for explaining a miss)."""
        if thread_id is None:
            return "no product thread"
        parts = []
        for s in sorted(self.suggestions.get(thread_id, ()), key=lambda s: s.id):
            if s.kind == "link_thread":
                parts.append(f"link→{s.opportunity}")
            elif s.kind == "stage_change":
                parts.append(f"stage→{s.payload.get('to_stage')}")
            elif s.kind == "new_opportunity":
                parts.append("new opp")
            elif s.kind == "contact_moved":
                parts.append(f"moved {s.contact}")
        return "product: " + (", ".join(parts) if parts else "no deal suggestion")


def observe(repo: Repo, message_ids: Mapping[str, str]) -> Observed:
    """Read the product's store back; `message_ids` maps each imported file (resolved path) to its ID."""
    seen = Observed()
    with repo.session() as session:
        opp_ids = dict(session.execute(select(m.Opportunity.id, m.Opportunity.external_id)).all())
        acc_ids = dict(session.execute(select(m.Account.id, m.Account.external_id)).all())
        contact_ids = dict(session.execute(select(m.Contact.id, m.Contact.external_id)).all())
        seen.known_ids = frozenset(
            str(i) for i in (*opp_ids.values(), *acc_ids.values(), *contact_ids.values()) if i
        )
        seen.open_opportunities = frozenset(
            str(o.external_id)
            for o in session.scalars(select(m.Opportunity))
            if o.external_id and o.stage not in {"closed_won", "closed_lost"}
        )
        by_pk: dict[int, str] = {}
        rows = session.execute(
            select(m.Provenance.path, m.Message.id, m.Message.thread_id, m.Message.status).join(
                m.Message, m.Message.id == m.Provenance.message_pk
            )
        )
        for path, pk, thread_id, status in rows:
            message_id = message_ids.get(str(path))
            if message_id is not None:
                by_pk[pk] = message_id
                seen.thread_of[message_id], seen.status[message_id] = thread_id, status
        for person in session.scalars(select(m.Participant).order_by(m.Participant.id)):
            if person.message_pk in by_pk:
                contact = contact_ids.get(person.contact_id) if person.contact_id else None
                seen.people.setdefault(by_pk[person.message_pk], []).append((person.email, contact))
        for thread in session.scalars(select(m.Thread)):
            seen.thread_key[thread.id] = thread.key
            seen.thread_opportunity[thread.id] = (
                opp_ids.get(thread.opportunity_id) if thread.opportunity_id else None
            )
        for row in session.scalars(select(m.Suggestion).where(m.Suggestion.kind == "link_thread")):
            opp_pk, score = row.payload.get("opportunity_id"), row.payload.get("score")
            opp = opp_ids.get(opp_pk) if isinstance(opp_pk, int) else None
            if row.thread_id is not None and opp and isinstance(score, int | float):
                best = seen.link_scores.get(row.thread_id)
                if best is None or score > best[1]:
                    seen.link_scores[row.thread_id] = (opp, float(score))
        for row in session.scalars(select(m.Suggestion).where(m.Suggestion.status == "open")):
            if row.thread_id is None:
                continue
            opp, acc = row.payload.get("opportunity_id"), row.payload.get("account_id")
            con = row.payload.get("contact_id")
            quote = str(row.evidence[0].get("quote", "")) if row.evidence else ""
            seen.suggestions[row.thread_id].append(
                Suggested(
                    row.id,
                    row.kind,
                    row.key,
                    dict(row.payload),
                    " ".join(quote.split()),
                    opp_ids.get(opp) if isinstance(opp, int) else None,
                    acc_ids.get(acc) if isinstance(acc, int) else None,
                    contact_ids.get(con) if isinstance(con, int) else None,
                )
            )
    return seen
