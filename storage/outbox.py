"""The webhook's outbox: which records still have to go out, and the delivery log.

A delivery covers a range of source ids of one kind (messages for activities, decisions), fixed when it
is queued: ids only grow, and the next range starts after the last one queued, so every record is
queued once. Messages are queued only below the processing queue's low-water mark (the oldest message
still pending): a message processed late is never skipped by a range that went out before it.
A delivery is claimed by moving its `next_attempt_at` past the attempt's time, in one conditional
UPDATE, so two processes never POST the same delivery at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from storage import models as m

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
KINDS = ("activities", "decisions")


def _queued_up_to(session: Session, kind: str) -> int:
    return int(
        session.scalar(select(func.max(m.WebhookDelivery.last_id)).where(m.WebhookDelivery.kind == kind)) or 0
    )


def _ready_ids(session: Session, kind: str, after: int, limit: int) -> list[int]:
    if kind == "decisions":
        query = select(m.Decision.id).where(m.Decision.id > after)
        return list(session.scalars(query.order_by(m.Decision.id).limit(limit)))
    message = m.Message
    oldest_pending = session.scalar(select(func.min(message.id)).where(message.status == "pending"))
    query = select(message.id).where(
        message.id > after, message.status == "parsed", message.thread_id.is_not(None)
    )
    if oldest_pending is not None:
        query = query.where(message.id < oldest_pending)
    return list(session.scalars(query.order_by(message.id).limit(limit)))


def queue(session: Session, kind: str, batch: int, now: datetime) -> int:
    """Queue the records of `kind` not queued yet, `batch` per delivery; returns deliveries queued.
    Two processes queuing at once: the unique (kind, first_id) lets one win, the other queues nothing."""
    queued = 0
    after = _queued_up_to(session, kind)
    while ids := _ready_ids(session, kind, after, batch):
        delivery = m.WebhookDelivery(
            kind=kind, first_id=ids[0], last_id=ids[-1], records=len(ids), status=PENDING,
            attempts=0, next_attempt_at=now, created_at=now,
        )  # fmt: skip
        try:
            with session.begin_nested():
                session.add(delivery)
        except IntegrityError:
            return queued
        queued += 1
        after = ids[-1]
    return queued


def due(session: Session, now: datetime) -> list[m.WebhookDelivery]:
    """Of each kind, the oldest pending delivery, if its time has come: deliveries of one kind go out in
    order, so a later one waits while an earlier one waits for its retry."""
    delivery = m.WebhookDelivery
    heads = select(func.min(delivery.id)).where(delivery.status == PENDING).group_by(delivery.kind)
    query = (
        select(delivery).where(delivery.id.in_(heads), delivery.next_attempt_at <= now).order_by(delivery.id)
    )
    return list(session.scalars(query))


def claim(session: Session, delivery: m.WebhookDelivery, until: datetime) -> bool:
    """Hold `delivery` until `until` (its attempt's deadline); False when another process has it."""
    taken = session.execute(
        update(m.WebhookDelivery)
        .where(
            m.WebhookDelivery.id == delivery.id,
            m.WebhookDelivery.status == PENDING,
            m.WebhookDelivery.next_attempt_at == delivery.next_attempt_at,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def record_attempt(
    session: Session,
    delivery_id: int,
    *,
    at: datetime,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    retry_in: timedelta | None,
    max_attempts: int,
) -> str:
    """Log one attempt and move the delivery on: delivered (no error), retried after `retry_in`, or
    failed after `max_attempts`. Returns the delivery's new status."""
    session.add(
        m.WebhookAttempt(
            delivery_id=delivery_id, at=at, status_code=status_code, error=error, duration_ms=duration_ms
        )
    )
    delivery = session.get_one(m.WebhookDelivery, delivery_id, populate_existing=True)
    delivery.attempts += 1
    if error is None:
        delivery.status, delivery.delivered_at, delivery.last_error = DELIVERED, at, None
    else:
        delivery.last_error = error
        if delivery.attempts >= max_attempts or retry_in is None:
            delivery.status = FAILED
        else:
            delivery.next_attempt_at = at + retry_in
    return delivery.status


def retry_failed(session: Session, now: datetime) -> int:
    """Put every failed delivery back in the queue (after the receiver is fixed); returns how many."""
    result = session.execute(
        update(m.WebhookDelivery)
        .where(m.WebhookDelivery.status == FAILED)
        .values(status=PENDING, attempts=0, next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def counts(session: Session) -> dict[str, int]:
    """Deliveries by status."""
    rows = session.execute(select(m.WebhookDelivery.status, func.count()).group_by(m.WebhookDelivery.status))
    found = {status: int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in (PENDING, DELIVERED, FAILED)}


def recent_attempts(session: Session, limit: int) -> list[tuple[m.WebhookAttempt, m.WebhookDelivery]]:
    query = (
        select(m.WebhookAttempt, m.WebhookDelivery)
        .join(m.WebhookDelivery, m.WebhookDelivery.id == m.WebhookAttempt.delivery_id)
        .order_by(m.WebhookAttempt.id.desc())
        .limit(limit)
    )
    return [(attempt, delivery) for attempt, delivery in session.execute(query)]
