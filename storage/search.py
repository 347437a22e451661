"""Full-text search over archived mail: a query (storage/search_query.py) compiled for SQLite FTS5 and
PostgreSQL.

The index (migration 0005) covers subject, sender and body; the database keeps it current by trigger
(SQLite) or generated column (PostgreSQL). Every term goes to the backend as quoted text, never as its
own syntax: FTS5 `NEAR(`, `col:`, `^` and tsquery `&|!:` in a query are words and punctuation, split by
each backend's own tokenizer exactly as it split the mail. Letters are compared case-folded, diacritics
kept ('simple' on PostgreSQL, unicode61 on SQLite). Addresses, dates and mailboxes filter through their
own indexed tables; results are newest first, ties by id, the same order on both backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Text, and_, cast, column, exists, func, literal, literal_column, select, table
from sqlalchemy.dialects.postgresql import REGCONFIG

from config.errors import SearchError
from storage import models as m
from storage.records import normalise_email
from storage.search_query import Query, Term

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy import ColumnElement, Select
    from sqlalchemy.orm import Session

RECIPIENT_ROLES = ("to", "cc")
HIDDEN_STATUS = "digest"  # mailsync's own digests: copies of proposals, not the team's mail
EXCERPT_WIDTH = 160

# --- The schema objects the ORM does not model -----------------------------------------------------

SEARCH_TABLE = "message_fts"  # SQLite; FTS5 adds shadow tables message_fts_data, _idx, _docsize, _config
SEARCH_COLUMN = "search_vector"  # PostgreSQL, on message
SEARCH_INDEX = "ix_message_search_vector"


def include_schema_name(name: str | None, type_: str, parent_names: Mapping[Any, str | None]) -> bool:
    """Alembic `include_name` hook: leave the search index, which migration 0005 owns and the models do
    not describe, out of autogenerate and of model/schema comparisons."""
    if type_ == "table":
        return not (name or "").startswith(SEARCH_TABLE)
    if type_ == "column":
        return not (name == SEARCH_COLUMN and parent_names.get("table_name") == "message")
    if type_ == "index":
        return name != SEARCH_INDEX
    return True


# --- Searching -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Search:
    """What to look for: words and filters; at least the words or one address or subject filter."""

    query: Query = field(default_factory=Query)
    sender: str | None = None
    recipient: str | None = None
    participant: str | None = None
    subject: str | None = None
    since: datetime | None = None  # inclusive, naive UTC
    until: datetime | None = None  # exclusive, naive UTC
    mailbox: str | None = None
    limit: int = 20


@dataclass(frozen=True, slots=True)
class Hit:
    id: int
    sent_at: datetime | None
    sender: str | None
    subject: str
    status: str
    thread_id: int | None
    mailboxes: tuple[str, ...]
    excerpt: str


def parse_day(value: str, option: str, *, end: bool = False) -> datetime:
    """An ISO date (or date and time) as naive UTC; with `end`, a date means the end of that day."""
    value = value.strip()
    try:
        if len(value) == len("2024-03-04"):
            day = date.fromisoformat(value) + timedelta(days=end)
            return datetime(day.year, day.month, day.day, tzinfo=UTC).replace(tzinfo=None)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SearchError(f"{option} {value!r} is not a date", fix=f"write {option} 2024-03-04") from None
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def address(value: str) -> str:
    """An address filter as participants are stored: lower case, plus tag removed; `@domain` kept."""
    value = value.strip()
    return value.lower() if value.startswith("@") else normalise_email(value)


def _fts5_term(term: Term) -> str:
    quoted = '"' + term.text.replace('"', '""') + '"'
    return f"{quoted} *" if term.prefix else quoted


def _fts5(query: Query, subject: str | None) -> str:
    """The FTS5 MATCH expression: every term a quoted string, so no FTS5 operator comes from the user."""
    parts = [
        group_text if len(group) == 1 else f"({group_text})"
        for group in query.required
        for group_text in [" OR ".join(_fts5_term(t) for t in group)]
    ]
    if subject is not None:
        parts.append(f"subject : {_fts5_term(Term(subject, phrase=True))}")
    expression = " AND ".join(parts)
    for term in query.excluded:
        expression += f" NOT {_fts5_term(term)}"
    return expression


_SIMPLE = cast(literal("simple"), REGCONFIG)


# What migration 0005 turns into spaces before PostgreSQL's parser sees a text (see there).
SEPARATORS = "@./:-_+<>&=~%"


def _tsquery(term: Term) -> ColumnElement[Any]:
    if term.prefix:  # a plain word (parse_query saw to it): quoted for to_tsquery, then :*
        return func.to_tsquery(_SIMPLE, literal("'" + term.text.replace("'", "''") + "':*", Text))
    words = func.translate(literal(term.text, Text), SEPARATORS, " " * len(SEPARATORS))
    return func.phraseto_tsquery(_SIMPLE, words)


def _combine(name: str, items: Sequence[ColumnElement[Any]]) -> ColumnElement[Any]:
    result = items[0]
    for item in items[1:]:
        result = getattr(func, name)(result, item)
    return result


def _postgresql(query: Query, subject: str | None) -> ColumnElement[bool]:
    """The tsquery, built from functions (phraseto_tsquery, tsquery_and/or/not), never from user syntax."""
    parts = [_combine("tsquery_or", [_tsquery(t) for t in group]) for group in query.required]
    if subject is not None:
        parts.append(_tsquery(Term(subject, phrase=True)))
    parts += [func.tsquery_not(_tsquery(t)) for t in query.excluded]
    vector: ColumnElement[Any] = literal_column(f"message.{SEARCH_COLUMN}")
    condition: ColumnElement[bool] = vector.op("@@", return_type=Boolean)(_combine("tsquery_and", parts))
    if subject is not None:  # the whole vector matched; the subject is checked on those rows only
        subject_text = func.translate(m.Message.subject, SEPARATORS, " " * len(SEPARATORS))
        subject_vector = func.to_tsvector(_SIMPLE, subject_text)
        condition = and_(condition, subject_vector.op("@@", return_type=Boolean)(_tsquery(Term(subject))))
    return condition


def _participants(email: str, roles: Sequence[str] | None) -> ColumnElement[bool]:
    people = select(m.Participant.message_pk)
    if email.startswith("@"):
        people = people.where(m.Participant.email.endswith(email, autoescape=True))  # % and _ as written
    else:
        people = people.where(m.Participant.email == email)
    if roles is not None:
        people = people.where(m.Participant.role.in_(roles))
    return m.Message.id.in_(people)


def statement(search: Search, dialect: str) -> Select[Any]:
    """The query for `search` on `dialect` ("sqlite" or "postgresql"); SearchError when it would have
    to read every message (no words and no address or subject filter)."""
    subject = " ".join(m.db_text(search.subject).split()) if search.subject else None
    if subject is not None and not any(c.isalnum() for c in subject):
        subject = None
    conditions: list[ColumnElement[bool]] = []
    if search.query.required or subject is not None:
        if dialect == "sqlite":
            index = table(SEARCH_TABLE, column("rowid"))
            match = literal_column(SEARCH_TABLE).op("MATCH", return_type=Boolean)
            matches = select(index.c.rowid).where(match(literal(_fts5(search.query, subject), Text)))
            conditions.append(m.Message.id.in_(matches))
        else:
            conditions.append(_postgresql(search.query, subject))
    for email, roles in (
        (search.sender, ("from",)),
        (search.recipient, RECIPIENT_ROLES),
        (search.participant, None),
    ):
        if email:
            conditions.append(_participants(address(email), roles))
    if not conditions:
        raise SearchError(
            "nothing to search for", fix="give words, or --from, --to, --participant or --subject"
        )
    if search.since is not None:
        conditions.append(m.Message.sent_at >= search.since)
    if search.until is not None:
        conditions.append(m.Message.sent_at < search.until)
    if search.mailbox is not None:
        conditions.append(
            exists().where(m.Provenance.message_pk == m.Message.id, m.Provenance.mailbox == search.mailbox)
        )
    conditions.append(m.Message.status != HIDDEN_STATUS)
    return (
        select(m.Message.id)
        .where(*conditions)
        .order_by(m.Message.sent_at.desc().nulls_last(), m.Message.id.desc())
        .limit(search.limit)
    )


def excerpt(body: str, words: Sequence[str], width: int = EXCERPT_WIDTH) -> str:
    """About `width` characters of `body` around the first of `words` it contains (else its start),
    on one line; quoted replies (lines starting with >) are skipped unless the word is only there."""
    own = " ".join(line for line in body.splitlines() if not line.lstrip().startswith(">"))
    for text in (" ".join(own.split()), " ".join(body.split())):
        found = [hit.start() for w in words if (hit := re.search(re.escape(w), text, re.IGNORECASE))]
        if found or not words:
            start = max(0, min(found, default=0) - width // 3)
            cut = text[start : start + width]
            return ("…" if start else "") + cut + ("…" if start + width < len(text) else "")
    return excerpt(body, [], width)


def search(session: Session, search: Search) -> list[Hit]:
    """The messages `search` finds, newest first, at most `search.limit`."""
    if (
        search.mailbox is not None
        and session.scalar(select(m.Mailbox.id).where(m.Mailbox.name == search.mailbox)) is None
    ):
        raise SearchError(
            f"--mailbox {search.mailbox!r}: no mailbox of that name in the archive",
            fix="`mailsync status` lists the mailboxes",
        )
    ids = list(session.scalars(statement(search, session.get_bind().dialect.name)))
    if not ids:
        return []
    rows = {
        row.id: row
        for row in session.execute(
            select(
                m.Message.id, m.Message.sent_at, m.Message.sender, m.Message.subject, m.Message.status,
                m.Message.thread_id, m.Message.body_text,
            ).where(m.Message.id.in_(ids))
        )
    }  # fmt: skip
    boxes: dict[int, set[str]] = {}
    for pk, box in session.execute(
        select(m.Provenance.message_pk, m.Provenance.mailbox).where(m.Provenance.message_pk.in_(ids))
    ):
        boxes.setdefault(pk, set()).add(box)
    words = search.query.words + (search.subject.split() if search.subject else [])
    return [
        Hit(
            id=pk,
            sent_at=rows[pk].sent_at,
            sender=rows[pk].sender,
            subject=rows[pk].subject,
            status=rows[pk].status,
            thread_id=rows[pk].thread_id,
            mailboxes=tuple(sorted(boxes.get(pk, ()))),
            excerpt=excerpt(rows[pk].body_text, words),
        )
        for pk in ids
    ]


def explain(session: Session, search: Search) -> str:
    """The database's plan for `search` (EXPLAIN QUERY PLAN / EXPLAIN), one step a line."""
    dialect = session.get_bind().dialect
    query = statement(search, dialect.name)
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    raw = session.connection().exec_driver_sql(
        prefix + str(compiled),
        tuple(compiled.params[k] for k in compiled.positiontup or ())
        if compiled.positional
        else compiled.params,
    )
    return "\n".join(" ".join(str(v) for v in row) for row in raw)
