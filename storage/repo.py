"""The database edge: engines, sessions and schema migrations. The only module that opens Sessions."""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config.errors import StorageError
from storage.private import private_file

if TYPE_CHECKING:
    from collections.abc import Iterator

    from alembic.config import Config
    from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE_LOCK = 0x6D61696C73796E63  # "mailsync": the advisory lock key `db upgrade` holds on PostgreSQL


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL is crash-safe in WAL (a power cut may roll back the
    # last commits, together with their cursors, so nothing is skipped).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def shipped_head() -> str:
    """The newest migration shipped: files are `NNNN_name.py` and each one's revision is its number
    (tests/unit/test_repo_head.py holds alembic to that)."""
    return max(
        path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")
    )


def make_engine(url: str, idle_in_transaction: float | None = None) -> Engine:
    """An engine for `url`; for SQLite the file is created private (0600) and WAL switched on.

    `idle_in_transaction` (seconds, PostgreSQL): the server ends a session whose transaction sits idle
    that long. A frozen process (SIGSTOP, a VM paused) keeps its row locks otherwise, and the process
    that took over its mailbox waits on them for ever (the same new message's unique fingerprint)."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        private_file(Path(url.removeprefix("sqlite:///")))  # it holds every message body: 0600 in 0700
    options: dict[str, Any] = {}
    if idle_in_transaction is not None and url.startswith("postgresql"):
        timeout = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction * 1000)}"
        options["connect_args"] = {"options": timeout}
    engine = create_engine(url, pool_pre_ping=True, **options)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _display(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - only on the error path

    return make_url(url).render_as_string(hide_password=True)


class Repo:
    """Owns the engine; hands out transactional sessions and applies migrations."""

    def __init__(self, url: str, *, idle_in_transaction: float | None = None) -> None:
        self.url = url
        self.engine = make_engine(url, idle_in_transaction)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on any error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            session.rollback()
            raise StorageError(
                f"database {_display(self.url)}: {exc.orig}",
                fix="check that the database is reachable and not locked by another program",
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _alembic(self) -> Config:
        from alembic.config import Config  # noqa: PLC0415 - alembic costs ~0.35 s; most starts never need it

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.engine
        return cfg

    def schema_revisions(self) -> tuple[str | None, str | None]:
        """(current revision of the database, newest revision shipped)."""
        from alembic.runtime.migration import MigrationContext  # noqa: PLC0415
        from alembic.script import ScriptDirectory  # noqa: PLC0415

        head = ScriptDirectory.from_config(self._alembic()).get_current_head()
        try:
            with self.engine.connect() as conn:
                current = MigrationContext.configure(conn).get_current_revision()
        except OperationalError as exc:
            raise StorageError(
                f"database {_display(self.url)} is unreachable: {exc.orig}",
                fix="check database_url in the config and that the server is running",
            ) from exc
        return current, head

    def upgrade(self) -> tuple[str | None, str | None]:
        """Apply every pending migration; returns (revision before, revision after). Several processes
        may run it at once: one migrates, the others wait for it and find the schema current."""
        from alembic import command  # noqa: PLC0415

        with self._upgrade_lock():
            before, _ = self.schema_revisions()
            command.upgrade(self._alembic(), "head")
            after, _ = self.schema_revisions()
        return before, after

    @contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        """PostgreSQL: a session advisory lock, held by its own connection while alembic migrates on
        another. SQLite: an exclusive lock on a file beside the database (BEGIN EXCLUSIVE would lock
        alembic out too)."""
        if self.engine.dialect.name == "postgresql":
            try:
                conn = self.engine.connect()
            except OperationalError as exc:
                raise StorageError(
                    f"database {_display(self.url)} is unreachable: {exc.orig}",
                    fix="check database_url in the config and that the server is running",
                ) from exc
            with conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK})
                conn.commit()  # the lock is the session's: it outlives the transaction
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK})
                    conn.commit()
        elif self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            path = Path(self.url.removeprefix("sqlite:///") + ".upgrade-lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the file lets the lock go
        else:
            yield

    def require_current_schema(self) -> None:
        """Raise StorageError with the one-line fix when migrations are pending.

        The common case (the schema is current) is one query and a directory listing; alembic is
        loaded only to describe a mismatch.
        """
        try:
            with self.engine.connect() as conn:
                stored = (
                    conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                    if inspect(conn).has_table("alembic_version")
                    else None
                )
        except OperationalError:
            stored = None  # unreachable: schema_revisions says so with its fix
        if stored is not None and stored == shipped_head():
            return
        current, head = self.schema_revisions()
        if current != head:
            raise StorageError(
                f"database schema is at {current or 'nothing'}, this mailsync needs {head}",
                fix="run `mailsync db upgrade` (with the same --config)",
            )

    def dispose(self) -> None:
        self.engine.dispose()
