"""Sending rep digests: when each rep is due, what the message looks like, and never twice a period.

A rep's digest belongs to a period: the rep-local date of their send slot (`reps.timezone` or
`[digest] timezone`, `reps.digest_at` or `[digest] send_at`). A rep is due once their local time has
passed the slot; inactive reps (`active = false`) and paused reps (`paused_at` set) get nothing, and
neither does a rep with nothing new: no open proposal that their last sent digest did not show.

Never twice a period, across restarts and crashes, by one `digest_send` row per (rep, kind, period):

    compose (fresh token)  ->  row `sending` committed  ->  the exact message kept in the outbox
      ->  SMTP  ->  [after_smtp]  ->  row `sent` committed  ->  outbox copy removed

A `sent` row ends the period. A `sending` row means the process died, or the relay refused, after
the row was written; the digest is sent again: the outbox copy if there is one (the same bytes: same
Message-ID, token, numbering and links), else a fresh rendering with the same token and Message-ID
(no copy means SMTP never had it). This errs on the side of a duplicate, never a lost digest: a kill
between the relay's "250 OK" and the `sent` commit (milliseconds) sends the digest a second time. A
rep who misses a digest misses every proposal in it until the next one, and nobody notices; a
duplicate is visible and harmless (the same numbers and links name the same proposals, and one
approved from either copy shows as decided from the other), and mail clients that deduplicate by
Message-ID (Gmail) show it once. Marking `sent` before SMTP would instead lose the digest silently on
the same kill.

One sender at a time per rep, across processes (the daemon's digest job, `mailsync digest --send` beside
it, several daemons): all of the above runs under the lease `digest:<kind>:<rep>` (storage/leases.py),
taken before the row is looked at and given back once it is `sent` (or the send failed). The row alone
cannot tell a digest a dead process left `sending` from one another process is sending right now, so
without the lease two processes finding the same `sending` row would both resend it. A process that
finds the lease held reports `in_progress` and sends nothing. A lease row with an expiry, not a lock on
the `digest_send` row: it is held across SMTP, outside any transaction, and works the same on SQLite. A
sender killed on this host frees it at once (its pid is gone), one on another host when it expires
(SEND_LEASE). Per rep, not per period: the lease table keeps one row per rep. The unique (rep, kind,
period) row stays the last guard: a sender whose lease ran out (paused past it) that finds another's
row committed first reports `in_progress` too.
"""

from __future__ import annotations

import email.utils
import secrets
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from config.errors import CaptureError, ConfigError, DecisionError, DeliveryError, StorageError
from mailsync import faults
from mailsync.approval.digest import Digest, build_digest
from mailsync.approval.manager import leads, manager_report, render_manager_digest, with_links
from mailsync.approval.outbox import Outbox
from mailsync.approval.smtp import POLICY, send
from mailsync.mail.display import safe_line
from storage import models as m
from storage.leases import holder_id, release, take

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from config.settings import DigestSettings, Settings, SmtpSettings
    from mailsync.approval.digest import RepView
    from mailsync.approval.links import LinkSigner
    from storage.repo import Repo

log = structlog.get_logger()
KIND = "rep"
MANAGER = "manager"  # one per team lead a period: mailsync/approval/manager.py
LEASE = "digest:"  # + kind:rep: who sends that rep's digest now (see the module doc)
# Seconds a sender holds a rep's lease: far longer than a send (each SMTP step is bounded by [smtp]
# timeout), so no other process resends a digest still being sent; a sender that died on another host
# holds it that long.
SEND_LEASE = 300.0
UNKNOWN_REP_FIX = "check the address, or add the rep to reps.csv and run `mailsync crm import`"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one rep's digest for one period."""

    rep: str
    period: str
    status: Literal["sent", "skipped", "failed"]
    reason: str = ""  # skipped: already_sent, nothing_new, in_progress, paused, inactive; failed: the error
    items: int = 0
    message_id: str = ""
    fix: str | None = None
    kind: str = "rep"  # rep | manager


@dataclass(frozen=True, slots=True)
class Recipient:
    """A rep as the sender needs them: read in one session, used after it."""

    email: str
    name: str
    timezone: str | None
    digest_at: str | None
    locale: str | None
    active: bool
    paused: bool

    @classmethod
    def of(cls, row: m.Rep) -> Recipient:
        paused = row.paused_at is not None
        return cls(row.email, row.name, row.timezone, row.digest_at, row.locale, row.active, paused)

    @classmethod
    def outside(cls, email: str) -> Recipient:
        """A team lead who is not a rep themselves: the [digest] defaults."""
        return cls(email, "", None, None, None, active=True, paused=False)


def slot(rep: Recipient, digest: DigestSettings, now: datetime) -> tuple[str, bool]:
    """(period, due) of `rep` at `now`: their local date, and whether their send time has passed."""
    at = rep.digest_at or digest.send_at
    local = local_time(rep, digest, now)
    try:
        send_at = datetime.strptime(at, "%H:%M").time()  # noqa: DTZ007 - a wall-clock time of day
    except ValueError as exc:
        raise ConfigError(
            f"rep {rep.email}: digest_at {at!r} is not a time of day HH:MM",
            fix="correct the rep's digest_at in reps.csv and run `mailsync crm import`",
        ) from exc
    # Wall-clock comparison: on a DST change the slot neither vanishes nor comes twice (the row stops it).
    return local.date().isoformat(), local.time() >= send_at


def local_time(rep: Recipient, digest: DigestSettings, now: datetime) -> datetime:
    """`now` in the rep's time zone (theirs, else the [digest] default)."""
    zone = rep.timezone or digest.timezone
    try:
        return now.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"rep {rep.email}: timezone {zone!r} is not an IANA time zone name",
            fix="correct the rep's timezone in reps.csv (e.g. Europe/Berlin) and run `mailsync crm import`",
        ) from exc


def compose(
    smtp: SmtpSettings, rep: RepView, digest: Digest, *, token: str, unsubscribe: str, now: datetime
) -> EmailMessage:
    """The digest as a multipart/alternative message (plain text, then HTML) with its identity headers.

    The policy refuses CR/LF in a header value, and the subject and name pass through `safe_line`
    first, so text from mail can never add a header."""
    message = EmailMessage(policy=POLICY)
    message["From"] = smtp.from_
    message["To"] = email.utils.formataddr((safe_line(rep.name), rep.email))
    message["Subject"] = safe_line(digest.subject)
    message["Date"] = email.utils.format_datetime(now.astimezone(UTC))
    message["Message-ID"] = message_id(smtp, token)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    message["X-Auto-Response-Suppress"] = "All"  # Exchange's word for the same
    message["X-Mailsync-Digest"] = token
    # Set whole, so it stays one line however long the signed URL (ours: no CR/LF can be in it).
    message.set_raw("List-Unsubscribe", f"<{unsubscribe}>")
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058: a POST, never a GET
    message.set_content(digest.text)
    message.add_alternative(digest.html, subtype="html")
    return message


def message_id(smtp: SmtpSettings, token: str) -> str:
    """`<digest.{token}@{domain of [smtp] from}>`: how replies find their digest."""
    return f"<digest.{token}@{smtp.sender_address.rpartition('@')[2]}>"


class DigestSender:
    """Sends rep digests, each (rep, period) at most once: the daemon's digest job and `digest --send`."""

    def __init__(self, settings: Settings, repo: Repo, links: LinkSigner, holder: str | None = None) -> None:
        self.settings = settings
        self.repo = repo
        self.links = links
        self.holder = holder or holder_id()  # this sender's name on the reps' leases
        self.outbox = Outbox(settings.archive_dir / "outbox")
        self._done: set[tuple[str, str, str]] = set()  # (kind, rep, period) sent, or found with nothing new
        self._failing: dict[str, str] = {}  # rep -> the error logged when their sending began to fail

    def send_due(self, now: datetime | None = None) -> list[Outcome]:
        """Send every due rep's digest for their current period; one rep failing never stops the rest.

        A period sent, or found with nothing new, is not looked at again by this sender (the daemon
        keeps one; after a restart it looks once more): the digest is a daily summary, not a feed."""
        now = now or datetime.now(UTC)
        with self.repo.session() as session:
            rows = session.scalars(
                select(m.Rep).where(m.Rep.active, m.Rep.paused_at.is_(None)).order_by(m.Rep.email)
            )
            reps = [Recipient.of(row) for row in rows]
            known = {r.email: r for r in reps}
            every = {row.email: row for row in session.scalars(select(m.Rep))}
            # A lead gets the manager digest in their own slot, or the default one if they are not a rep.
            managers = [known.get(lead) or Recipient.outside(lead) for lead in leads(session)
                        if lead not in every or lead in known]  # fmt: skip
        outcomes = []
        for kind, recipients in ((KIND, reps), (MANAGER, managers)):
            for rep in recipients:
                try:
                    period, due = slot(rep, self.settings.digest, now)
                except ConfigError as exc:
                    outcomes.append(self._failed(rep.email, "", exc))
                    continue
                if due and (kind, rep.email, period) not in self._done:
                    outcomes.append(self._send(rep, period, now, kind))
        return outcomes

    def send_now(self, rep_email: str, now: datetime | None = None) -> Outcome:
        """Send the rep's digest for their current period now, due or not (still never twice)."""
        now = now or datetime.now(UTC)
        with self.repo.session() as session:
            row = session.scalar(select(m.Rep).where(func.lower(m.Rep.email) == rep_email.strip().lower()))
            if row is None:
                raise DecisionError(f"no rep {rep_email} in the CRM", reason="unknown", fix=UNKNOWN_REP_FIX)
            rep = Recipient.of(row)
        period, _due = slot(rep, self.settings.digest, now)
        if not rep.active or rep.paused:
            reason = "paused" if rep.active else "inactive"
            log.info("digest_skipped", rep=rep.email, period=period, reason=reason)
            return Outcome(rep.email, period, "skipped", reason)
        return self._send(rep, period, now)

    def _send(self, rep: Recipient, period: str, now: datetime, kind: str = KIND) -> Outcome:
        try:
            outcome = replace(self._leased(rep, period, now, kind), kind=kind)
        except CaptureError as exc:
            return replace(self._failed(rep.email, period, exc), kind=kind)
        if outcome.status == "sent" or outcome.reason in {"already_sent", "nothing_new"}:
            self._done.add((kind, rep.email, period))
        if self._failing.pop(rep.email, None) is not None:
            log.info("digest_send_recovered", rep=rep.email, period=period)
        return outcome

    def _leased(self, rep: Recipient, period: str, now: datetime, kind: str) -> Outcome:
        """_deliver while holding the rep's lease; `in_progress` while another sender holds it."""
        name = f"{LEASE}{kind}:{rep.email}"
        with self.repo.session() as session:
            lease = take(session, name, self.holder, max(SEND_LEASE, 10 * self.settings.smtp.timeout))
            other = None if lease else session.scalar(select(m.Lease.holder).where(m.Lease.name == name))
        if lease is None:
            log.info(
                "digest_skipped", rep=rep.email, kind=kind, period=period, reason="in_progress", holder=other
            )
            return Outcome(rep.email, period, "skipped", "in_progress")
        try:
            return self._deliver(rep, period, now, kind)
        finally:
            with suppress(StorageError), self.repo.session() as session:  # else it expires by itself
                release(session, name, self.holder)

    def _deliver(self, rep: Recipient, period: str, now: datetime, kind: str) -> Outcome:
        with self.repo.session() as session:
            row = session.scalar(
                select(m.DigestSend).where(
                    m.DigestSend.rep == rep.email, m.DigestSend.kind == kind, m.DigestSend.period == period
                )
            )
            if row is not None and row.status == "sent":
                self.outbox.remove(row.token)  # left by a kill between the `sent` commit and its removal
                return Outcome(rep.email, period, "skipped", "already_sent", len(row.items), row.message_id)
            if row is None and kind == KIND and not _anything_new(session, rep.email):
                log.info("digest_skipped", rep=rep.email, period=period, reason="nothing_new")
                return Outcome(rep.email, period, "skipped", "nothing_new")
        if row is None:
            token = secrets.token_hex(16)
            message, items = self._compose(rep, token, now, kind)
            try:
                with self.repo.session() as session:
                    session.add(_sending(token, rep.email, period, message, items, kind=kind))
            except IntegrityError:  # a sender whose lease ran out claimed this period first (module doc)
                return Outcome(rep.email, period, "skipped", "in_progress")
            self.outbox.put(token, message)
        else:
            token, message = row.token, self._unsent(rep, row, now, kind)
        send(self.settings.smtp, message)
        faults.point("after_smtp")
        with self.repo.session() as session:
            sent = session.scalars(select(m.DigestSend).where(m.DigestSend.token == token)).one()
            sent.status, sent.sent_at = "sent", m.utcnow()
            count = len(sent.items)
        self.outbox.remove(token)
        log.info(
            "digest_sent",
            rep=rep.email,
            kind=kind,
            period=period,
            items=count,
            message_id=message["Message-ID"],
        )
        return Outcome(rep.email, period, "sent", "", count, message["Message-ID"])

    def _unsent(self, rep: Recipient, row: m.DigestSend, now: datetime, kind: str) -> EmailMessage:
        """The message of a `sending` row: its outbox copy, or (none: SMTP never had it) a new rendering."""
        kept = self.outbox.get(row.token)
        if kept is not None:
            # Loud the first time (a crash, or a new refusal); while the relay keeps refusing, _failed speaks.
            (log.debug if rep.email in self._failing else log.warning)(
                "digest_resending",
                rep=rep.email,
                period=row.period,
                message_id=row.message_id,
                why="its sending was not recorded: killed after SMTP, or the relay refused it",
            )
            return kept
        message, items = self._compose(rep, row.token, now, kind)
        with self.repo.session() as session:
            session.scalars(select(m.DigestSend).where(m.DigestSend.id == row.id)).one().items = items
        self.outbox.put(row.token, message)
        return message

    def _compose(
        self, rep: Recipient, token: str, now: datetime, kind: str
    ) -> tuple[EmailMessage, list[Any]]:
        digest_settings = self.settings.digest
        with self.repo.session() as session:
            if kind == MANAGER:
                digest = self._manager_digest(session, rep, token, now)
            else:
                digest = build_digest(
                    session, rep, now=local_time(rep, digest_settings, now), links=self.links, token=token,
                    locale=rep.locale or digest_settings.locale, max_items=digest_settings.max_items,
                )  # fmt: skip
        unsubscribe = self.links.url("unsubscribe", rep.email, digest_token=token)
        message = compose(self.settings.smtp, rep, digest, token=token, unsubscribe=unsubscribe, now=now)
        return message, [{"n": entry.n, "key": entry.key} for entry in digest.items]

    def _manager_digest(self, session: Session, lead: Recipient, token: str, now: datetime) -> Digest:
        """A team lead's report as a digest. It numbers nothing, so a reply to it decides nothing; a departed
        rep's proposals carry links signed for the lead."""
        at = now.astimezone(UTC).replace(tzinfo=None)
        digest = self.settings.digest
        report = manager_report(
            session,
            lead.email,
            now=at,
            stale_after_days=digest.stale_after_days,
            locale=lead.locale or digest.locale,
        )
        html, text = render_manager_digest(with_links(report, self.links, token), now=at)
        return Digest(
            subject=f"CRM digest: your team's pipeline, {at:%a %b %d}", html=html, text=text, items=()
        )

    def _failed(self, rep: str, period: str, exc: CaptureError) -> Outcome:
        """One error line when a rep's sending starts failing (or fails differently); then quieter."""
        if self._failing.get(rep) == str(exc):
            log.debug("digest_send_failed", rep=rep, period=period, error=str(exc))
        else:
            self._failing[rep] = str(exc)
            retrying = "every minute" if isinstance(exc, DeliveryError) else "once fixed"
            log.error(
                "digest_send_failed", rep=rep, period=period, error=str(exc), fix=exc.fix, retrying=retrying
            )
        return Outcome(rep, period, "failed", str(exc), fix=exc.fix)


def _sending(
    token: str, rep: str, period: str, message: EmailMessage, items: list[Any], *, kind: str
) -> m.DigestSend:
    return m.DigestSend(
        token=token, rep=rep, kind=kind, period=period, message_id=message["Message-ID"], status="sending",
        items=items,
    )  # fmt: skip


def _anything_new(session: Session, rep: str) -> bool:
    """Whether the rep has an open proposal that their last sent digest did not show."""
    open_keys = set(
        session.scalars(
            select(m.Suggestion.key).where(
                m.Suggestion.status == "open", func.lower(m.Suggestion.owner_rep) == rep.lower()
            )
        )
    )
    last = session.scalars(
        select(m.DigestSend.items)
        .where(m.DigestSend.rep == rep, m.DigestSend.kind == KIND, m.DigestSend.status == "sent")
        .order_by(m.DigestSend.sent_at.desc(), m.DigestSend.id.desc())
        .limit(1)
    ).first()
    return bool(open_keys - {item["key"] for item in last or ()})
