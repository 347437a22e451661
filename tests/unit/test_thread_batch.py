"""Threading a batch at once (threads.assign_threads) gives exactly what threading its messages one at a
time (assign_thread) gives: the same threads, keys, subjects, dates and ids, and the same merges.
Both run on real migrated SQLite databases, batch after batch, on hand-made shapes and random ones."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from mailsync.mail import thread as rules
from storage import mailstore, threads
from storage import models as m
from storage.repo import Repo

if TYPE_CHECKING:
    from pathlib import Path

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).replace(tzinfo=None)  # naive UTC, as stored


@dataclass(frozen=True)
class Mail:
    mid: str
    refs: tuple[str, ...] = ()
    subject: str = "Pricing for 40 seats"
    day: int = 0
    people: tuple[str, ...] = ("rachel@acme.example", "dana@northwind.example")


def _write(repo: Repo, batches: list[list[Mail]], *, batch_mode: bool) -> None:
    count = 0
    for batch in batches:
        with repo.session() as s:
            items = []
            for mail in batch:
                count += 1  # two mails may share a Message-ID, never a fingerprint
                sha = hashlib.sha256(f"{count}:{mail.mid}".encode()).hexdigest()
                s.add(m.Blob(sha256=sha, size=1))
                message = m.Message(
                    fingerprint=sha,
                    blob_sha256=sha,
                    message_id=mail.mid,
                    status="pending",
                    subject=mail.subject,
                    sent_at=START + timedelta(days=mail.day),
                )
                s.add(message)
                s.flush()
                for role, email in zip(("from", "to", "cc"), mail.people, strict=False):
                    s.add(m.Participant(message_pk=message.id, role=role, email=email))
                refs = tuple(r for r in dict.fromkeys(mail.refs) if r != mail.mid)
                mailstore.add_refs(s, message, refs)
                items.append(
                    threads.ThreadInput(
                        message,
                        refs=refs,
                        key=refs[0] if refs else mail.mid,
                        subject_key=rules.subject_key(mail.subject),
                        participants=list(mail.people),
                        join_by_subject=not refs
                        and (rules.is_reply_subject(mail.subject) or rules.is_forward_subject(mail.subject))
                        and len(rules.subject_key(mail.subject)) >= 4,
                    )
                )
            s.flush()
            if batch_mode:
                threads.assign_threads(s, items)
            else:
                for item in items:
                    threads.assign_thread(s, **item._asdict())
            for item in items:
                item.message.status = "parsed"


def _state(repo: Repo) -> tuple[object, ...]:
    """Every message's thread and every thread, a thread id shown as its rank among the threads: a
    thread made and merged away within a batch never gets a row, so later ids may be lower, never in
    another order."""
    with repo.session() as s:
        threads = list(
            s.execute(
                select(m.Thread.id, m.Thread.key, m.Thread.subject, m.Thread.subject_key)
                .add_columns(m.Thread.first_at, m.Thread.last_at)
                .order_by(m.Thread.id)
            )
        )
        rank = {row[0]: n for n, row in enumerate(threads)}
        messages = sorted(
            (fingerprint, message_id, rank[thread_id])
            for fingerprint, message_id, thread_id in s.execute(
                select(m.Message.fingerprint, m.Message.message_id, m.Message.thread_id)
            )
        )
    return tuple(messages), tuple((rank[row[0]], *row[1:]) for row in threads)


def _both(tmp_path: Path, batches: list[list[Mail]]) -> tuple[object, ...]:
    found = []
    for mode in (False, True):
        repo = Repo(f"sqlite:///{tmp_path}/{'batch' if mode else 'single'}.db")
        repo.upgrade()
        try:
            _write(repo, batches, batch_mode=mode)
            found.append(_state(repo))
        finally:
            repo.dispose()
    one_at_a_time, batched = found
    assert batched == one_at_a_time
    return batched


A, B, C, D = "a@x", "b@x", "c@x", "d@x"
SHAPES = {
    "replies within one batch": [[Mail(A), Mail(B, (A,), day=1), Mail(C, (A, B), day=2)]],
    "replies across batches": [[Mail(A)], [Mail(B, (A,), day=1)], [Mail(C, (A, B), day=2)]],
    "reply before its parent, across batches": [[Mail(C, (A, B), day=2)], [Mail(B, (A,), day=1)], [Mail(A)]],
    "reply before its parent, one batch": [[Mail(C, (A, B), day=2), Mail(B, (A,), day=1), Mail(A)]],
    "siblings under a missing root": [[Mail(B, (A,), day=1)], [Mail(C, (A,), day=2), Mail(A)]],
    "subject fallback": [
        [Mail(A, subject="Pricing")],
        [Mail(B, subject="Re: Pricing", day=3), Mail(C, subject="RE: pricing", day=4)],
        [Mail(D, subject="Re: Pricing", day=5, people=("stranger@else.example",))],
    ],
    "subject fallback within one batch": [
        [Mail(A, subject="Pricing"), Mail(B, subject="Re: Pricing", day=3), Mail(C, subject="Fwd: Pricing")]
    ],
    "subject outside the window": [[Mail(A, subject="Pricing")], [Mail(B, subject="Re: Pricing", day=90)]],
    "a later message merges two threads": [
        [Mail(A), Mail("a1@x", (A,), day=1), Mail(B, subject="Other"), Mail("b1@x", (B,), day=2)],
        [Mail(C, (A, B), day=3)],
        [Mail(D, (B,), day=4)],
    ],
    "merges within one batch": [
        [Mail(B, subject="Other", day=1), Mail(A), Mail(C, (A, B), day=3), Mail(D, ("e@x", B), day=4)],
        [Mail("e@x", day=5)],
    ],
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_batch_threading_equals_one_message_at_a_time(tmp_path, shape):
    messages, threads = _both(tmp_path, SHAPES[shape])
    assert messages
    assert threads


def test_the_shapes_thread_as_expected(tmp_path):
    messages, _ = _both(tmp_path, SHAPES["reply before its parent, one batch"])
    assert len({thread for _, _, thread in messages}) == 1
    (tmp_path / "again").mkdir()
    messages, _ = _both(tmp_path / "again", SHAPES["subject fallback"])
    by_id = {mid: thread for _, mid, thread in messages}
    assert by_id[A] == by_id[B] == by_id[C] != by_id[D]


@pytest.mark.parametrize("seed", range(6))
def test_random_mailboxes_thread_the_same(tmp_path, seed):
    rng = random.Random(seed)  # noqa: S311 - a reproducible mailbox, not a secret
    subjects = ["Pricing", "Re: Pricing", "Fwd: Pricing", "Renewal", "Re: Renewal", "AW: Renewal", "Hi"]
    people = ["rachel@acme.example", "tom@acme.example", "dana@northwind.example", "x@other.example"]
    names = [f"m{i}@x" for i in range(70)]
    mails = []
    for i, name in enumerate(names):
        refs = tuple(rng.sample(names, rng.choice([0, 0, 1, 1, 2, 3])))  # earlier, later, missing
        mails.append(
            Mail(
                name,
                refs,
                subject=rng.choice(subjects),
                day=rng.randrange(0, 120),
                people=tuple(rng.sample(people, 2)),
            )
        )
        if rng.random() < 0.1:  # a duplicate Message-ID with other content
            mails.append(Mail(name, refs, subject=rng.choice(subjects), day=i))
    rng.shuffle(mails)
    batches, at = [], 0
    while at < len(mails):
        size = rng.choice([1, 5, 20, 50])
        batches.append(mails[at : at + size])
        at += size
    messages, threads = _both(tmp_path, batches)
    assert len(threads) < len(messages)
