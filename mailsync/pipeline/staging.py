"""Staging in worker processes: a large batch's hashes, identities and blob writes done beside capture.

Before its commit, capture reads each message's SHA-256 and identity (mail/identity.py) and writes its
blob (zstd frame, temporary file, rename). In threads of this process that work queues for the GIL
behind the fetch thread and the database (a 10,000-message capture spent a third of its time waiting
on them). For a batch of at least POOL_FROM messages, on a store that another process can open
(BlobStore.spec: the filesystem Archive), StagePool does it in WORKERS processes instead, a batch
ahead:

    sync loop:  take batch N+1 ─> submit(N+1) ─> capture(N): collect(N) ─> journal, sync, commit
    workers:                        └─> hash, identify and stage N+1, while this process commits N

The batch's bytes go once into an anonymous memory file (memfd) whose descriptor each worker is
sent; each worker takes every WORKERS-th message and answers with one small list per batch, so the
GIL changes hands a few times a batch, not several times a message.

A worker stages through the store's own stage() (NOT durable) and hands the token back: capture
syncs the batch before the commit that names it, so "nothing lost" holds as it did. A worker leaves
a blob already stored under its name alone and says so; capture then decides, as it does for the
threads (known to the database: kept; unknown: stage() reads it back). A write that fails (a full
disk) is reported for its message and the worker goes on with the next; capture leaves the message
out and moves the folder cursor only up to it. A worker that dies, does not start or is stuck past
COLLECT_TIMEOUT (then killed) costs nothing but speed: the batch, and the rest of the pass, go to the
threads (capture.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import sys
from dataclasses import dataclass
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, cast

from config.errors import ArchiveError
from mailsync.mail.identity import Identity, identify
from mailsync.worker_process import spawn, stop
from storage.archive import open_spec

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Generator, Iterable, Sequence

    from storage.archive import BlobStore, Staged
    from storage.records import RawMessage

POOL_FROM = 64  # messages in a batch from which the workers pay: starting them costs ~0.2 s, once a pass
WORKERS = 2  # with the file system's waits, two keep ahead of a commit on 2 cores; more only compete
_IOV_MAX = 1024  # pieces one writev takes (Linux's limit)
_STOP_GRACE = 10.0  # seconds a worker may take to finish the batch it holds when the pool closes
# Seconds a batch may take in the workers: far beyond a batch of a few MB on any disk. A worker stuck
# longer (a hung file system, a stopped process) is killed and the threads stage the batch.
COLLECT_TIMEOUT = 120.0


@dataclass(frozen=True, slots=True)
class Staging:
    """One message's staging, from a worker."""

    sha256: str
    identity: Identity
    staged: Staged | None  # staged now (for the store's sync); None: it held the name already, or failed
    error: tuple[str, str | None] | None = None  # the ArchiveError's text and fix


@dataclass(frozen=True, slots=True)
class Ticket:
    """A batch submitted to the workers; its results are collected in the order batches were submitted."""

    pool: StagePool
    count: int

    def collect(self) -> list[Staging] | None:
        return self.pool.collect(self)


class StagePool:
    """WORKERS stage processes for one blob store, started with the first large batch; close() ends them."""

    def __init__(self, archive: BlobStore, workers: int = WORKERS) -> None:
        self.archive = archive
        self.size = workers
        self._workers: list[tuple[subprocess.Popen[bytes], Connection]] = []
        self.broken = False  # a worker died or did not start: the threads stage the rest of the pass
        self.timeout = COLLECT_TIMEOUT

    @classmethod
    def usable(cls, archive: BlobStore) -> bool:
        """A store another process can open (BlobStore.spec), where there are memory files (Linux)."""
        return hasattr(os, "memfd_create") and archive.spec() is not None

    def submit(self, raws: Sequence[RawMessage]) -> Ticket | None:
        """Start staging `raws` in the workers; None when they are not for the workers (a small batch,
        spooled mail, a broken pool), and the caller stages the batch itself."""
        if self.broken or len(raws) < POOL_FROM or any(raw.spool is not None for raw in raws):
            return None
        try:
            workers = self._started()
            fd = os.memfd_create("mailsync-batch", getattr(os, "MFD_CLOEXEC", 0))
            try:
                _write_all(fd, [raw.data for raw in raws])
                spans, at = [], 0
                for raw in raws:
                    spans.append((at, at + len(raw.data)))
                    at += len(raw.data)
                for number, (process, conn) in enumerate(workers):
                    reduction.send_handle(conn, fd, process.pid)
                    conn.send((at, spans[number :: len(workers)]))
            finally:
                os.close(fd)  # each worker holds its own descriptor now
        except OSError:
            self._break()
            return None
        return Ticket(self, len(raws))

    def collect(self, ticket: Ticket) -> list[Staging] | None:
        """Each message's Staging, in batch order; None when a worker died or took longer than
        `timeout` meanwhile: the caller stages the whole batch itself."""
        results: list[Staging | None] = [None] * ticket.count
        try:
            for number, (_, conn) in enumerate(self._workers):
                if not conn.poll(self.timeout):
                    self._break(grace=0.0)  # stuck: it would not finish in any grace either
                    return None
                results[number :: len(self._workers)] = conn.recv()
        except (EOFError, OSError, ValueError):  # ValueError: a dead worker's answer was cut short
            self._break()
            return None
        return cast("list[Staging]", results)

    def close(self, grace: float = _STOP_GRACE) -> None:
        """End the workers; each may finish the batch it holds first (a torn temporary file otherwise)."""
        workers, self._workers = self._workers, []
        for _, conn in workers:
            conn.close()
        for process, _ in workers:
            stop(process, grace=grace)

    def _started(self) -> list[tuple[subprocess.Popen[bytes], Connection]]:
        if not self._workers:
            spec = self.archive.spec()
            assert spec is not None  # noqa: S101 - usable() said so
            self._workers = [spawn(__name__, spec) for _ in range(self.size)]
        return self._workers

    def _break(self, grace: float = _STOP_GRACE) -> None:
        import structlog  # noqa: PLC0415 - not at the top: the worker process imports this module

        structlog.get_logger().warning("stage_workers_failed", action="staging in this process")
        self.broken = True
        self.close(grace)


def _write_all(fd: int, pieces: list[bytes]) -> None:
    """Every piece, in order, without joining them (a batch-sized allocation a pass would keep)."""
    todo = [memoryview(piece) for piece in pieces if piece]
    while todo:
        written = os.writev(fd, todo[:_IOV_MAX])
        while written and written >= len(todo[0]):
            written -= len(todo.pop(0))
        if written:
            todo[0] = todo[0][written:]


def staged_ahead(
    batches: Iterable[list[RawMessage]], submit: Callable[[list[RawMessage]], Ticket | None]
) -> Generator[tuple[list[RawMessage], Ticket | None]]:
    """Each batch with its ticket, submitted as the batch after it is taken: the workers stage a batch
    ahead of its capture. A batch holding spooled mail is yielded before the next is taken, because the
    source deletes a spool file when it moves on (pipeline/fetcher.py)."""
    held: tuple[list[RawMessage], Ticket | None] | None = None
    for batch in batches:
        spooled = any(raw.spool is not None for raw in batch)
        current = (batch, None if spooled else submit(batch))
        if held is not None:
            yield held
        held = current
        if spooled:
            yield held
            held = None
    if held is not None:
        yield held


def _stage(archive: BlobStore, data: bytes) -> Staging:
    sha256 = hashlib.sha256(data).hexdigest()
    identity = identify(data)
    if archive.exists(sha256):
        return Staging(sha256, identity, None)
    try:
        return Staging(sha256, identity, archive.stage(data, sha256))
    except ArchiveError as exc:
        return Staging(sha256, identity, None, error=(str(exc), exc.fix))


def _serve(conn: Connection, archive: BlobStore) -> None:
    """The worker: for each batch, a memory file's descriptor, then (its size, this worker's spans);
    one list of Staging back."""
    while True:
        try:
            fd = reduction.recv_handle(conn)
            size, spans = conn.recv()
        except (EOFError, OSError):
            return
        with contextlib.ExitStack() as stack:
            view = stack.enter_context(mmap.mmap(fd, size, prot=mmap.PROT_READ)) if size else b""
            os.close(fd)
            results = [_stage(archive, view[start:end]) for start, end in spans]
        conn.send(results)


if __name__ == "__main__":  # a worker, as StagePool starts it: the socket's fd, the store's spec
    # By the module's name: its results are unpickled as mailsync.pipeline.staging's classes, not __main__'s.
    from mailsync.pipeline import staging  # noqa: PLW0406

    staging._serve(Connection(int(sys.argv[1])), open_spec(sys.argv[2]))  # noqa: SLF001
