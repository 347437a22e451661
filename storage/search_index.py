"""The SQLite search index (migration 0005) built once, instead of row by row, while rebuild fills a
new database.

FTS5 writes a segment of postings at every commit and merges them as they pile up: a batch at a time,
indexing 5,000 messages took 0.6-0.8 s of a 7 s rebuild on one core, where the 'rebuild' command takes
0.16 s for the same rows. So `rebuild --into` drops the three triggers that keep the index current,
fills the database, then creates them again and builds the index from the message table.

The triggers are created from TRIGGERS below, not from what the database held: a rebuild that died after
dropping them would otherwise find none to restore when run again. tests/integration/test_rebuild.py
checks that TRIGGERS is exactly what the migrations create.

PostgreSQL's index (a generated tsvector column and a GIN index) stays as it is: computing the vectors
is its cost (2.3 s of set-based UPDATEs of 5,000 bodies, 0.1 s without the column), and built at the
end it would cost the same.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import text

from storage.search import SEARCH_TABLE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

_COLUMNS = "subject, sender, body_text"
_OLD = "old.id, old.subject, old.sender, old.body_text"
_NEW = "new.id, new.subject, new.sender, new.body_text"
TRIGGERS = {  # as migration 0005 creates them; external content: the index is told the old values
    f"{SEARCH_TABLE}_insert": (
        f"CREATE TRIGGER {SEARCH_TABLE}_insert AFTER INSERT ON message BEGIN "
        f"INSERT INTO {SEARCH_TABLE}(rowid, {_COLUMNS}) VALUES ({_NEW}); END"
    ),
    f"{SEARCH_TABLE}_delete": (
        f"CREATE TRIGGER {SEARCH_TABLE}_delete AFTER DELETE ON message BEGIN "
        f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, {_COLUMNS}) VALUES ('delete', {_OLD}); END"
    ),
    f"{SEARCH_TABLE}_update": (
        f"CREATE TRIGGER {SEARCH_TABLE}_update AFTER UPDATE OF {_COLUMNS} ON message BEGIN "
        f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}, rowid, {_COLUMNS}) VALUES ('delete', {_OLD}); "
        f"INSERT INTO {SEARCH_TABLE}(rowid, {_COLUMNS}) VALUES ({_NEW}); END"
    ),
}


def triggers(engine: Engine) -> dict[str, str]:
    """The search index's triggers in the database: name -> CREATE statement."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE :prefix"),
            {"prefix": f"{SEARCH_TABLE}_%"},
        )
        return {str(name): str(sql) for name, sql in rows}


@contextmanager
def built_at_the_end(engine: Engine) -> Iterator[None]:
    """On SQLite: no index kept while the block fills the database; then the triggers again and the index
    built from every message. Left without its triggers if the block raises: rebuild refuses that
    database as not empty, and a run into a new one restores them."""
    if engine.dialect.name != "sqlite":
        yield
        return
    with engine.begin() as conn:
        for name in TRIGGERS:
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    yield
    with engine.begin() as conn:
        for create in TRIGGERS.values():
            conn.execute(text(create))
        conn.execute(text(f"INSERT INTO {SEARCH_TABLE}({SEARCH_TABLE}) VALUES ('rebuild')"))
