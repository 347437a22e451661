"""Threads in the database: each processed message joins the thread its references (or, failing those,
its subject) lead to, kept incrementally; a whole batch at once in a handful of queries (assign_threads),
or one message at a time (assign_thread: the reference, and the careful path after a refusal).

JWZ's rules (mailsync/mail/thread.py) decide what a message refers to; this module finds and merges the
stored threads they lead to. Threads found by subject only join within SUBJECT_WINDOW.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy import func, select, union, update

from storage import models as m
from storage.in_lists import chunks

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy.orm import Session

SUBJECT_WINDOW = timedelta(days=45)


def assign_thread(
    session: Session,
    message: m.Message,
    *,
    refs: Sequence[str],
    key: str,
    subject_key: str,
    participants: Iterable[str],
    join_by_subject: bool,
) -> m.Thread:
    """Put `message` in its thread (see mailsync/mail/thread.py for the rules), merging threads it joins.
    Its references (`refs`) are recorded already (add_refs)."""
    # One query for the threads it joins: of its parents; of children that arrived first and siblings
    # that point at the same (perhaps missing) ancestors; of threads rooted at what it names.
    joined = union(
        select(m.Message.thread_id.label("id")).where(m.Message.message_id.in_(refs)),
        select(m.Message.thread_id)
        .join(m.MessageRef, m.MessageRef.message_pk == m.Message.id)
        .where(m.MessageRef.ref.in_([*refs, message.message_id])),
        select(m.Thread.id).where(m.Thread.key.in_([*refs, key, message.message_id])),
    ).subquery()
    ids: set[int] = {i for i in session.scalars(select(joined.c.id)) if i is not None}
    if not ids and join_by_subject and not refs:
        found = _thread_by_subject(session, subject_key, message, participants)
        if found is not None:
            ids.add(found)
    if ids:
        thread = _merge(session, sorted(ids))
    else:
        thread = m.Thread(key=key, subject=message.subject, subject_key=subject_key)
        session.add(thread)
        session.flush()
    message.thread_id = thread.id
    _widen(thread, message)
    return thread


def _widen(thread: m.Thread, message: m.Message) -> None:
    """The thread's span grows to the message's date; its subject is its earliest message's."""
    when = message.sent_at
    if when is None:
        return
    if thread.first_at is None or when < thread.first_at:
        thread.first_at = when
        thread.subject = message.subject or thread.subject
    if thread.last_at is None or when > thread.last_at:
        thread.last_at = when


def _thread_by_subject(
    session: Session, key: str, message: m.Message, participants: Iterable[str]
) -> int | None:
    query = select(m.Thread.id).where(m.Thread.subject_key == key)
    if message.sent_at is not None:
        query = query.where(
            m.Thread.last_at >= message.sent_at - SUBJECT_WINDOW,
            m.Thread.first_at <= message.sent_at + SUBJECT_WINDOW,
        )
    people = list(participants)
    for thread_id in session.scalars(query.order_by(m.Thread.last_at.desc()).limit(5)):
        shared = session.scalar(
            select(func.count())
            .select_from(m.Participant)
            .join(m.Message, m.Message.id == m.Participant.message_pk)
            .where(m.Message.thread_id == thread_id, m.Participant.email.in_(people))
        )
        if shared:
            return thread_id
    return None


def _merge(session: Session, ids: list[int]) -> m.Thread:
    """Fold every thread in `ids` into the oldest one; returns it."""
    keep = session.get_one(m.Thread, ids[0])
    for other_id in ids[1:]:
        other = session.get_one(m.Thread, other_id)
        session.execute(update(m.Message).where(m.Message.thread_id == other_id).values(thread_id=keep.id))
        session.execute(
            update(m.Suggestion).where(m.Suggestion.thread_id == other_id).values(thread_id=keep.id)
        )
        if keep.opportunity_id is None:
            keep.opportunity_id = other.opportunity_id
        for attr, pick in (("first_at", min), ("last_at", max)):
            values = [v for v in (getattr(keep, attr), getattr(other, attr)) if v is not None]
            setattr(keep, attr, pick(values) if values else None)
        session.delete(other)
    session.flush()
    return keep


class ThreadInput(NamedTuple):
    """What threading needs of one message (see assign_thread)."""

    message: m.Message
    refs: Sequence[str]
    key: str
    subject_key: str
    participants: Sequence[str]
    join_by_subject: bool


def assign_threads(session: Session, batch: Sequence[ThreadInput]) -> None:
    """assign_thread for each message of `batch` in order, with the same outcome, in a handful of queries.

    The messages' references are flushed already (add_refs). What the per-message queries would find is
    preloaded once: the messages named by, or referencing, any Message-ID the batch names (with their
    threads) and the threads keyed by one; then each message is threaded in Python, the maps following
    along (a reply later in the batch finds its parent threaded earlier in it; a merge moves every
    message of the folded thread). Only the subject fallback and merges of stored threads still query,
    with the session flushed first, exactly as one message at a time would see it."""
    if not batch:
        return
    names = sorted({n for item in batch for n in (*item.refs, item.message.message_id)})
    named: dict[str, set[int]] = {}  # Message-ID -> the messages carrying it
    referencing: dict[str, set[int]] = {}  # Message-ID -> the messages pointing at it
    thread_of: dict[int, int | None] = {}  # message -> its thread (stored id) as the batch goes
    for chunk in chunks(names):
        for pk, message_id, thread_id in session.execute(
            select(m.Message.id, m.Message.message_id, m.Message.thread_id).where(
                m.Message.message_id.in_(chunk)
            )
        ):
            named.setdefault(message_id, set()).add(pk)
            thread_of[pk] = thread_id
        for pk, ref, thread_id in session.execute(
            select(m.MessageRef.message_pk, m.MessageRef.ref, m.Message.thread_id)
            .join(m.Message, m.Message.id == m.MessageRef.message_pk)
            .where(m.MessageRef.ref.in_(chunk))
        ):
            referencing.setdefault(ref, set()).add(pk)
            thread_of[pk] = thread_id
    keyed: dict[str, m.Thread] = {}
    for chunk in chunks(names):
        keyed.update((t.key, t) for t in session.scalars(select(m.Thread).where(m.Thread.key.in_(chunk))))
    stored = {t for t in thread_of.values() if t is not None} - {t.id for t in keyed.values()}
    threads: dict[int, m.Thread] = {t.id: t for t in keyed.values()}
    for ids in chunks(sorted(stored)):
        threads.update((t.id, t) for t in session.scalars(select(m.Thread).where(m.Thread.id.in_(ids))))
    for item in batch:
        thread_of[item.message.id] = item.message.thread_id  # None, or the one a replay kept
    state = _Threading(session, thread_of, threads, keyed)
    for item in batch:
        state.assign(item, named, referencing)
    state.settle()


class _Threading:
    """The batch's threads in Python. A new thread gets its id at the next flush; a merged one is gone,
    its messages moved to the thread it was folded into."""

    def __init__(
        self,
        session: Session,
        stored_of: dict[int, int | None],
        threads: dict[int, m.Thread],
        keyed: dict[str, m.Thread],
    ) -> None:
        self.session = session
        self.stored_of = stored_of  # message -> its thread id in the database before the batch
        self.threads = threads  # thread id -> row, for every thread those name
        self.keyed = keyed  # key -> live thread
        self.folded: dict[int, int] = {}  # thread id merged away -> the one it went into
        self.member: dict[int, m.Thread] = {}  # message -> thread, for the batch's messages threaded
        self.messages: dict[int, m.Message] = {}
        self.created: list[m.Thread] = []  # new threads, in creation order (so in id order)

    def thread_of(self, pk: int) -> m.Thread | None:
        found = self.member.get(pk)
        if found is not None:
            return found
        stored = self.stored_of.get(pk)
        while stored is not None and stored in self.folded:
            stored = self.folded[stored]
        return None if stored is None else self.threads[stored]

    def assign(self, item: ThreadInput, named: dict[str, set[int]], referencing: dict[str, set[int]]) -> None:
        message, refs = item.message, item.refs
        pks = {pk for ref in refs for pk in named.get(ref, ())}
        pks |= {pk for ref in (*refs, message.message_id) for pk in referencing.get(ref, ())}
        joined = {id(t): t for t in map(self.thread_of, pks) if t is not None}
        for name in (*refs, item.key, message.message_id):
            if name in self.keyed:
                joined.setdefault(id(self.keyed[name]), self.keyed[name])
        if not joined and item.join_by_subject and not refs:
            self.settle()  # the query sees the batch so far, as one message at a time would
            thread_id = _thread_by_subject(self.session, item.subject_key, message, item.participants)
            if thread_id is not None:
                found = self.threads.setdefault(thread_id, self.session.get_one(m.Thread, thread_id))
                joined[id(found)] = found
        if joined:
            thread = self._merge(sorted(joined.values(), key=self._age))
        else:
            thread = m.Thread(key=item.key, subject=message.subject, subject_key=item.subject_key)
            self.session.add(thread)
            self.created.append(thread)
            self.keyed[item.key] = thread
        self.member[message.id] = thread
        self.messages[message.id] = message
        named.setdefault(message.message_id, set()).add(message.id)
        for ref in refs:
            referencing.setdefault(ref, set()).add(message.id)
        _widen(thread, message)

    def _age(self, thread: m.Thread) -> tuple[int, int]:
        """Thread id order: stored threads by id, then the new ones as created (they get ids so)."""
        if thread.id is not None:
            return (0, thread.id)
        return (1, next(i for i, t in enumerate(self.created) if t is thread))

    def _merge(self, joined: list[m.Thread]) -> m.Thread:
        """As _merge: every thread folded into the oldest one."""
        keep = joined[0]
        for other in joined[1:]:
            if other.id is not None:  # so is keep's, being older: the rows move in the database
                self.session.execute(
                    update(m.Message).where(m.Message.thread_id == other.id).values(thread_id=keep.id)
                )
                self.session.execute(
                    update(m.Suggestion).where(m.Suggestion.thread_id == other.id).values(thread_id=keep.id)
                )
                self.folded[other.id] = keep.id
                self.threads.setdefault(keep.id, keep)
            if keep.opportunity_id is None:
                keep.opportunity_id = other.opportunity_id
            for attr, pick in (("first_at", min), ("last_at", max)):
                values = [v for v in (getattr(keep, attr), getattr(other, attr)) if v is not None]
                setattr(keep, attr, pick(values) if values else None)
            for pk, thread in self.member.items():
                if thread is other:
                    self.member[pk] = keep
            if self.keyed.get(other.key) is other:
                del self.keyed[other.key]
            if other.id is None:
                self.created.remove(other)
                self.session.expunge(other)
            else:
                self.session.delete(other)
        return keep

    def settle(self) -> None:
        """Write what the batch decided so far: new threads (their ids), the messages' threads."""
        self.session.flush()
        for pk, thread in self.member.items():
            self.messages[pk].thread_id = thread.id
        self.created.clear()
        self.session.flush()
