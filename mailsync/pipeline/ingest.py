"""The pipeline: archive -> parse -> thread -> match -> propose, for one message at a time.

Order is the guarantee: the raw bytes are in the archive (fsynced) before the database hears of them,
and everything the database learns of a message is committed in one transaction, so a crash at any
point leaves either nothing or the whole message, and re-running ingests it exactly once. A message
the database refuses for its data is rolled back and recorded as quarantined in a transaction of its
own, so one bad message never blocks its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import structlog
from sqlalchemy.exc import DBAPIError

from config.errors import ParseError
from mailsync import faults
from mailsync.mail import thread as threading_rules
from mailsync.mail.digest_mail import is_digest_mail
from mailsync.mail.identity import identify_stream
from mailsync.pipeline.followups import thread_view, thresholds
from nlp.match import free_mail_domains, match_message
from nlp.noise import automated_reason
from nlp.phrases import build_index
from nlp.propose import propose
from storage import mailstore
from storage.crm import crm_version, load_snapshot
from storage.models import db_time

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from config.settings import Settings
    from mailsync.mail.identity import Identity
    from mailsync.mail.parse_worker import ParseWorker
    from storage.archive import Archive
    from storage.models import Message, Thread
    from storage.records import CrmSnapshot, ParsedEmail, RawMessage
    from storage.repo import Repo

log = structlog.get_logger()

Outcome = Literal["new", "copy", "known", "quarantined"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: Outcome  # new message | new copy of a known one | copy already recorded | quarantined
    fingerprint: str
    reason: str | None = None


class Pipeline:
    """Runs every stage for each message; owns the CRM snapshot the match stage uses."""

    def __init__(self, settings: Settings, repo: Repo, archive: Archive, parser: ParseWorker) -> None:
        self.settings = settings
        self.repo = repo
        self.archive = archive
        self.parser = parser
        self._crm: CrmSnapshot | None = None
        self._crm_version: tuple[int, datetime | None] | None = None

    @property
    def crm(self) -> CrmSnapshot:
        if self._crm is None:
            self.refresh_crm()
        assert self._crm is not None  # noqa: S101 - set just above
        return self._crm

    def refresh_crm(self) -> None:
        """Rebuild the match stage's view of the CRM (after an import or an approval)."""
        free = free_mail_domains() | frozenset(self.settings.extra_free_mail_domains)
        with self.repo.session() as session:
            self._crm_version = crm_version(session)
            self._crm = load_snapshot(session, frozenset(self.settings.internal_domains), free)
        build_index(self._crm, self.settings.matching.spacy_model)  # ConfigError if the model is missing

    def refresh_crm_if_changed(self) -> bool:
        """Reload the snapshot when a CRM import was applied since (e.g. by `mailsync crm import`)."""
        with self.repo.session() as session:
            version = crm_version(session)
        if self._crm is not None and version == self._crm_version:
            return False
        self.refresh_crm()
        log.info("crm_loaded", events=version[0])
        return True

    def ingest(self, raw: RawMessage, owner: str) -> IngestResult:
        """Take one message from a source through every stage; CaptureError subclasses propagate."""
        size = raw.size
        # First, durably: nothing below may lose it. Spooled (huge) mail is never read whole.
        sha256 = (
            self.archive.put(raw.data) if raw.spool is None else self.archive.put_stream(raw.chunks(), size)
        )
        faults.point("after_archive")
        identity = identify_stream(raw.chunks)
        structlog.contextvars.bind_contextvars(message=identity.fingerprint[:16])
        try:
            with self.repo.session() as session:
                mailstore.ensure_mailbox(session, raw.provenance.mailbox, owner)
                message = mailstore.find_message(session, identity.fingerprint)
                if message is not None:
                    added = mailstore.record_copy(session, message, sha256, size, raw.provenance)
                    return IngestResult("copy" if added else "known", identity.fingerprint)
                message = mailstore.new_message(
                    session,
                    identity.fingerprint,
                    sha256,
                    size,
                    identity.message_id or f"{identity.fingerprint}@mailsync.invalid",
                )
                mailstore.record_copy(session, message, sha256, size, raw.provenance)
                try:
                    parsed = self._parse(raw, identity.fingerprint, sha256)
                except ParseError as exc:
                    mailstore.quarantine(session, message, str(exc))
                    # Info, not a warning: junk and hostile mail is expected; it is counted (metrics,
                    # summaries) and listed by `mailsync quarantine`.
                    log.info(
                        "message_quarantined",
                        reason=str(exc),
                        archive_key=sha256,
                        locator=raw.provenance.locator,
                    )
                    return IngestResult("quarantined", identity.fingerprint, str(exc))
                message.message_id = parsed.message_id
                if is_digest_mail(parsed):  # never customer mail, whose mailbox ever holds it
                    _keep_digest_mail(message, parsed)
                    log.info("digest_mail_kept", archive_key=sha256, locator=raw.provenance.locator)
                    return IngestResult("new", identity.fingerprint)
                faults.point("during_match")
                match = match_message(parsed, self.crm, automated_reason(parsed))
                mailstore.fill_parsed(session, message, parsed, match)
                faults.point("during_thread")
                thread = mailstore.assign_thread(
                    session,
                    message,
                    refs=threading_rules.references(parsed),
                    key=threading_rules.thread_key(parsed),
                    subject_key=threading_rules.subject_key(parsed.subject),
                    participants=[p.address.email for p in match.participants],
                    join_by_subject=threading_rules.may_join_by_subject(parsed),
                )
                proposals = self._propose(session, thread, owner)
                faults.point("before_commit")
            faults.point("after_commit")
            log.debug("message_ingested", thread=thread.key, proposals=proposals)
            return IngestResult("new", identity.fingerprint)
        except DBAPIError as exc:  # not OperationalError: Repo.session made that a (transient) StorageError
            return self._store_rejected(raw, owner, identity, sha256, exc)
        finally:
            structlog.contextvars.unbind_contextvars("message")

    def _store_rejected(
        self, raw: RawMessage, owner: str, identity: Identity, sha256: str, exc: DBAPIError
    ) -> IngestResult:
        """The database refused the message's transaction for its data (a value too long for a column,
        a constraint): record the message as quarantined in a fresh transaction, with as little of the
        mail as possible (no Message-ID: it may be the value refused), so the folder goes on past it.
        When the message is there by now, another process stored it first (a race on the unique
        fingerprint) and this is just another copy of it."""
        reason = f"database rejected the message: {_first_line(exc.orig or exc)}"
        size = raw.size
        with self.repo.session() as session:
            mailstore.ensure_mailbox(session, raw.provenance.mailbox, owner)
            message = mailstore.find_message(session, identity.fingerprint)
            if message is not None:
                added = mailstore.record_copy(session, message, sha256, size, raw.provenance)
                log.info("message_stored_concurrently", error=reason, locator=raw.provenance.locator)
                return IngestResult("copy" if added else "known", identity.fingerprint)
            message = mailstore.new_message(
                session, identity.fingerprint, sha256, size, f"{identity.fingerprint}@mailsync.invalid"
            )
            mailstore.record_copy(session, message, sha256, size, raw.provenance)
            mailstore.quarantine(session, message, reason)
        log.warning("message_quarantined", reason=reason, archive_key=sha256, locator=raw.provenance.locator)
        return IngestResult("quarantined", identity.fingerprint, reason)

    def _parse(self, raw: RawMessage, fingerprint: str, sha256: str) -> ParsedEmail:
        limit = self.settings.limits.max_bytes
        if raw.size > limit:  # checked here too so that huge spooled mail is never read into memory
            msg = f"message too large: {raw.size:,} bytes > limit {limit:,}"
            raise ParseError(msg)
        return self.parser.parse(raw.read(), fingerprint=fingerprint, archive_key=sha256)

    def _propose(self, session: Session, thread: Thread, owner: str) -> int:
        """Re-propose for the whole thread; suggestions it no longer supports are withdrawn."""
        view = thread_view(session, thread, owner, self.crm)
        proposals = propose(view, self.crm, thresholds(self.settings.matching))
        return mailstore.sync_suggestions(session, thread.id, proposals)


def _keep_digest_mail(message: Message, parsed: ParsedEmail) -> None:
    """A digest, a confirmation or a rep's reply: kept with what reading the reply needs, and status
    "digest" so that no thread, match or proposal ever counts it."""
    message.status = "digest"
    message.subject = parsed.subject
    message.sender = parsed.sender.email if parsed.sender else None
    message.sent_at = db_time(parsed.sent_at)
    message.body_text = parsed.body_text


def _first_line(error: BaseException) -> str:
    """The server's message without its DETAIL, which may quote the whole row (the body, say)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
