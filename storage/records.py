"""Frozen records passed between the pipeline's stages; imports nothing of ours.

RawMessage -> ParsedEmail -> (thread) -> Match -> Proposal
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where one copy of a message came from: an IMAP folder and UID, or a file."""

    mailbox: str
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    path: str | None = None

    @property
    def locator(self) -> str:
        """A stable text key for this copy, unique per place it was seen."""
        if self.uid is not None:
            return f"imap:{self.mailbox}/{self.folder};uidvalidity={self.uidvalidity};uid={self.uid}"
        return f"file:{self.mailbox}:{self.path}"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """The exact bytes a source delivered, with where they came from. Sources never parse.

    Mail too big to hold in memory comes as a `spool` file instead (then `data` is empty): the
    source's own file, or a temporary one the source removes once the consumer moves on.
    """

    data: bytes
    provenance: Provenance
    spool: Path | None = None

    @property
    def size(self) -> int:
        return self.spool.stat().st_size if self.spool is not None else len(self.data)

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The bytes in pieces, without reading a spool file whole."""
        if self.spool is None:
            yield self.data
            return
        with self.spool.open("rb") as stream:
            while piece := stream.read(chunk_size):
                yield piece

    def read(self) -> bytes:
        """All the bytes at once; for spooled mail only below the parse size limit."""
        return self.spool.read_bytes() if self.spool is not None else self.data


@dataclass(frozen=True, slots=True)
class Address:
    name: str
    email: str

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class ParsedEmail:
    """What the later stages need of one message; built by the parse stage under limits."""

    fingerprint: str  # the message identity (see mailsync/mail/identity.py)
    archive_key: str  # sha256 of the raw bytes
    message_id: str  # normalised, without angle brackets; may be synthetic
    in_reply_to: str | None
    references: tuple[str, ...]
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    subject: str
    sent_at: datetime | None
    body_text: str
    attachments: tuple[Attachment, ...] = ()
    auto_submitted: str | None = None
    precedence: str | None = None
    list_id: str | None = None
    content_type: str = "text/plain"
    mailsync_digest: str | None = None  # X-Mailsync-Digest: mailsync's own digest or confirmation
    # (the sender's own text, their signature lines) of body_text: nlp/match.py's reading of it, done
    # by the parse worker, off the processing thread; None where it was not (nlp reads it then).
    reading: tuple[str, tuple[str, ...]] | None = field(default=None, compare=False, repr=False)

    @property
    def participants(self) -> tuple[Address, ...]:
        people = ((self.sender,) if self.sender else ()) + self.to + self.cc
        seen: set[str] = set()
        unique = []
        for person in people:
            if person.email not in seen:
                seen.add(person.email)
                unique.append(person)
        return tuple(unique)


class Stage(StrEnum):
    QUALIFICATION = "qualification"
    DISCOVERY = "discovery"
    DEMO = "demo"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


@dataclass(frozen=True, slots=True)
class ContactRef:
    id: int
    name: str
    account_id: int | None
    owner_rep: str | None


@dataclass(frozen=True, slots=True)
class AccountRef:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class OpportunityRef:
    id: int
    external_id: str | None
    account_id: int
    name: str
    stage: str
    amount: Decimal | None
    currency: str | None
    owner_rep: str | None


@dataclass(frozen=True, slots=True)
class CrmSnapshot:
    """The CRM as the match stage sees it: lookups by address and domain, open deals by account."""

    contacts_by_email: dict[str, ContactRef] = field(default_factory=dict)
    accounts: dict[int, AccountRef] = field(default_factory=dict)
    accounts_by_domain: dict[str, AccountRef] = field(default_factory=dict)
    open_opportunities: dict[int, tuple[OpportunityRef, ...]] = field(default_factory=dict)
    reps: frozenset[str] = frozenset()
    internal_domains: frozenset[str] = frozenset()
    free_mail_domains: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Participant:
    """One person on a message, as matched against the CRM."""

    address: Address
    role: str  # from | to | cc
    contact: ContactRef | None
    account: AccountRef | None
    internal: bool
    free_mail: bool


@dataclass(frozen=True, slots=True)
class Match:
    """One message as the propose stage sees it: who is on it, matched to the CRM, and its text."""

    fingerprint: str
    sent_at: datetime | None
    subject: str
    text: str  # body without quoted replies, forwarded blocks and signature
    participants: tuple[Participant, ...]
    automated: str | None  # why this is machine mail (newsletter, auto-reply, ...), else None
    attachments: tuple[str, ...] = ()
    signature: tuple[str, ...] = ()  # the sender's lines after "-- ": how they name their company
    body: str = ""  # the whole body, forwards included: a forwarded web form is a lead (nlp/weblead.py)

    @property
    def external(self) -> tuple[Participant, ...]:
        return tuple(p for p in self.participants if not p.internal)

    @property
    def internal_only(self) -> bool:
        return not self.external

    @property
    def accounts(self) -> tuple[AccountRef, ...]:
        """External accounts on the message, in order of appearance."""
        seen: dict[int, AccountRef] = {}
        for person in self.participants:
            if person.account and person.account.id not in seen:
                seen[person.account.id] = person.account
        return tuple(seen.values())


class ProposalKind(StrEnum):
    NEW_CONTACT = "new_contact"
    LINK_THREAD = "link_thread"
    NEW_OPPORTUNITY = "new_opportunity"
    STAGE_CHANGE = "stage_change"
    CONTACT_MOVED = "contact_moved"  # a known contact writes from another company's address


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a proposal exists: a sentence quoted from a message, with the message and its date."""

    fingerprint: str
    sent_at: datetime | None
    quote: str


@dataclass(frozen=True, slots=True)
class Proposal:
    """A suggestion for the rep; `key` makes it idempotent across re-imports and replays."""

    kind: ProposalKind
    key: str
    summary: str
    payload: dict[str, str | int | float | None]
    confidence: float
    evidence: tuple[Evidence, ...]
    owner_rep: str | None


def normalise_email(address: str) -> str:
    """Lower-cased, with any plus tag removed: `Anna+crm@X.example` -> `anna@x.example`."""
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0] or local}@{domain}" if local else address.strip().lower()
