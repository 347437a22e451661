"""Appending to a file that may be replaced whole: the event log and the provenance journal.

Every mailsync process appends to them, and `mailsync forget` replaces them (temp file, fsync, rename:
mailsync/pipeline/forgetting.py, rewrite_file). An append that opened the file before the rename and
writes after it would write into the old, unlinked file, and that line would be lost. So both sides
take an advisory lock (flock LOCK_EX) on the file: the rewriter holds it from reading the text until
the new file is renamed in and its directory synced, and an appender, once it holds it, checks that
its descriptor is still the file the path names (same inode) and opens the path again if not. On
several hosts the shared filesystem must make flock hold across them: CephFS does; NFSv4 does when
mounted with lock support (there flock is a whole-file POSIX lock, which is why the descriptors are
opened for writing and the locked file is never opened a second time by the process holding it).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

from storage.private import FILE_MODE, private_file

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@contextmanager
def locked(path: Path, flags: int = os.O_RDWR) -> Iterator[int]:
    """A descriptor on `path` opened with `flags` under an exclusive flock, on the file the path names
    now (not one a rewrite has replaced meanwhile); closing it on leaving releases the lock."""
    while True:
        fd = os.open(path, flags, FILE_MODE)
        held = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = _same_file(fd, path)
        finally:
            if not held:
                os.close(fd)
        if held:
            break
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def appending(path: Path) -> Iterator[int]:
    """An O_APPEND descriptor on `path` (created 0600 if missing), locked as `locked` says: write
    whole lines to it before leaving."""
    with locked(private_file(path), os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
        yield fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_all(fd: int) -> bytes:
    """The rest of the file from the descriptor's position (read through it: see the module's note)."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)
