"""Leases: which `mailsync run` process works on a mailbox (or runs a shared job), until when.

Several daemons may share one PostgreSQL. Each mailbox is synced by one of them at a time: the holder
of its row `mailbox:<name>` in `lease`, until `expires_at`. A row, not an advisory lock: an advisory
lock belongs to a connection, so a dropped connection (a restarted pooler, pool_pre_ping replacing a
dead one) frees it without the process noticing, and it keeps writing; nobody can see who holds it; and
SQLite has none. A row names its holder (`host:pid:random`), outlives connections, expires on its own
when the process dies, and works the same on SQLite (a daemon and a `sync --once` beside it share one
file there).

    take    UPDATE lease SET holder = me, token = token + (holder <> me), expires_at = now + lease
            WHERE name = n AND (holder = me OR expires_at <= now)        (or INSERT the missing row)
    verify  UPDATE lease SET expires_at = now + lease
            WHERE name = n AND holder = me AND token = t AND expires_at > now

`token` is the fencing token: it grows whenever the holder changes. The poller takes (or renews) its
mailbox's lease at each poll, after each pass and between IDLE slices (`mailsync sync --once` takes it
for its pass and gives it back); each capture batch (pipeline/capture.py), and the cursor save that
ends a folder's pass (pipeline/sync.py), runs `verify_lease` in its own transaction before the cursor
moves. The UPDATE locks the row until that commit, so a takeover waits
for the batch, or comes first and the batch fails with LeaseLost and rolls back: a process that was
paused (SIGSTOP, a long GC, a frozen VM) past its lease cannot commit a batch or move a cursor when it
wakes, even before another process took the mailbox over. The same check renews the lease, so a long
capture keeps it as long as each batch takes less than the lease. The drain that ends a pass is not
covered: it moves no cursor and is fenced by `job:drain` (below), so the mailbox lease may run out
during it, and another process may take the mailbox meanwhile, rather than wait for the drain; the
poller then takes the lease again, or finds it taken and leaves the mailbox to that process.

`mailsync import` takes no lease: it moves no cursor, and a message two processes capture at once is
stored once (the second finds it and records a copy).

Share: each process keeps a `member:<holder>` row alive (the daemon's heartbeat) and takes no more than
ceil(mailboxes / live members) mailboxes, giving back what is over its share, so that a process
started later gets work.

Time is the database's clock on PostgreSQL (processes on several hosts agree on it) and Python's on
SQLite (one host). Daily jobs run once per period through `job_run`: `claim_run` inserts (job, period)
before the job runs; whoever inserts it runs it.

Processing (parse, thread, match, propose) runs in one process at a time: the holder of `job:drain`
(`DRAIN`), taken for each chunk of batches, renewed before each batch (a drainer that finds it taken
stops) and given back after the chunk. Capture scales with processes;
two processes draining one queue at once would parse the same messages twice and race to create the
same thread (one of them then quarantined a message for a duplicate thread key).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Interval, case, delete, func, literal, or_, select, update

from config.errors import LeaseLost, StorageError
from storage import models as m
from storage.models import utcnow

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from sqlalchemy import ColumnElement, Executable
    from sqlalchemy.dialects.postgresql import Insert as PgInsert
    from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
    from sqlalchemy.orm import Session

    from storage.repo import Repo

MAILBOX = "mailbox:"
MEMBER = "member:"
JOB = "job:"
DRAIN = JOB + "drain"
DRAIN_SECONDS = 300.0  # a chunk of batches takes far less; a drainer that died on another host lets go
FORGET_MEMBERS_AFTER = timedelta(days=1)  # a dead process's member row, kept that long for a look


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    token: int
    seconds: float  # how long each renewal lasts


_held: ContextVar[Lease | None] = ContextVar("mailsync_lease", default=None)


def holder_id() -> str:
    """This process's name in the lease table: host, pid, and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@contextmanager
def holding(lease: Lease) -> Iterator[None]:
    """Inside the block (this thread), captures for the lease's mailbox verify it: see verify_lease."""
    reset = _held.set(lease)
    try:
        yield
    finally:
        _held.reset(reset)


@contextmanager
def one_pass(repo: Repo, mailbox: str, holder: str, seconds: float) -> Iterator[Lease | None]:
    """`mailsync sync --once`'s lease on `mailbox`: held for the block (its captures verify it), given
    back after it; None while another process holds it (`holder_of` names it): skip the mailbox."""
    with repo.session() as session:
        lease = take(session, MAILBOX + mailbox, holder, seconds)
    if lease is None:
        yield None
        return
    try:
        with holding(lease):
            yield lease
    finally:
        with suppress(StorageError), repo.session() as session:  # the database away: it expires anyway
            release(session, lease.name, holder)


def verify_lease(session: Session, mailbox: str) -> None:
    """In a capture batch's transaction, before its cursor moves: raise LeaseLost unless this thread's
    lease on `mailbox` is still ours and running, and renew it. Without a lease held (an import, which
    moves no cursor) it checks nothing."""
    lease = _held.get()
    if lease is None:
        return
    if lease.name != MAILBOX + mailbox or not _extend(session, lease):
        raise LeaseLost(
            f"the lease on mailbox {mailbox} (token {lease.token}) expired: another process may sync it",
            fix="nothing to do if it is rare; if it repeats, raise [daemon] lease_seconds above the time "
            "one batch takes",
        )


def take(session: Session, name: str, holder: str, seconds: float) -> Lease | None:
    """Take `name` for `seconds`, or renew it when `holder` has it; None while another holder's runs.
    A holder on this host whose process is gone (kill -9) holds nothing: its lease is taken at once."""
    lease = _take(session, name, holder, seconds)
    if lease is None:
        other = session.scalar(select(m.Lease.holder).where(m.Lease.name == name))
        if other is not None and not holder_alive(other):
            stmt = update(m.Lease).where(m.Lease.name == name, m.Lease.holder == other)
            _execute(session, stmt.values(expires_at=_now(session)))
            lease = _take(session, name, holder, seconds)
    return lease


def holder_alive(holder: str) -> bool:
    """False only for a holder on this host whose process no longer exists; one on another host, or a
    pid now used by another process, counts as alive (its lease then runs out by itself)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _take(session: Session, name: str, holder: str, seconds: float) -> Lease | None:
    now = _now(session)
    token = _returned(
        session,
        update(m.Lease)
        .where(m.Lease.name == name, or_(m.Lease.holder == holder, m.Lease.expires_at <= now))
        .values(
            token=case((m.Lease.holder == holder, m.Lease.token), else_=m.Lease.token + 1),
            taken_at=case((m.Lease.holder == holder, m.Lease.taken_at), else_=now),
            holder=holder,
            expires_at=_until(session, seconds),
        )
        .returning(m.Lease.token),
    )
    if token is None:
        row = {"name": name, "holder": holder, "token": 1}
        timed = {"expires_at": _until(session, seconds), "taken_at": now}
        stmt = _insert(session, m.Lease).values(**row, **timed).on_conflict_do_nothing()
        token = _returned(session, stmt.returning(m.Lease.token))
    return None if token is None else Lease(name, holder, int(token), seconds)


def holder_of(session: Session, name: str) -> str | None:
    """Who holds `name` now: None when nobody does, or its lease has run out."""
    stmt = select(m.Lease.holder).where(m.Lease.name == name, m.Lease.expires_at > _now(session))
    return session.scalar(stmt)


def release(session: Session, name: str, holder: str) -> None:
    """Let `name` go now (when `holder` has it): another process may take it at once."""
    stmt = update(m.Lease).where(m.Lease.name == name, m.Lease.holder == holder)
    _execute(session, stmt.values(expires_at=_now(session)))


def claim_run(session: Session, job: str, period: str, holder: str) -> bool:
    """Whether this process runs `job` for `period`: True for the first to ask, across processes."""
    stmt = _insert(session, m.JobRun).values(job=job, period=period, holder=holder, started_at=utcnow())
    return _returned(session, stmt.on_conflict_do_nothing().returning(m.JobRun.id)) is not None


def finish_run(session: Session, job: str, period: str) -> None:
    stmt = update(m.JobRun).where(m.JobRun.job == job, m.JobRun.period == period)
    _execute(session, stmt.values(finished_at=utcnow()))


class Leases:
    """One process's leases: its holder id, how long a lease lasts, and its share of the mailboxes."""

    def __init__(self, repo: Repo, seconds: float, mailboxes: int, holder: str | None = None) -> None:
        self.repo = repo
        self.seconds = seconds
        self.mailboxes = mailboxes
        self.holder = holder or holder_id()

    def heartbeat(self) -> None:
        """Say this process is alive (it counts in the share) for one more lease."""
        with self.repo.session() as session:
            take(session, MEMBER + self.holder, self.holder, self.seconds)
            old = literal(utcnow() - FORGET_MEMBERS_AFTER, DateTime())
            _execute(
                session, delete(m.Lease).where(m.Lease.name.startswith(MEMBER), m.Lease.expires_at < old)
            )

    def mailbox(self, name: str) -> Lease | None:
        """Take or renew the lease on mailbox `name`; None when another process has it, or when this
        one has its share already (then a lease it holds on `name` is given back)."""
        with self.repo.session() as session:
            now = _now(session)
            members = session.scalar(
                select(func.count())
                .select_from(m.Lease)
                .where(m.Lease.name.startswith(MEMBER), m.Lease.expires_at > now)
            )
            mine = session.scalar(
                select(func.count())
                .select_from(m.Lease)
                .where(
                    m.Lease.name.startswith(MAILBOX),
                    m.Lease.name != MAILBOX + name,
                    m.Lease.holder == self.holder,
                    m.Lease.expires_at > now,
                )
            )
            if (mine or 0) >= math.ceil(self.mailboxes / max(1, members or 0)):
                release(session, MAILBOX + name, self.holder)
                return None
            return take(session, MAILBOX + name, self.holder, self.seconds)

    def job(self, name: str, seconds: float) -> Lease | None:
        """Take or renew the lease on a job that one process at a time runs."""
        with self.repo.session() as session:
            return take(session, JOB + name, self.holder, seconds)

    def renew(self) -> bool:
        """Take this thread's mailbox lease again (between IDLE slices, after a pass's drain): True when
        it is still, or again, this process's; False when another process holds it now.

        A take, not a verify: nothing is being written here, and the drain that ends a pass is not
        covered by the lease (it may outlast it): an expired lease nobody took is simply ours again,
        under a new token if another process held it meanwhile."""
        lease = _held.get()
        if lease is None:
            return True
        with self.repo.session() as session:
            again = take(session, lease.name, self.holder, lease.seconds)
        if again is None:
            return False
        _held.set(again)  # restored by holding()'s exit like the lease it replaces
        return True

    def release_all(self) -> None:
        """Give back every lease of this process (on a clean stop), so others take over at once."""
        with self.repo.session() as session:
            stmt = update(m.Lease).where(m.Lease.holder == self.holder)
            _execute(session, stmt.values(expires_at=_now(session)))


def _extend(session: Session, lease: Lease) -> bool:
    now = _now(session)
    stmt = update(m.Lease).where(
        m.Lease.name == lease.name,
        m.Lease.holder == lease.holder,
        m.Lease.token == lease.token,
        m.Lease.expires_at > now,
    )
    extended = stmt.values(expires_at=_until(session, lease.seconds)).returning(m.Lease.token)
    return _returned(session, extended) is not None


def _execute(session: Session, statement: Executable) -> None:
    """An INSERT/UPDATE/DELETE of rows this session does not hold (so nothing to synchronise)."""
    session.execute(statement, execution_options={"synchronize_session": False})


def _returned(session: Session, statement: Executable) -> Any:
    """What the statement's RETURNING gives for the one row it changed, or None when it changed none
    (rowcount is -1 for INSERT ... ON CONFLICT on psycopg: not to be trusted)."""
    return session.execute(statement, execution_options={"synchronize_session": False}).scalar()


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _insert(session: Session, table: type[m.Base]) -> PgInsert | SqliteInsert:
    """The dialect's INSERT (ON CONFLICT DO NOTHING is dialect-specific). Imported here: the PostgreSQL
    dialect alone adds ~0.1 s to the start of every SQLite command."""
    if _dialect(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

    return sqlite_insert(table)


def _now(session: Session) -> ColumnElement[datetime]:
    """Now as naive UTC (the database's convention): the server's clock on PostgreSQL."""
    if _dialect(session) == "postgresql":
        return func.timezone("UTC", func.clock_timestamp(), type_=DateTime())
    return literal(utcnow(), DateTime())


def _until(session: Session, seconds: float) -> ColumnElement[datetime]:
    if _dialect(session) == "postgresql":
        return _now(session) + literal(timedelta(seconds=seconds), Interval())
    return literal(utcnow() + timedelta(seconds=seconds), DateTime())
