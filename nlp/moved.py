"""A contact who changed company: a known name writing from another company's address.

Conservative on purpose, since a wrong "moved" re-homes a real contact. All of these must hold:
- the sender's address is not in the CRM, is not free-mail and not ours;
- the display name belongs to exactly one CRM contact (two words at least, titles and accents ignored);
- that contact has a company address, and the new domain is not one of the contact's domains, nor
  another domain of the same account;
- and the mail says so ("I've moved to", "meine neue Adresse", "ya no estoy en") or the new domain
  is a different account in the CRM. A bare name match at an unknown company is not enough.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nlp.clean import sentences
from nlp.match import known_person
from nlp.signals import MOVED
from storage.records import Evidence, Proposal, ProposalKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from storage.records import AccountRef, CrmSnapshot, Match, Participant

_STATED = 0.85
_INFERRED = 0.6


def moved_contacts(human: Sequence[Match], crm: CrmSnapshot, owner: str) -> list[Proposal]:
    """One proposal per (contact, new address) the thread shows; keys are stable across replays."""
    found: dict[str, Proposal] = {}
    for msg in human:
        sender = next((p for p in msg.participants if p.role == "from"), None)
        if sender is None or sender.contact is not None or sender.internal or sender.free_mail:
            continue
        proposal = _moved(msg, sender, crm, owner)
        if proposal is not None:
            found.setdefault(proposal.key, proposal)
    return list(found.values())


def _moved(msg: Match, sender: Participant, crm: CrmSnapshot, owner: str) -> Proposal | None:
    person = known_person(sender.address.name, crm)
    if person is None:
        return None
    company_domains = {d for d in person.domains if d not in crm.free_mail_domains}
    domain = sender.address.domain
    if not company_domains or any(_related(domain, d) for d in company_domains):
        return None
    contact = person.contact
    old = crm.accounts.get(contact.account_id) if contact.account_id is not None else None
    new = sender.account
    if old is not None and new is not None and old.id == new.id:
        return None  # another domain of the same account
    statement = next((s for s in sentences(msg.text) if MOVED.search(s)), None)
    if statement is None and new is None:
        return None
    return Proposal(
        kind=ProposalKind.CONTACT_MOVED,
        key=f"contact_moved:{contact.id}:{sender.address.email}",
        summary=f"{contact.name} moved{_from(old)} to {_company(new, domain)} ({sender.address.email})",
        payload={
            "contact_id": contact.id,
            "contact": contact.name,
            "email": sender.address.email,
            "old_account_id": old.id if old else None,
            "old_account": old.name if old else None,
            "new_account_id": new.id if new else None,
            "new_account": new.name if new else None,
            "new_account_domain": None if new else domain,
        },
        confidence=_STATED if statement else _INFERRED,
        evidence=(
            Evidence(
                msg.fingerprint, msg.sent_at, (statement or f"writes from {sender.address.email}")[:400]
            ),
        ),
        owner_rep=contact.owner_rep or owner,
    )


def _related(domain: str, other: str) -> bool:
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def _from(account: AccountRef | None) -> str:
    return f" from {account.name}" if account else ""


def _company(account: AccountRef | None, domain: str) -> str:
    return account.name if account else domain
