"""The reply mailbox: reps' answers to their digests, read, applied and confirmed, each once.

The daemon captures `[digest] reply_mailbox` like any mailbox, and the pipeline keeps the replies as
mailsync's own mail (status "digest", see mailsync/mail/digest_mail.py). After each sync pass of that
mailbox, `ReplyInbox.process` reads every message of its INBOX not handled yet, from the archive:

    X-Mailsync-Digest or Message-ID digest.*   ignored: a digest or confirmation, not an answer
    Auto-Submitted (not "no"), bulk or list    ignored: never answer a machine (no mail loops)
    no digest token in In-Reply-To/References  refused, reason no_digest_token
    a token no digest of ours has              refused, reason unknown_digest
    From other than the digest's recipient     refused, reason not_recipient
    otherwise                                  the commands applied (mailsync/approval/replies.py)
                                               through decide(), and a confirmation sent

A refused or ignored message changes nothing and gets no answer: answering a forged From would send
mail to whoever it names. Handled means an event `reply_handled` in the event log, projected as an
AppliedEvent row, written once the confirmation is handed to SMTP. A crash or a failed send before that
handles the reply again at the next pass: its decisions are then "already decided" (by this reply) and
the confirmation says so, under the same Message-ID. This errs on the side of answering twice, which
mail clients collapse, over never answering.
"""

from __future__ import annotations

import email.utils
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select

from config.errors import ConfigError, DecisionError, DeliveryError, ParseError
from mailsync.approval import smtp
from mailsync.approval.decisions import DecisionRequest, DecisionResult, decide, decide_all
from mailsync.approval.replies import Plan, Step, parse_reply, plan
from mailsync.mail.digest_mail import digest_token, replied_tokens
from mailsync.mail.display import safe_line
from storage import models as m
from storage.eventlog import digest_of
from storage.records import normalise_email

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger as BoundLogger

    from config.settings import Settings
    from mailsync.mail.parse_worker import ParsePool, ParseWorker
    from storage.archive import BlobStore
    from storage.eventlog import EventLog
    from storage.records import ParsedEmail
    from storage.repo import Repo

log = structlog.get_logger()
HANDLED = "reply_handled"  # event kind: this message of the reply mailbox was handled
FOLDER = "INBOX"
MAX_UNCLEAR = 20  # lines quoted back as not understood; a client that did not quote sends hundreds
HELP = "Commands, one a line: approve 1 3 / reject 2 / approve all / edit 4 amount=50000 stage=proposal"
_MACHINE_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message of the reply mailbox's INBOX not handled yet."""

    fingerprint: str
    message_id: str
    blob: str

    @property
    def payload(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "message_id": self.message_id}


@dataclass(frozen=True, slots=True)
class SentDigest:
    """What a reply needs of the digest it answers."""

    token: str
    rep: str
    period: str
    items: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Applied:
    """What one reply did: decisions taken, decisions refused, and the plan's unclear lines."""

    done: tuple[tuple[Step, DecisionResult], ...]
    refused: tuple[tuple[Step, DecisionError], ...]
    plan: Plan


class ReplyInbox:
    """Handles the replies captured from `[digest] reply_mailbox`; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        repo: Repo,
        archive: BlobStore,
        parser: ParsePool | ParseWorker,
        events: EventLog,
    ) -> None:
        if settings.digest.reply_mailbox is None:
            msg = "ReplyInbox needs [digest] reply_mailbox"
            raise ConfigError(
                msg, fix="set [digest] reply_mailbox to the [[mailboxes]] name of the digest's inbox"
            )
        self.mailbox = settings.digest.reply_mailbox
        self.settings = settings
        self.repo = repo
        self.archive = archive
        self.parser = parser
        self.events = events

    def process(self, now: datetime | None = None) -> int:
        """Handle every message not handled yet; returns how many were. A failed confirmation is
        logged and its reply left for the next pass; StorageError and ArchiveError propagate."""
        handled = 0
        for waiting in self._waiting():
            handled += self._handle(waiting, now or datetime.now(UTC))
        return handled

    def _waiting(self) -> list[Waiting]:
        with self.repo.session() as session:
            done = set(session.scalars(select(m.AppliedEvent.digest).where(m.AppliedEvent.kind == HANDLED)))
            rows = session.execute(
                select(m.Message.id, m.Message.fingerprint, m.Message.message_id, m.Message.blob_sha256)
                .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
                .where(
                    m.Provenance.mailbox == self.mailbox,
                    m.Provenance.folder == FOLDER,
                    m.Message.status != "quarantined",
                )
                .distinct()
                .order_by(m.Message.id)
            ).all()
        found = (Waiting(fingerprint, message_id, blob) for _, fingerprint, message_id, blob in rows)
        return [w for w in found if digest_of(HANDLED, w.payload) not in done]

    def _handle(self, waiting: Waiting, now: datetime) -> bool:
        bound = log.bind(reply=waiting.message_id[:120])
        try:
            parsed = self.parser.parse(
                self.archive.get(waiting.blob), fingerprint=waiting.fingerprint, archive_key=waiting.blob
            )
        except ParseError as exc:  # the pipeline took it, so this is rare; still nothing to answer
            bound.warning("reply_refused", reason="unreadable", error=str(exc))
            self._mark(waiting, "mailsync")
            return True
        digest = self._screen(parsed, bound)
        if digest is None:
            self._mark(waiting, "mailsync")
            return True
        applied = self._apply(parsed, digest)
        message = confirmation(self.settings, digest, parsed, applied, now)
        try:
            smtp.send(self.settings.smtp, message)
        except (DeliveryError, ConfigError) as exc:
            bound.error("reply_confirmation_failed", error=str(exc), fix=exc.fix, retrying="next pass")
            return False
        self._mark(waiting, digest.rep)
        bound.info(
            "reply_processed",
            rep=digest.rep,
            digest=digest.token[:8],
            done=len(applied.done),
            refused=len(applied.refused),
            not_understood=len(applied.plan.unclear),
        )
        return True

    def _screen(self, parsed: ParsedEmail, bound: BoundLogger) -> SentDigest | None:
        """The digest this message validly answers, or None (logged) when it is not a rep's reply."""
        sender = parsed.sender.email if parsed.sender else ""
        if parsed.mailsync_digest or digest_token(parsed.message_id):
            bound.info("reply_ignored", reason="own_mail")
            return None
        if (parsed.auto_submitted or "no").lower() != "no" or parsed.precedence in _MACHINE_PRECEDENCE:
            bound.info("reply_ignored", reason="automated", sender=sender)
            return None
        tokens = replied_tokens(parsed)
        if not tokens:
            bound.warning("reply_refused", reason="no_digest_token", sender=sender)
            return None
        with self.repo.session() as session:
            sent = {
                r.token: r
                for r in session.scalars(select(m.DigestSend).where(m.DigestSend.token.in_(tokens)))
            }
            row = next((sent[t] for t in tokens if t in sent), None)
            if row is None:
                bound.warning("reply_refused", reason="unknown_digest", sender=sender)
                return None
            digest = SentDigest(row.token, row.rep, row.period, tuple(row.items or ()))
        if normalise_email(sender) != normalise_email(digest.rep):
            bound.warning("reply_refused", reason="not_recipient", sender=sender, rep=digest.rep)
            return None
        return digest

    def _apply(self, parsed: ParsedEmail, digest: SentDigest) -> Applied:
        """Every step of the reply's plan through decide(); "approve all" (or "reject all") together
        through decide_all()."""
        steps = plan(parse_reply(parsed.body_text), digest.items)
        done: list[tuple[Step, DecisionResult]] = []
        refused: list[tuple[Step, DecisionError]] = []
        every = [s for s in steps.steps if s.every]  # one verdict: the plan keeps the first "all"
        for step in steps.steps:
            if step in every:
                continue
            request = DecisionRequest(
                key=step.key,
                verdict=step.verdict,
                who=digest.rep,
                how="reply",
                edits=dict(step.edits),
                digest_token=digest.token,
            )
            try:
                done.append((step, decide(self.repo, self.events, request, stages=self.settings.stage_for)))
            except DecisionError as exc:
                refused.append((step, exc))
        if every:
            keys = [s.key for s in every]
            results = decide_all(
                self.repo, self.events, keys, digest.rep, "reply", digest.token, verdict=every[0].verdict
            )
            for step, result in zip(every, results, strict=True):
                if isinstance(result, DecisionError):
                    refused.append((step, result))
                else:
                    done.append((step, result))
        return Applied(tuple(sorted(done, key=_by_n)), tuple(sorted(refused, key=_by_n)), steps)

    def _mark(self, waiting: Waiting, actor: str) -> None:
        event = self.events.append(HANDLED, waiting.payload, actor=actor)
        with self.repo.session() as session:
            session.add(m.AppliedEvent(id=event.id, kind=HANDLED, digest=event.digest))


def _by_n(pair: tuple[Step, object]) -> int:
    return pair[0].n


def confirmation(
    settings: Settings, digest: SentDigest, parsed: ParsedEmail, applied: Applied, now: datetime
) -> EmailMessage:
    """The answer to a rep's reply: in its thread, marked auto-replied and as mailsync's own mail. Its
    Message-ID follows from the reply, so an answer sent again after a crash is collapsed with the first."""
    message = EmailMessage(policy=SMTP)  # refuses CR/LF in a header: nothing from mail starts a header
    domain = settings.smtp.sender_address.rpartition("@")[2]
    subject = safe_line(parsed.subject)[:200] or "CRM digest"
    message["From"] = settings.smtp.from_
    message["To"] = digest.rep
    message["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    message["Date"] = email.utils.format_datetime(now)
    message["Message-ID"] = (
        f"<confirm.{hashlib.sha256(parsed.fingerprint.encode()).hexdigest()[:32]}@{domain}>"
    )
    refs = [r for r in (*parsed.references[-10:], parsed.message_id) if r.isascii()]
    if parsed.message_id.isascii():
        message["In-Reply-To"] = f"<{parsed.message_id}>"
    if refs:
        message["References"] = " ".join(f"<{r}>" for r in refs)
    message["Auto-Submitted"] = "auto-replied"
    message["X-Mailsync-Digest"] = digest.token
    message.set_content(confirmation_text(digest, applied))
    return message


def confirmation_text(digest: SentDigest, applied: Applied) -> str:
    """What the reply did, plain text: done, already decided, not done, and every line not understood."""
    lines = [f"Your reply to the CRM digest of {digest.period}:"]
    decided = [(s, e) for s, e in applied.refused if e.reason == "decided"]
    failed = [(s, e) for s, e in applied.refused if e.reason != "decided"]
    if applied.done:
        lines += ["", "Done:"]
        lines += [f"  {step.n}. {safe_line(result.summary)}" for step, result in applied.done]
    if decided:
        lines += ["", "Already decided, nothing changed:"]
        lines += [f"  {step.n}. {safe_line(str(exc))}" for step, exc in decided]
    if failed:
        lines += ["", "Not done:"]
        lines += [f"  {step.n}. {_with_fix(exc)}" for step, exc in failed]
    unclear = applied.plan.unclear
    if unclear:
        lines += ["", "Not understood:"]
        lines += [f'  "{safe_line(u.line)[:200]}": {safe_line(u.why)}' for u in unclear[:MAX_UNCLEAR]]
        if len(unclear) > MAX_UNCLEAR:
            lines.append(f"  ... and {len(unclear) - MAX_UNCLEAR} more lines")
    if not (applied.done or applied.refused or unclear):
        lines += ["", "No command found in your reply; nothing changed."]
    lines += ["", HELP, ""]
    return "\n".join(lines)


def _with_fix(exc: DecisionError) -> str:
    """The refusal, with its fix where the rep can act on it by mail (a bad edit: how to write it)."""
    text = safe_line(str(exc))
    return f"{text} ({safe_line(exc.fix)})" if exc.fix and exc.reason == "bad_edit" else text
