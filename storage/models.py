"""SQLAlchemy 2 models: the database is a projection of the archive plus the event log."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Index, MetaData, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect


def utcnow() -> datetime:
    """Now, as naive UTC: every timestamp in the database is naive UTC (SQLite keeps no zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def db_time(value: datetime | None) -> datetime | None:
    """An aware datetime converted to the database's naive UTC; naive input is taken as UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


# --- Text the databases accept ---------------------------------------------------------------------
# Mail decodes to text neither database stores: a NUL (from QP `=00`, base64, `\u0000` in an encoded
# word) is refused by PostgreSQL text and json; a lone surrogate (from surrogateescape decoding of raw
# 8-bit headers) cannot be encoded as UTF-8 by either driver. Every string column and every string in
# a JSON column goes through db_text() on its way in, so no call site has to remember. The character
# becomes U+FFFD, Unicode's mark for "a character was here that could not be represented": the loss is
# visible, words on either side stay apart (dropping a NUL would join them), and one character stays one
# character, so lengths, limits and quoted evidence keep their positions. The archive keeps the bytes.

_UNSAFE = re.compile("[\x00\ud800-\udfff]")


def db_text(value: str) -> str:
    """`value` with every NUL and lone surrogate replaced by U+FFFD."""
    if "\x00" not in value and (value.isascii() or _encodes(value)):
        return value  # nearly all text: asked in ~1-15 µs, where the regex scans ~90 µs per 8 KB body
    return _UNSAFE.sub("\ufffd", value)


def _encodes(value: str) -> bool:
    """`value` has no lone surrogate (UTF-8 refuses one)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _db_json(value: Any) -> Any:
    if isinstance(value, str):
        return db_text(value)
    if isinstance(value, dict):
        return {_db_json(k): _db_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_db_json(v) for v in value]
    return value


class SafeString(TypeDecorator[str]):
    """String(n) whose values pass through db_text(); the same column type to the database."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:  # noqa: ARG002
        return None if value is None else db_text(value)


class SafeText(SafeString):
    """Text whose values pass through db_text()."""

    impl = Text
    cache_ok = True


class SafeJSON(TypeDecorator[Any]):
    """JSON whose strings, keys included and at any depth, pass through db_text()."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:  # noqa: ARG002
        return _db_json(value)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        str: SafeString,
        dict[str, Any]: SafeJSON,
        list[Any]: SafeJSON,
    }


# --- CRM -------------------------------------------------------------------------------------------


class Rep(Base):
    __tablename__ = "rep"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(SafeString(320), unique=True)
    name: Mapped[str] = mapped_column(SafeString(200), default="")
    team: Mapped[str | None] = mapped_column(SafeString(100))
    active: Mapped[bool] = mapped_column(default=True)
    lead: Mapped[str | None] = mapped_column(SafeString(320))  # the team lead's email
    timezone: Mapped[str | None] = mapped_column(SafeString(64))  # None: [digest] timezone
    digest_at: Mapped[str | None] = mapped_column(SafeString(5))  # "HH:MM"; None: [digest] send_at
    locale: Mapped[str | None] = mapped_column(SafeString(20))  # None: [digest] locale
    paused_at: Mapped[datetime | None]  # the rep paused their digest (one-click unsubscribe)


class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(SafeString(100), unique=True)
    name: Mapped[str] = mapped_column(SafeString(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    domains: Mapped[list[AccountDomain]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )


class AccountDomain(Base):
    __tablename__ = "account_domain"
    domain: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    account: Mapped[Account] = relationship(back_populates="domains")


class Contact(Base):
    __tablename__ = "contact"
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(SafeString(100), unique=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(SafeString(300), default="")
    owner_rep: Mapped[str | None] = mapped_column(SafeString(320))
    addresses: Mapped[list[ContactAddress]] = relationship(
        back_populates="contact", cascade="all, delete-orphan"
    )


class ContactAddress(Base):
    __tablename__ = "contact_address"
    email: Mapped[str] = mapped_column(SafeString(320), primary_key=True)  # lower-cased, plus-tag removed
    contact_id: Mapped[int] = mapped_column(ForeignKey("contact.id"), index=True)
    contact: Mapped[Contact] = relationship(back_populates="addresses")


class Opportunity(Base):
    __tablename__ = "opportunity"
    id: Mapped[int] = mapped_column(primary_key=True)
    external_id: Mapped[str | None] = mapped_column(SafeString(100), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"), index=True)
    name: Mapped[str] = mapped_column(SafeString(300))
    stage: Mapped[str] = mapped_column(SafeString(30))  # canonical stage
    stage_raw: Mapped[str] = mapped_column(SafeString(100), default="")  # as the CRM wrote it
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    currency: Mapped[str | None] = mapped_column(SafeString(3))
    owner_rep: Mapped[str | None] = mapped_column(SafeString(320))
    created_at: Mapped[datetime | None]
    first_seen_at: Mapped[datetime | None]  # first email evidence, may precede created_at
    closed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(SafeString(10))  # won | lost


# --- Mail ------------------------------------------------------------------------------------------


class Mailbox(Base):
    __tablename__ = "mailbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(SafeString(64), unique=True)
    owner: Mapped[str] = mapped_column(SafeString(320))


class FolderState(Base):
    """Sync cursor of one IMAP folder; advanced only in the transaction that stored its messages."""

    __tablename__ = "folder_state"
    __table_args__ = (UniqueConstraint("mailbox_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailbox.id"))
    name: Mapped[str] = mapped_column(SafeString(500))
    uidvalidity: Mapped[int | None]
    last_uid: Mapped[int] = mapped_column(default=0)
    highest_modseq: Mapped[int | None]
    last_success_at: Mapped[datetime | None]


class Blob(Base):
    """One exact byte sequence in the archive (SHA-256 of the bytes as received)."""

    __tablename__ = "blob"
    sha256: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    size: Mapped[int]
    archived_at: Mapped[datetime] = mapped_column(default=utcnow)


class Thread(Base):
    __tablename__ = "thread"
    id: Mapped[int] = mapped_column(primary_key=True)
    # The root Message-ID: stable across replays. An insert sentinel: unique and ours, it tells SQLAlchemy
    # which returned id is whose, so a batch's new rows go in one INSERT ... RETURNING, not a statement
    # each (SQLite's RETURNING order is not guaranteed; PostgreSQL's autoincrement sentinel served there).
    key: Mapped[str] = mapped_column(SafeString(1000), unique=True, insert_sentinel=True)
    subject: Mapped[str] = mapped_column(SafeText, default="")
    subject_key: Mapped[str] = mapped_column(SafeString(1000), default="", index=True)
    first_at: Mapped[datetime | None]
    last_at: Mapped[datetime | None]
    opportunity_id: Mapped[int | None] = mapped_column(ForeignKey("opportunity.id"), index=True)


class Message(Base):
    """One logical email, whatever bytes and mailboxes carried it."""

    __tablename__ = "message"
    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(SafeString(64), unique=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blob.sha256"))  # first copy seen
    message_id: Mapped[str] = mapped_column(SafeString(1000), index=True)
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("thread.id"), index=True)
    # pending (captured, not yet processed) | parsed | quarantined | digest (mailsync's own mail)
    status: Mapped[str] = mapped_column(SafeString(20), index=True)
    subject: Mapped[str] = mapped_column(SafeText, default="")
    sender: Mapped[str | None] = mapped_column(SafeString(320))
    sent_at: Mapped[datetime | None]
    body_text: Mapped[str] = mapped_column(SafeText, default="")
    automated: Mapped[str | None] = mapped_column(SafeString(100))  # why it is machine mail, if it is
    attachments: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")  # file names
    captured_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageRef(Base):
    """A Message-ID this message points at (In-Reply-To/References), so late parents find children."""

    __tablename__ = "message_ref"
    message_pk: Mapped[int] = mapped_column(ForeignKey("message.id"), primary_key=True)
    ref: Mapped[str] = mapped_column(SafeString(1000), primary_key=True)
    __table_args__ = (Index("ix_message_ref_ref", "ref"),)


class Provenance(Base):
    """One place a copy of a message was seen: an IMAP folder/UID or an imported file."""

    __tablename__ = "provenance"
    __table_args__ = (UniqueConstraint("blob_sha256", "locator"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("message.id"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blob.sha256"))
    locator: Mapped[str] = mapped_column(SafeString(2000))
    mailbox: Mapped[str] = mapped_column(SafeString(64))
    folder: Mapped[str | None] = mapped_column(SafeString(500))
    uidvalidity: Mapped[int | None]
    uid: Mapped[int | None]
    path: Mapped[str | None] = mapped_column(SafeText)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    gone_at: Mapped[datetime | None]  # deleted or moved on the server; the archive keeps it


class Participant(Base):
    __tablename__ = "participant"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("message.id"), index=True)
    role: Mapped[str] = mapped_column(SafeString(4))
    email: Mapped[str] = mapped_column(SafeString(320), index=True)
    name: Mapped[str] = mapped_column(SafeString(300), default="")
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contact.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)


class Quarantine(Base):
    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("message.id"), unique=True)
    reason: Mapped[str] = mapped_column(SafeText)
    at: Mapped[datetime] = mapped_column(default=utcnow)


# --- Proposals -------------------------------------------------------------------------------------


class Suggestion(Base):
    __tablename__ = "suggestion"
    # A thread's own suggestions (re-proposed per batch), one kind's open ones and those naming a deal
    # (deal context), read per touched thread: without these every read scanned the table, and
    # processing slowed as it grew.
    __table_args__ = (
        Index(None, "thread_id", "status"),
        Index(None, "kind", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(SafeString(1000), unique=True, insert_sentinel=True)  # as Thread.key
    kind: Mapped[str] = mapped_column(SafeString(30))
    status: Mapped[str] = mapped_column(SafeString(20), default="open", index=True)  # open|approved|rejected
    summary: Mapped[str] = mapped_column(SafeText)
    payload: Mapped[dict[str, Any]]
    confidence: Mapped[float]
    evidence: Mapped[list[Any]]
    owner_rep: Mapped[str | None] = mapped_column(SafeString(320), index=True)
    thread_id: Mapped[int | None] = mapped_column(ForeignKey("thread.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Read from the payload whenever it is set (see _from_payload), so that every writer keeps them: the
    # deal a link or stage proposal names, and a new-opportunity proposal's contact addresses. Processing
    # looks suggestions up by them per touched thread; in the JSON they were a scan of the open ones.
    opportunity_id: Mapped[int | None] = mapped_column(index=True)
    contacts: Mapped[list[SuggestionContact]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )

    @validates("payload")
    def _from_payload(self, _key: str, payload: dict[str, Any]) -> dict[str, Any]:
        deal = payload.get("opportunity_id")
        self.opportunity_id = deal if isinstance(deal, int) and not isinstance(deal, bool) else None
        emails = contact_emails(payload)
        if not emails and "contacts" not in self.__dict__ and instance_state(self).key is None:
            return payload  # a new row that lists no one: no collection to build (most suggestions)
        before = self.__dict__.get("payload")  # None: a new row, or its payload not loaded
        if before is None or contact_emails(before) != emails:
            kept = {row.email: row for row in self.contacts}
            self.contacts = [kept.get(email) or SuggestionContact(email=email) for email in emails]
        return payload


EMAIL_LENGTH = 320  # an address column's width (Participant.email, SuggestionContact.email)


def contact_emails(payload: dict[str, Any]) -> list[str]:
    """The addresses of a payload's "contacts" ("a@x; b@y"), lower-cased, each once. One longer than an
    address column holds is left out: no sender can have it."""
    listed = payload.get("contacts")
    found = {e.strip().lower() for e in listed.split(";")} if isinstance(listed, str) else set()
    return sorted(e for e in found if e and len(e) <= EMAIL_LENGTH)


class SuggestionContact(Base):
    """A contact address of a new-opportunity suggestion, as its payload lists them (Suggestion.contacts)."""

    __tablename__ = "suggestion_contact"
    suggestion_id: Mapped[int] = mapped_column(
        ForeignKey("suggestion.id", ondelete="CASCADE"), primary_key=True
    )
    email: Mapped[str] = mapped_column(SafeString(EMAIL_LENGTH), primary_key=True, index=True)


class Decision(Base):
    __tablename__ = "decision"
    id: Mapped[int] = mapped_column(primary_key=True)
    suggestion_id: Mapped[int] = mapped_column(ForeignKey("suggestion.id"), index=True)
    verdict: Mapped[str] = mapped_column(SafeString(10))  # approve | reject
    who: Mapped[str] = mapped_column(SafeString(320))
    how: Mapped[str] = mapped_column(SafeString(20))  # link | reply | cli
    at: Mapped[datetime] = mapped_column(default=utcnow)
    edits: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default="{}"
    )  # e.g. {"amount": "5000"}
    digest_token: Mapped[str | None] = mapped_column(SafeString(64))  # the digest it was taken from
    event_id: Mapped[str | None] = mapped_column(SafeString(64))  # the event-log entry that recorded it


class DigestSend(Base):
    """One digest for one rep and period: written `sending` before SMTP, `sent` after, never twice."""

    __tablename__ = "digest_send"
    __table_args__ = (UniqueConstraint("rep", "kind", "period"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(SafeString(64), unique=True)  # in its links, Message-ID, replies
    rep: Mapped[str] = mapped_column(SafeString(320))
    kind: Mapped[str] = mapped_column(SafeString(10))  # rep | manager
    period: Mapped[str] = mapped_column(SafeString(20))  # the rep-local date of the send slot
    message_id: Mapped[str] = mapped_column(SafeString(300))
    status: Mapped[str] = mapped_column(SafeString(10))  # sending | sent
    items: Mapped[list[Any]]  # [{"n": 1, "key": suggestion key}, ...]: what its numbers mean
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class UsedLink(Base):
    """A digest link's nonce, once used: links are single-use."""

    __tablename__ = "used_link"
    nonce: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    rep: Mapped[str] = mapped_column(SafeString(320))
    used_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppliedEvent(Base):
    """Event-log entries already projected into this database (makes re-application a no-op)."""

    __tablename__ = "applied_event"
    id: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    kind: Mapped[str] = mapped_column(SafeString(50))
    digest: Mapped[str] = mapped_column(SafeString(64), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


# --- Privacy ---------------------------------------------------------------------------------------


class Tombstone(Base):
    """A forgotten address, display name or message, as HMAC-SHA256 under the tombstone key
    (storage/forget.py): never the value itself."""

    __tablename__ = "tombstone"
    digest: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    event_id: Mapped[str | None] = mapped_column(SafeString(64))  # the `forget` event that made it


class Lease(Base):
    """Who works on a shared thing (a mailbox, the digest job) until when, across processes: see
    storage/leases.py. `token` (the fencing token) grows by one whenever the holder changes."""

    __tablename__ = "lease"
    # mailbox:<name>, job:<name>, or member:<holder> (a process alive, for the fair share of mailboxes)
    name: Mapped[str] = mapped_column(SafeString(400), primary_key=True)
    holder: Mapped[str] = mapped_column(SafeString(300))  # host:pid:random of the process
    token: Mapped[int]
    expires_at: Mapped[datetime]
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobRun(Base):
    """One run of a periodic job for one period, whatever the number of processes: inserted first."""

    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("job", "period"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(SafeString(50))
    period: Mapped[str] = mapped_column(SafeString(20))  # e.g. the UTC date of a daily job
    holder: Mapped[str] = mapped_column(SafeString(300))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


# --- Outbound webhook ------------------------------------------------------------------------------


class WebhookDelivery(Base):
    """One signed POST of a batch of records, named for good by the source ids it covers."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("kind", "first_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(SafeString(20))  # activities | decisions
    first_id: Mapped[int]  # message or decision ids, inclusive
    last_id: Mapped[int]
    records: Mapped[int]
    status: Mapped[str] = mapped_column(SafeString(10), index=True)  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(SafeText)


class WebhookAttempt(Base):
    """The delivery log: every POST tried, with the HTTP status or the error."""

    __tablename__ = "webhook_attempt"
    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_delivery.id"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(SafeText)
    duration_ms: Mapped[int]
