"""The raw archive: every message's exact bytes, content-addressed, compressed, written durably first.

Layout (stable; back it up with any file tool, check it with `mailsync verify`):

    <archive_dir>/blobs/<h[0:2]>/<h[2:4]>/<h>.zst
    <archive_dir>/journal/provenance-YYYY-MM.jsonl    where each copy was seen: see storage/journal.py

where h is the SHA-256 (hex) of the bytes as received and each file is one zstd frame of exactly
those bytes. A blob is written to a temporary file, fsynced, renamed into place and the directory
fsynced, so a crash leaves either the whole blob or nothing (plus perhaps a `.tmp-*` file that verify
reports and `verify --repair` removes). The same bytes are stored once.

Capture writes a batch at a time: `stage()` each blob (temporary file, rename; no fsync), then one
`sync()` makes the whole batch durable, and only then may a commit name the blobs. A crash before the
sync may leave a torn file under a blob's name; the database never named it, and the next capture,
which trusts only blobs the database knows, writes it again (`stage` replaces what is there).

The interface is `BlobStore` (below): everything that touches blobs goes through it, and the
pipeline and the admin commands know nothing else of a store (no paths, no directories), so another
backend (an S3-compatible bucket) is one more class that satisfies it, checked by
tests/unit/test_blob_store_contract.py. `Archive` is the filesystem store:

    put(data) -> sha256          durable on return (temp, fsync, rename, fsync dirs); known bytes: no-op
    put_stream(chunks, size)     the same for mail too big to hold; memory stays at one chunk
    stage(data, sha256) -> Staged; sync(staged)
                                 capture's batch form of put (see above); the token is opaque
    get(sha256) -> bytes         the exact bytes, checked against the name (ArchiveError otherwise)
    exists(sha256) -> bool       a blob is stored under the name (not checked; get() checks)
    keys() / iter(archive)       every blob hash stored, sorted
    delete(sha256) -> bool       removed durably (unlink, fsync the directory); only forget and retention
                                 delete: blobs are otherwise immutable
    verify(known) -> VerifyReport  re-hash every blob, compare with what the database knows
    spec() -> str | None         how another process opens the same store (open_spec): capture's stage
                                 workers (mailsync/pipeline/staging.py) stage() into it from there

and, outside the protocol, for the filesystem-specific `mailsync verify --repair` only
(mailsync/admin/repair.py, mailsync/cli/archive.py):

    set_aside(sha256) -> Path    a corrupt file renamed to <name>.corrupt[.N] beside it (repair)
    path_for(sha256) -> Path     where a blob lives, for messages to people and for backups only

The provenance journal is not the store's: it stays on local disk under `archive_dir` (storage/journal.py,
`Journal.of(settings)`), whatever the store, and capture fsyncs it itself (see BlobStore.sync).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import zstandard

from config.errors import ArchiveError
from storage.private import FILE_MODE, fsync_path, private_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator

    from config.settings import Settings

SUFFIX = ".zst"
_LIBC = ctypes.CDLL(None, use_errno=True)
_SYNCFS = getattr(_LIBC, "syncfs", None)  # Linux; elsewhere sync() fsyncs file by file
SYNCFS_FROM = 8  # blobs in a batch from which one syncfs beats an fsync per file
_STAGE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # in the database, not on disk
    corrupt: list[str] = field(default_factory=list)  # on disk, bytes do not hash to the name
    orphans: list[str] = field(default_factory=list)  # on disk, unknown to the database
    partial: list[str] = field(default_factory=list)  # leftover temporary files from a crash

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.orphans)


@dataclass(frozen=True, slots=True)
class Staged:
    """What stage() hands back, for the caller to pass to the same store's sync() and nothing else.
    Opaque: a store that needs more to finish a staged write may hand back a subclass."""

    sha256: str


class BlobStore(Protocol):
    """Content-addressed store of raw message bytes: what the pipeline and admin commands need of one.

    Keys are the SHA-256 (hex) of the exact bytes. Durability is the contract "nothing lost" rests on:
    put() and put_stream() return only when the blob is durable; a staged blob is durable only once
    sync() returns, and no commit may name a blob before that. Errors are ArchiveError.
    """

    def put(self, data: bytes) -> str:
        """Store `data` durably (unless already stored); its SHA-256."""
        ...

    def put_stream(self, chunks: Iterator[bytes], size: int) -> str:
        """Store the `size` bytes `chunks` yields, durably, one chunk in memory at a time; their SHA-256."""
        ...

    def stage(self, data: bytes, sha256: str) -> Staged:
        """Start writing `data` (whose SHA-256 is `sha256`), replacing whatever is stored under the name
        unless it is these very bytes already; NOT durable until sync() of the token returns."""
        ...

    def sync(self, staged: Collection[Staged]) -> None:
        """Make the staged blobs durable. Covers the blobs only: capture fsyncs the provenance journal
        itself after it (storage/journal.py), because a store need not share the journal's file system
        (for the filesystem Archive a batch's syncfs writes the journal's lines too, so that fsync
        finds nothing left to write)."""
        ...

    def get(self, sha256: str) -> bytes:
        """The exact bytes stored under `sha256`; ArchiveError when missing or not matching the name."""
        ...

    def exists(self, sha256: str) -> bool:
        """Something is stored under the name (not checked: get() checks)."""
        ...

    def keys(self) -> Iterator[str]:
        """Every key stored, sorted."""
        ...

    def __iter__(self) -> Iterator[str]: ...

    def delete(self, sha256: str) -> bool:
        """Remove a blob durably; False when it was not there."""
        ...

    def verify(self, known: Iterable[str], progress: Callable[[], None] | None = None) -> VerifyReport:
        """Re-read every stored blob; compare with `known` (the hashes the database names)."""
        ...

    def spec(self) -> str | None:
        """What open_spec() opens this same store from in another process (capture's stage workers,
        which stage() into it and hand the Staged tokens back), or None if it cannot be shared."""
        ...


def open_store(settings: Settings) -> BlobStore:
    """The blob store the settings configure (today always the filesystem Archive under archive_dir)."""
    return Archive(settings.archive_dir)


def open_spec(spec: str) -> BlobStore:
    """The store a spec() names, opened in this process."""
    found = json.loads(spec)
    if found.get("store") != "filesystem":
        raise ArchiveError(f"unknown blob store spec {spec!r}")
    return Archive(Path(found["root"]), int(found["level"]))


class Archive:
    """The filesystem BlobStore: content-addressed, compressed, durable files under `root`.

    path_for(), set_aside(), `root` and `blobs` are filesystem-only extras, outside BlobStore: only the
    filesystem-specific verify/repair commands (mailsync/admin/repair.py, mailsync/cli/archive.py) may
    use them; the pipeline and the other admin commands go through BlobStore alone.
    """

    def __init__(self, root: Path, level: int = 3) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.level = level
        self._blobs = str(self.blobs)
        self._local = threading.local()  # a compressor per thread: they are not thread-safe

    def path_for(self, sha256: str) -> Path:
        return self.blobs / sha256[:2] / sha256[2:4] / f"{sha256}{SUFFIX}"

    def spec(self) -> str:
        return json.dumps({"store": "filesystem", "root": str(self.root), "level": self.level})

    def put(self, data: bytes) -> str:
        """Store `data` durably (unless already stored) and return its SHA-256."""
        sha256 = hashlib.sha256(data).hexdigest()
        if self.path_for(sha256).exists():  # a second copy of known bytes: nothing to write
            return sha256
        return self.put_stream(iter((data,)), len(data))

    def put_stream(self, chunks: Iterator[bytes], size: int) -> str:
        """Store the `size` bytes `chunks` yields, compressing as they come; return their SHA-256.

        Memory stays at one chunk whatever the size. The blob's name is known only at the end, so the
        temporary file is written in the blobs directory and renamed into its place when complete.
        """
        digest = hashlib.sha256()
        compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        tmp: Path | None = None
        try:
            private_dir(self.blobs)
            fd, name = tempfile.mkstemp(prefix=".tmp-", dir=self.blobs)
            tmp = Path(name)
            with os.fdopen(fd, "wb") as out:
                with compressor.stream_writer(out, size=size, closefd=False) as writer:
                    for chunk in chunks:
                        digest.update(chunk)
                        writer.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            path = self.path_for(sha256)
            private_dir(path.parent)  # replaces a file there: it may be a torn, never-synced stage()
            tmp.replace(path)
            tmp = None
            fsync_path(path.parent)
            fsync_path(self.blobs)
        except (OSError, zstandard.ZstdError) as exc:
            raise _write_error(f"a {size:,}-byte blob", self.blobs, exc) from exc
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return sha256

    def stage(self, data: bytes, sha256: str) -> Staged:
        """Write `data` (whose SHA-256 is `sha256`) as its blob (temporary file, rename), NOT yet
        durable: sync() the batch before any commit names it. A file already there holding exactly
        these bytes is kept (a batch that staged it never committed: writing it again would need room
        that a full disk lacks); anything else there is replaced. Plain strings: this runs for every
        message captured, and the directories are made only when the first open finds them missing."""
        directory = f"{self._blobs}/{sha256[:2]}/{sha256[2:4]}"
        if os.path.exists(f"{directory}/{sha256}{SUFFIX}") and self._holds(sha256):  # noqa: PTH110
            return Staged(sha256)
        # Named by process and thread, so two writers of the same bytes never share a temporary file.
        tmp = f"{directory}/.tmp-{sha256[:16]}-{os.getpid()}-{threading.get_ident()}"
        written = False
        try:
            frame = self._compressor().compress(data)
            try:
                fd = os.open(tmp, _STAGE_FLAGS, FILE_MODE)
            except FileNotFoundError:
                private_dir(Path(directory))
                fd = os.open(tmp, _STAGE_FLAGS, FILE_MODE)
            written = True
            with os.fdopen(fd, "wb") as out:
                out.write(frame)
            os.replace(tmp, f"{directory}/{sha256}{SUFFIX}")  # noqa: PTH105 - plain strings, on purpose
            written = False
        except (OSError, zstandard.ZstdError) as exc:
            raise _write_error(f"a {len(data):,}-byte blob", self.blobs, exc) from exc
        finally:
            if written:
                Path(tmp).unlink(missing_ok=True)
        return Staged(sha256)

    def sync(self, staged: Collection[Staged]) -> None:
        """Make staged blobs durable, renames included. A batch: one syncfs() of the archive's file
        system, one writeback and one journal commit for all of it (200 blobs: 8-30 ms here, where an
        fsync per file and directory took 640-1,000 ms, a journal commit each). A few blobs (the daemon
        at rest) or no syncfs (not Linux): an fsync per file and directory, which waits for nothing
        else on the file system. A write-back error is an ArchiveError: nothing is committed on it.

        The syncfs also writes back the provenance journal's lines when the journal is on the same
        file system (the default: under archive_dir); capture fsyncs the journal itself all the same."""
        if not staged:
            return
        try:
            if _SYNCFS is not None and len(staged) >= SYNCFS_FROM:
                fd = os.open(self.blobs, os.O_RDONLY)
                try:
                    if _SYNCFS(fd) != 0:
                        errno = ctypes.get_errno()
                        raise OSError(errno, os.strerror(errno))
                finally:
                    os.close(fd)
                return
            paths = [self.path_for(token.sha256) for token in staged]
            for path in paths:
                fsync_path(path)
            for directory in {p.parent for p in paths} | {p.parent.parent for p in paths} | {self.blobs}:
                fsync_path(directory)  # the renames, and the blob directories made for them
        except OSError as exc:
            raise _write_error(f"a batch of {len(staged)} blobs", self.blobs, exc) from exc

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
            self._local.compressor = compressor
        return compressor

    def get(self, sha256: str) -> bytes:
        """The exact bytes of a blob; ArchiveError when missing or not matching its hash."""
        path = self.path_for(sha256)
        try:
            data = zstandard.ZstdDecompressor().decompress(path.read_bytes())
        except FileNotFoundError as exc:
            raise ArchiveError(
                f"blob {sha256} is missing from {self.blobs}", fix="run `mailsync verify`"
            ) from exc
        except (OSError, zstandard.ZstdError) as exc:
            raise ArchiveError(f"blob {sha256} cannot be read: {exc}", fix="run `mailsync verify`") from exc
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArchiveError(
                f"blob {sha256} is corrupt (hash mismatch)", fix="run `mailsync verify --repair`"
            )
        return data

    def exists(self, sha256: str) -> bool:
        """A file is stored under this name (its bytes are checked by get(), not here)."""
        return self.path_for(sha256).is_file()

    def _holds(self, sha256: str) -> bool:
        try:
            self.get(sha256)
        except ArchiveError:  # torn by a crash, or corrupt: stage() writes it again
            return False
        return True

    def keys(self) -> Iterator[str]:
        """Every blob hash on disk."""
        if not self.blobs.exists():
            return
        for path in sorted(self.blobs.glob(f"*/*/*{SUFFIX}")):
            yield path.name.removesuffix(SUFFIX)

    def __iter__(self) -> Iterator[str]:
        return self.keys()

    def delete(self, sha256: str) -> bool:
        """Remove a blob durably (the unlink fsynced in its directory); False when it was not there.

        Blobs are immutable otherwise: only `mailsync forget` and retention delete, after the database
        commit that stopped naming the blob (a crash in between leaves an orphan, which verify lists
        and a re-run of the command removes)."""
        path = self.path_for(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ArchiveError(
                f"cannot delete blob {sha256} from {self.blobs}: {exc.strerror}",
                fix="fix the archive directory's permissions and run the command again",
            ) from exc
        try:
            fsync_path(path.parent)
        except OSError as exc:
            raise _write_error("a deletion", self.blobs, exc) from exc
        return True

    def set_aside(self, sha256: str, suffix: str = ".corrupt") -> Path:
        """Rename a (corrupt) blob to <name><suffix>, or <name><suffix>.N when taken, beside it; the
        new path. Outside the `*.zst` layout, so keys() and verify no longer see it."""
        path = self.path_for(sha256)
        target = path.with_name(path.name + suffix)
        number = 0
        while target.exists():
            number += 1
            target = path.with_name(f"{path.name}{suffix}.{number}")
        try:
            path.replace(target)
        except OSError as exc:
            raise ArchiveError(
                f"cannot rename blob {path} aside: {exc.strerror}",
                fix="fix the archive directory's permissions and run the command again",
            ) from exc
        return target

    def verify(self, known: Iterable[str], progress: Callable[[], None] | None = None) -> VerifyReport:
        """Re-hash every blob on disk; compare with the hashes the database knows."""
        report = VerifyReport()
        expected = set(known)
        on_disk: set[str] = set()
        for sha256 in self.keys():
            on_disk.add(sha256)
            report.checked += 1
            try:
                self.get(sha256)
            except ArchiveError:
                report.corrupt.append(sha256)
            if sha256 not in expected:
                report.orphans.append(sha256)
            if progress:
                progress()
        report.missing = sorted(expected - on_disk)
        if self.blobs.exists():
            report.partial = sorted(str(p) for p in self.blobs.glob("**/.tmp-*"))
        return report


def _write_error(what: str, blobs: Path, exc: BaseException) -> ArchiveError:
    return ArchiveError(
        f"cannot write {what} to {blobs}: {getattr(exc, 'strerror', None) or exc}",
        fix="free disk space or fix the archive directory's permissions; the message is retried",
    )
