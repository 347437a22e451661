"""Private files: everything under the data directory holds mail, so only its owner may read it.

The database, its WAL, the event log, the archive and spool files are created 0600 in directories
created 0700, whatever the process's umask. SQLite gives its -wal and -shm files the database file's
mode, so creating the database file first is enough for those.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents as 0700 directories; existing ones are left as they are."""
    missing: list[Path] = []
    step = path
    while not step.exists():  # walk up only as far as needed: this runs for every blob written
        missing.append(step)
        step = step.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
        directory.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty as 0600 if it does not exist; an existing file readable by others is made 0600."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path (a directory's fsync makes the renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
