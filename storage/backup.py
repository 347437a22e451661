"""Database snapshots for `mailsync backup` and their restore: the I/O edge to sqlite3 and pg_dump.

SQLite: the online backup API copies a consistent snapshot while the daemon writes (one read
transaction over every page; WAL lets writers go on meanwhile). PostgreSQL: `pg_dump --format=custom`,
one consistent snapshot too (it runs in a single repeatable-read transaction); `pg_restore` reads it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from config.errors import StorageError

SQLITE_FILE = "mailsync.db"
PG_FILE = "mailsync.pgdump"
_TOOL_TIMEOUT = 6 * 3600  # seconds: a large database dumps for a while, but never forever


def backend(url: str) -> str:
    """ "sqlite" or "postgresql"; StorageError for a database backup does not know."""
    name = make_url(url).get_backend_name()
    if name not in {"sqlite", "postgresql"}:
        raise StorageError(f"cannot back up a {name} database", fix="use SQLite or PostgreSQL")
    return name


def snapshot(url: str, into: Path) -> Path:
    """A consistent copy of the database at `url`, written into the directory `into`."""
    if backend(url) == "sqlite":
        target = into / SQLITE_FILE
        _sqlite_copy(_sqlite_path(url), target)
        return target
    target = into / PG_FILE
    dsn, env = _libpq(url)
    _run(["pg_dump", "--format=custom", "--no-owner", "--file", str(target), dsn], "pg_dump", env)
    return target


def restore(snapshot_file: Path, url: str) -> None:
    """Put a snapshot back as the database at `url` (replacing what is there)."""
    if backend(url) == "sqlite":
        path = _sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        _sqlite_copy(snapshot_file, path)
        return
    dsn, env = _libpq(url)
    command = ["pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction"]
    _run([*command, "--dbname", dsn, str(snapshot_file)], "pg_restore", env)


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise StorageError(f"cannot back up the in-memory database {url}", fix="use a database file")
    return Path(database)


def _sqlite_copy(source: Path, target: Path) -> None:
    try:
        src, dst = sqlite3.connect(source), sqlite3.connect(target)
        try:
            src.backup(dst)  # every page in one step: one consistent read transaction
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        raise StorageError(
            f"cannot copy the database {source} to {target}: {exc}",
            fix="check free disk space and permissions",
        ) from exc


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy URL as libpq tools read it (no driver suffix), and the password apart, for the
    tool's environment: an argument would show in `ps`."""
    parsed = make_url(url)
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def _run(command: list[str], tool: str, env: dict[str, str]) -> None:
    if shutil.which(tool) is None:
        raise StorageError(
            f"{tool} is not installed", fix="install PostgreSQL's client tools (Debian: postgresql-client)"
        )
    try:
        done = subprocess.run(  # noqa: S603 - our own argv
            command,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT,
            check=False,
            env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        raise StorageError(
            f"{tool} did not finish in {_TOOL_TIMEOUT} s", fix="run it by hand to see why"
        ) from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise StorageError(
            f"{tool} failed: {detail}", fix=f"run `{tool} --help`; check the database URL and rights"
        )
