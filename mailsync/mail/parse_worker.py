"""The parse edge: runs parse_message in separate, killable processes.

Hostile mail makes parsers raise anything, recurse without end or spin in a regex. A worker turns
every failure into a ParseError: an exception in the worker, its death (memory limit, crash), or a
timeout, after which it is killed and replaced. The caller only ever sees a ParsedEmail or ParseError.
Logging is off in the worker, so it sends back whether the fallback parser stood in, and the
daemon side logs it.

`ParsePool` runs several workers so that a batch is parsed on the cores matching leaves free (one on 2
cores: with the standard library's fast path a message parses in ~0.6 ms against ~1.8 ms of matching,
and a second worker only held its own memory), each message still in one killable worker: a message
that hangs costs its own worker a restart, never its neighbours. Each worker is sent a few messages
ahead of the one it parses (`parse_stream`), so it does not idle while this process, busy matching,
gets round to taking a result and sending the next: replay of 10,000 messages, parse wall time 32 ->
24 s. A job may name an archived blob instead of carrying its bytes (`ParseJob.store`): the worker
reads, decompresses and checks it itself, so the job is a few hundred bytes, many fit in the pipe, and
this process's threads, which wait for the GIL while matching holds it, do less per message. Workers
are spawned by `warm()` in the background (imports take about a second), so the first message does not
wait for them and a pass with nothing to parse does not either.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import resource
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from config.errors import ArchiveError, ParseError
from mailsync.worker_process import spawn, stop

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator, Sequence

    from config.settings import ParseLimits, Settings
    from mailsync.mail.parse import ParserFailure
    from storage.archive import BlobStore
    from storage.records import ParsedEmail

_STARTUP_TIMEOUT = 60.0
_MEMORY_LIMIT = 2 * 1024**3  # address space of the worker; a bomb dies there, not in the daemon
_TRIM_AFTER = 64 * 1024  # a message at least this large is followed by malloc_trim in the worker
# A batch is sent ahead of the message being parsed, so that the worker never waits for this process
# to take its result and send the next one (a thread waiting for the GIL while matching holds it). At
# most this many messages, and this many bytes of them unread: below a pipe's 64 KiB, so a send ahead
# never blocks, and the worker can never be stuck sending a result while this process is stuck sending.
# A job that names a blob (ParseJob.store) is a few hundred bytes: 64 of them go ahead.
_AHEAD = 64
_AHEAD_BYTES = 32 * 1024


class WorkerLimits(NamedTuple):
    """ParseLimits as a plain tuple for the worker: unpickling the settings model would import pydantic
    (and the settings module) into every worker, ~10 MB each that parsing never uses."""

    max_bytes: int
    max_mime_depth: int
    max_parts: int
    max_header_lines: int
    max_header_bytes: int
    max_body_chars: int

    @classmethod
    def of(cls, limits: ParseLimits | WorkerLimits) -> WorkerLimits:
        return cls(*(getattr(limits, name) for name in cls._fields))


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None elsewhere: gives the free pages of the heap back to the system.
    After a large message a worker's heap kept the freed pages (mail-parser copies a message several
    times), so each worker grew by tens of MB over a sync. From the C library the process has loaded
    (CDLL(None)): find_library would run ldconfig in every worker that starts."""
    try:
        return getattr(ctypes.CDLL(None), "malloc_trim", None)
    except OSError:
        return None


def _serve(conn: Connection, limits: WorkerLimits) -> None:
    """The worker process: imports only the parse module and what it needs (this module is light:
    no structlog, no settings), parses what it is sent, hands the freed heap of a large message back."""
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))
    logging.disable(logging.WARNING)  # mail-parser warns about every defect of hostile mail
    from mailsync.mail.parse import parse_with_fallback  # noqa: PLC0415 - the parsers load here, not in the daemon
    from storage.archive import open_spec  # noqa: PLC0415 - as the parsers

    trim = _malloc_trim()
    stores: dict[str, BlobStore] = {}
    conn.send(("ready", None))  # start-up (imports) must not count against a message's time limit
    while True:
        try:
            raw, fingerprint, archive_key, store = conn.recv()
        except EOFError:
            return
        size = 0
        try:
            if raw is None:
                if store not in stores:
                    stores[store] = open_spec(store)
                raw = stores[store].get(archive_key)
            size = len(raw)
            parsed, failure = parse_with_fallback(
                raw, fingerprint=fingerprint, archive_key=archive_key, limits=limits
            )
            result: tuple[str, Any] = ("ok", (_with_reading(parsed), failure))
            del parsed
        except ParseError as exc:
            result = ("error", str(exc))
        except ArchiveError as exc:  # missing or corrupt: `mailsync verify` reports it
            result = ("error", f"archive: {exc}")
        except BaseException as exc:  # noqa: BLE001 - the parse edge: any failure is this message's fault
            result = ("error", f"parser failed: {type(exc).__name__}: {str(exc)[:300]}")
        del raw
        conn.send(result)
        del result
        if trim is not None and size >= _TRIM_AFTER:
            trim(0)  # the result's objects are gone too: return the free pages to the system


def _with_reading(parsed: ParsedEmail) -> ParsedEmail:
    """`parsed` with matching's reading of its body (records.ParsedEmail.reading), done here: off the
    processing thread, which is what bounds a rebuild."""
    from nlp.clean import read_body  # noqa: PLC0415 - in the worker only, as the parsers

    return replace(parsed, reading=read_body(parsed.body_text))


class ParseWorker:
    """One parser process, started by warm() or on first use, replaced after a timeout or a crash."""

    def __init__(self, limits: ParseLimits, timeout: float = 30.0) -> None:
        self.limits = limits
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one request at a time on the pipe; mailbox threads share it
        self._starting: Connection | None = None  # a process spawned by warm(), until it is "ready"

    def warm(self) -> None:
        """Spawn the process now, without waiting for it to be ready (the first parse waits)."""
        with self._lock:
            if self._process is None:
                self._spawn()

    def _spawn(self) -> None:
        self._process, self._starting = spawn(__name__, json.dumps(WorkerLimits.of(self.limits)))

    def _start(self) -> Connection:
        if self._process is None:
            self._spawn()
        parent, self._starting = self._starting, None
        try:
            ready = parent is not None and parent.poll(_STARTUP_TIMEOUT) and parent.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready or parent is None:
            if parent is not None:
                parent.close()
            self.close()
            raise ParseError("parser process did not start")
        self._conn = parent
        return parent

    def parse(self, raw: bytes, *, fingerprint: str, archive_key: str) -> ParsedEmail:
        """Parse in the worker; ParseError for a bad message, a timeout or a dead worker."""
        with self._lock:
            return self._parse(raw, fingerprint, archive_key)

    def _parse(self, raw: bytes, fingerprint: str, archive_key: str) -> ParsedEmail:
        conn = self._conn or self._start()
        try:
            conn.send((raw, fingerprint, archive_key, None))
        except (BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise ParseError("parser process died (memory limit or crash)") from exc
        return self._receive(conn)

    def _receive(self, conn: Connection) -> ParsedEmail:
        """The result of the oldest message sent; ParseError for it, the worker killed when it timed out
        or died (messages sent after it are then lost with the worker: the caller sends them again)."""
        try:
            if not conn.poll(self.timeout):
                self.close()
                raise ParseError(f"parser timed out after {self.timeout:g} s")
            status, value = conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            self.close()
            raise ParseError("parser process died (memory limit or crash)") from exc
        if status == "ok":
            result: tuple[ParsedEmail, ParserFailure | None] = value
            parsed, failure = result
            if failure is not None:
                import structlog  # noqa: PLC0415 - not at the top: the worker process imports this module

                structlog.get_logger().info(
                    "parsed_with_fallback",
                    failed_parser=failure.parser,
                    parser_error=failure.error_class,
                    detail=failure.detail,
                )
            return parsed
        raise ParseError(str(value))

    def parse_many(self, jobs: Sequence[ParseJob]) -> list[ParsedEmail | ParseError]:
        """Each job parsed in turn; a ParseError is returned in the job's place, not raised."""
        results = dict(self.parse_stream(_Taker(enumerate(jobs))))
        return [results[index] for index in range(len(jobs))]

    def parse_stream(self, jobs: _Taker) -> Iterator[tuple[int, ParsedEmail | ParseError]]:
        """(index, outcome) for each job taken from `jobs`, in order, with up to _AHEAD of them sent
        ahead of the one being parsed. A message that times out or kills the worker is blamed alone:
        those sent after it go again to the replacement."""
        with self._lock:
            sent: deque[tuple[int, ParseJob]] = deque()  # in the worker's pipe, oldest first
            again: deque[tuple[int, ParseJob]] = deque()  # sent to a worker that was killed since
            while True:
                while len(sent) < _AHEAD and (item := again.popleft() if again else jobs.take()):
                    ahead = sum(job.size for _, job in list(sent)[1:]) + item[1].size
                    if sent and ahead > _AHEAD_BYTES:
                        again.appendleft(item)
                        break
                    try:
                        conn = self._conn or self._start()
                        conn.send(tuple(item[1]))
                    except ParseError as exc:  # no worker would start: this message fails, the next tries
                        yield item[0], exc
                        continue
                    except (BrokenPipeError, ConnectionResetError):
                        again.appendleft(item)
                        if sent:
                            break  # the worker died on a message sent earlier: _receive finds out which
                        self.close()  # it died after its last result: the next one starts afresh
                        continue
                    sent.append(item)
                if not sent:
                    return
                index, _ = sent.popleft()
                try:
                    yield index, self._receive(self._conn or self._start())  # _conn: it was sent
                except ParseError as exc:
                    if self._conn is None:  # killed: what followed it never reached a parser
                        again.extendleft(reversed(sent))
                        sent.clear()
                    yield index, exc

    def close(self) -> None:
        if self._starting is not None:
            self._starting.close()
            self._starting = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            stop(self._process)
            self._process = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ParseJob(NamedTuple):
    """A message to parse: its bytes, or (raw None) the blob `archive_key` of the store whose
    BlobStore.spec() is `store`, which the worker reads and checks itself."""

    raw: bytes | None
    fingerprint: str
    archive_key: str
    store: str | None = None

    @property
    def size(self) -> int:
        """Bytes the job puts in the pipe, about: a pickled job naming a blob is ~150 bytes and its store."""
        return len(self.raw) if self.raw is not None else 160 + len(self.store or "")


class _Taker:
    """Jobs that several workers' threads take from, one at a time, each with its index."""

    def __init__(self, jobs: Iterator[tuple[int, ParseJob]]) -> None:
        self._jobs = jobs
        self._lock = threading.Lock()

    def take(self) -> tuple[int, ParseJob] | None:
        with self._lock:
            return next(self._jobs, None)


def default_size() -> int:
    """One worker per core that the command's own process leaves free, at least one, at most four.
    Parsing is CPU-bound and runs a batch ahead of matching, which takes about twice as long per
    message in the main process: one worker keeps it fed, and a worker more on a 2-core machine
    only competes with it for a core and holds ~30 MB more."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def configured_pool(settings: Settings) -> ParsePool:
    """The pool a command parses with: `[daemon] parse_workers` workers, else `default_size()`.
    Several processes on one host each pin it, or each would start a worker per spare core."""
    return ParsePool(settings.limits, size=settings.daemon.parse_workers)


class ParsePool:
    """`size` ParseWorkers; a batch is spread over them, each message in one killable worker."""

    def __init__(self, limits: ParseLimits, size: int | None = None, timeout: float = 30.0) -> None:
        self.limits = limits
        self.workers = [ParseWorker(limits, timeout) for _ in range(size or default_size())]
        self._free: queue.SimpleQueue[ParseWorker] = queue.SimpleQueue()
        for worker in self.workers:
            self._free.put(worker)
        self._threads = ThreadPoolExecutor(len(self.workers), thread_name_prefix="mailsync-parse")

    @property
    def timeout(self) -> float:
        return self.workers[0].timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        for worker in self.workers:
            worker.timeout = seconds

    def warm(self) -> None:
        """Spawn every worker in the background; none is waited for here."""
        for worker in self.workers:
            worker.warm()

    def parse(self, raw: bytes, *, fingerprint: str, archive_key: str) -> ParsedEmail:
        """Parse one message in whichever worker is free; ParseError as ParseWorker.parse."""
        worker = self._free.get()
        try:
            return worker.parse(raw, fingerprint=fingerprint, archive_key=archive_key)
        finally:
            self._free.put(worker)

    def parse_many(self, jobs: Sequence[ParseJob]) -> list[ParsedEmail | ParseError]:
        """Every job parsed, in parallel over the workers (each takes the next job when it has room
        for one); results in the jobs' order, a ParseError in the place of a message that failed."""
        results: dict[int, ParsedEmail | ParseError] = {}
        shared = _Taker(enumerate(jobs))

        def run(worker: ParseWorker) -> None:
            results.update(worker.parse_stream(shared))

        for done in [self._threads.submit(run, worker) for worker in self.workers]:
            done.result()
        return [results[index] for index in range(len(jobs))]

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        for worker in self.workers:
            worker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


if __name__ == "__main__":  # a worker, as ParseWorker._spawn starts it: the socket's fd, the limits
    _serve(Connection(int(sys.argv[1])), WorkerLimits(*json.loads(sys.argv[2])))
