"""The outbound webhook: captured activity and decisions POSTed to another CRM, signed, retried.

Each delivery is one POST of a JSON body

    {"delivery": 17, "kind": "activities", "records": [...]}

whose records are exactly the rows `mailsync export --format jsonl` writes for that table. Headers:

    X-Mailsync-Delivery: 17                 the same on every retry: the receiver's idempotency key
    X-Mailsync-Timestamp: 1764460800        seconds since the epoch, when this attempt was signed
    X-Mailsync-Signature: sha256=<hex>      HMAC-SHA256(secret, timestamp + "." + body)

A receiver recomputes the signature over the raw body, compares in constant time and refuses old
timestamps. A 2xx answer delivers; anything else (status, timeout, refused connection) is retried after
`retry_after_seconds`, doubling up to `max_delay_seconds` (a longer Retry-After from the receiver
wins), and marked failed after `max_attempts`; `mailsync webhook retry` queues failed ones again.
Deliveries of one kind go out in order: while one waits for a retry, the later ones wait too
(storage/outbox.py).
Records are built when sent, so a person forgotten meanwhile is never sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from mailsync.admin import export_rows
from storage import outbox
from storage.models import WebhookDelivery, utcnow

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from sqlalchemy.orm import Session

    from config.settings import WebhookSettings
    from storage.repo import Repo

log = structlog.get_logger()
USER_AGENT = "mailsync-webhook/1"
_RANGES = {"activities": export_rows.activities_between, "decisions": export_rows.decisions_between}


@dataclass
class WebhookReport:
    queued: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "delivered": self.delivered,
            "retrying": self.retrying,
            "failed": self.failed,
            "attempts": self.attempts,
        }


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def body_of(session: Session, kind: str, delivery_id: int, first: int, last: int) -> bytes:
    records = _RANGES[kind](session, export_rows.References(session), first, last)
    payload = {"delivery": delivery_id, "kind": kind, "records": records}
    return json.dumps(
        payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    ).encode()


def retry_delay(settings: WebhookSettings, attempts_before: int, retry_after: str | None) -> timedelta:
    """Doubling delay from `retry_after_seconds`, capped; a longer numeric Retry-After wins."""
    delay = min(settings.max_delay_seconds, settings.retry_after_seconds * 2**attempts_before)
    if retry_after and retry_after.strip().isdigit():
        delay = max(delay, min(float(retry_after), settings.max_delay_seconds))
    return timedelta(seconds=delay)


def deliver(
    repo: Repo,
    settings: WebhookSettings,
    *,
    now: Callable[[], datetime] = utcnow,
    transport: httpx.BaseTransport | None = None,
) -> WebhookReport:
    """Queue what is new, then POST every delivery that is due; returns what happened."""
    if not settings.url:
        return WebhookReport()
    with repo.session() as session:
        queued = sum(outbox.queue(session, kind, settings.batch, now()) for kind in settings.send)
    client = httpx.Client(timeout=settings.timeout_seconds, transport=transport, follow_redirects=False)
    with client:
        sender = _Sender(repo, settings, client, settings.secret.read("webhook").encode(), now)
        sender.report.queued = queued
        while True:
            with repo.session() as session:
                due = [d.id for d in outbox.due(session, now())]
            sent = [sender.attempt(delivery_id) for delivery_id in due]
            if not any(status == outbox.DELIVERED for status in sent):
                return sender.report


@dataclass
class _Sender:
    repo: Repo
    settings: WebhookSettings
    client: httpx.Client
    secret: bytes
    now: Callable[[], datetime]
    report: WebhookReport = field(default_factory=WebhookReport)

    def attempt(self, delivery_id: int) -> str | None:
        """One POST of one delivery, logged; its new status, or None when another process holds it."""
        settings = self.settings
        with self.repo.session() as session:
            delivery = session.get_one(WebhookDelivery, delivery_id)
            kind, attempts_before = delivery.kind, delivery.attempts
            if not outbox.claim(
                session, delivery, self.now() + timedelta(seconds=settings.timeout_seconds * 2)
            ):
                return None
            body = body_of(session, kind, delivery.id, delivery.first_id, delivery.last_id)
        stamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Mailsync-Delivery": str(delivery_id),
            "X-Mailsync-Timestamp": str(stamp),
            "X-Mailsync-Signature": signature(self.secret, stamp, body),
        }
        started = time.monotonic()
        status_code: int | None = None
        retry_after: str | None = None
        try:
            response = self.client.post(str(settings.url), content=body, headers=headers)
            status_code = response.status_code
            error = None if response.is_success else f"HTTP {status_code}"
            retry_after = response.headers.get("Retry-After")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration_ms = int((time.monotonic() - started) * 1000)
        with self.repo.session() as session:
            status = outbox.record_attempt(
                session, delivery_id, at=self.now(), status_code=status_code, error=error,
                duration_ms=duration_ms, retry_in=retry_delay(settings, attempts_before, retry_after),
                max_attempts=settings.max_attempts,
            )  # fmt: skip
        self._report(
            {
                "delivery": delivery_id,
                "kind": kind,
                "status_code": status_code,
                "error": error,
                "result": status,
            },
            attempts=attempts_before + 1,
            ms=duration_ms,
        )
        return status

    def _report(self, attempt: dict[str, Any], *, attempts: int, ms: int) -> None:
        report = self.report
        report.attempts.append(attempt)
        status, fields = attempt["result"], {"delivery": attempt["delivery"], "kind": attempt["kind"]}
        if status == outbox.DELIVERED:
            report.delivered += 1
            log.info("webhook_delivered", **fields, status_code=attempt["status_code"], ms=ms)
        elif status == outbox.FAILED:
            report.failed += 1
            log.error("webhook_failed", **fields, error=attempt["error"], attempts=attempts)
        else:
            report.retrying += 1
            log.warning("webhook_retrying", **fields, error=attempt["error"], attempts=attempts)
