"""Full-text search over archived mail (SQLite FTS5, PostgreSQL tsvector + GIN)

Revision ID: 0005
Revises: 0004

The index covers each message's subject, sender and body text, and the database keeps it current, so
no code that writes messages has to remember it: capture inserts a message "pending" with an empty
body and processing fills it in by an UPDATE; a future `forget` deletes rows.

- SQLite: `message_fts`, an FTS5 table with external content (`message` holds the text, the index
  holds only postings), kept in step by three triggers on `message`. unicode61 folds case; diacritics
  are kept (remove_diacritics 0) so that "cafe" and "café" differ on SQLite exactly as on PostgreSQL.
- PostgreSQL: `message.search_vector`, a stored generated tsvector with a GIN index. The 'simple'
  configuration lower-cases and stems nothing: mail is in every language, and a stemmer for one
  language mangles words of the others. Subject weighs A, sender B, body D.

Both are filled for the messages already captured (the FTS5 'rebuild' command; PostgreSQL computes a
generated column for every existing row as it adds it). The ORM does not model these objects:
storage/search.py's `include_schema_name` leaves them out of model/schema comparisons.

A later migration that rebuilds `message` on SQLite (Alembic batch mode copies the table) drops these
triggers with the old table and must create them again; tests/integration/test_search.py fails if not.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = "subject, sender, body_text"
_OLD = "old.id, old.subject, old.sender, old.body_text"
_NEW = "new.id, new.subject, new.sender, new.body_text"

SQLITE_UP = (
    (
        "CREATE VIRTUAL TABLE message_fts USING fts5("
        f"{_COLUMNS}, content='message', content_rowid='id', tokenize='unicode61 remove_diacritics 0')"
    ),
    # External content: the index must be told the exact old values to take a row out of it.
    (
        "CREATE TRIGGER message_fts_insert AFTER INSERT ON message BEGIN "
        f"INSERT INTO message_fts(rowid, {_COLUMNS}) VALUES ({_NEW}); END"
    ),
    (
        "CREATE TRIGGER message_fts_delete AFTER DELETE ON message BEGIN "
        f"INSERT INTO message_fts(message_fts, rowid, {_COLUMNS}) VALUES ('delete', {_OLD}); END"
    ),
    (
        f"CREATE TRIGGER message_fts_update AFTER UPDATE OF {_COLUMNS} ON message BEGIN "
        f"INSERT INTO message_fts(message_fts, rowid, {_COLUMNS}) VALUES ('delete', {_OLD}); "
        f"INSERT INTO message_fts(rowid, {_COLUMNS}) VALUES ({_NEW}); END"
    ),
    "INSERT INTO message_fts(message_fts) VALUES ('rebuild')",  # the messages captured before
)
SQLITE_DOWN = (
    "DROP TRIGGER IF EXISTS message_fts_update",
    "DROP TRIGGER IF EXISTS message_fts_delete",
    "DROP TRIGGER IF EXISTS message_fts_insert",
    "DROP TABLE IF EXISTS message_fts",
)
# PostgreSQL's parser keeps an address, a host name, a URL, a path or a hyphenated word as one token
# ("dana@northwind.example"), where FTS5 sees words ("dana", "northwind", "example"): these characters
# become spaces first, so both backends find the same words. storage/search.py does the same to queries.
SEPARATORS = "@./:-_+<>&=~%"
_WEIGHTS = (("subject", "A"), ("sender", "B"), ("body_text", "D"))


def _words(column: str) -> str:
    spaces = " " * len(SEPARATORS)
    return f"to_tsvector('simple'::regconfig, translate(coalesce({column}, ''), '{SEPARATORS}', '{spaces}'))"


POSTGRESQL_UP = (
    "ALTER TABLE message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ("
    + " || ".join(f"setweight({_words(column)}, '{weight}')" for column, weight in _WEIGHTS)
    + ") STORED",
    "CREATE INDEX ix_message_search_vector ON message USING gin (search_vector)",
)
POSTGRESQL_DOWN = (
    "DROP INDEX IF EXISTS ix_message_search_vector",
    "ALTER TABLE message DROP COLUMN IF EXISTS search_vector",
)


def _run(statements: dict[str, tuple[str, ...]]) -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in statements:
        msg = f"full-text search supports sqlite and postgresql, not {dialect}"
        raise NotImplementedError(msg)
    for statement in statements[dialect]:
        op.execute(statement)


def upgrade() -> None:
    _run({"sqlite": SQLITE_UP, "postgresql": POSTGRESQL_UP})


def downgrade() -> None:
    _run({"sqlite": SQLITE_DOWN, "postgresql": POSTGRESQL_DOWN})
