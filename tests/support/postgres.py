"""Throwaway databases on the local PostgreSQL (127.0.0.1:5432, user postgres, trust auth) for tests.

Every database a run makes is named `mailsync_<run>_<n>`, so two runs at once never meet and a run's
leftovers are easy to spot. Cloning from a migrated template (`CREATE DATABASE x TEMPLATE y`) gives
each test an empty, current schema in a fraction of the time the migrations take.
"""

from __future__ import annotations

import itertools
import queue
import secrets
import threading

import psycopg
from psycopg import sql

HOST = "127.0.0.1"
PORT = 5432
USER = "postgres"
START_HINT = "run scripts/start-postgres.sh (PostgreSQL must be installed, e.g. apt-get install postgresql)"
CONNECT_TIMEOUT = 5


class PostgresCluster:
    """Makes and drops this run's databases; the admin connection goes to the `postgres` database."""

    def __init__(self, host: str = HOST, port: int = PORT, user: str = USER) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.run = secrets.token_hex(4)
        self._numbers = itertools.count(1)
        self._created: list[str] = []
        self._doomed: queue.Queue[str] = queue.Queue()
        self._dropper: threading.Thread | None = None

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname="postgres",
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        )

    def unavailable(self) -> str | None:
        """Why the tests cannot use this server, or None when they can."""
        try:
            with self._admin() as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return f"PostgreSQL unreachable at {self.host}:{self.port} as {self.user} ({first}): {START_HINT}"
        return None

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{name}"

    def create(self, *, template: str | None = None) -> str:
        """A new database (a copy of `template` if given; nobody may be connected to it); its name."""
        name = f"mailsync_{self.run}_{next(self._numbers)}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self._admin() as conn:
            conn.execute(query)
        self._created.append(name)
        return name

    def drop(self, name: str) -> None:
        """Drop `name`; FORCE (PostgreSQL 13+) first ends leftover connections, e.g. of an engine a test
        did not dispose, and waits for them to go, which a separate pg_terminate_backend() does not."""
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self._created:
            self._created.remove(name)

    def drop_soon(self, name: str) -> None:
        """Drop `name` in a background thread: DROP DATABASE waits for a checkpoint (seconds on a busy
        server), which a test's teardown need not wait for. `drop_all` waits for these drops."""
        if self._dropper is None:
            self._dropper = threading.Thread(target=self._drop_doomed, name="pg-dropper", daemon=True)
            self._dropper.start()
        self._doomed.put(name)

    def _drop_doomed(self) -> None:
        while True:
            name = self._doomed.get()
            try:
                self.drop(name)
            except psycopg.Error:
                pass  # drop_all tries again
            finally:
                self._doomed.task_done()

    def drop_all(self) -> None:
        """Drop every database this run made and has not dropped yet, newest first."""
        self._doomed.join()
        for name in reversed(list(self._created)):
            self.drop(name)
