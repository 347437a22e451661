"""Text bound for the database: NUL and lone surrogates become U+FFFD in every column, on SQLite too."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from storage import models as m
from storage.models import db_text
from storage.search import include_schema_name

NUL = "\x00"
ESCAPED = "caf\udce9"  # b"caf\xe9" decoded as UTF-8 with surrogateescape
HIGH = "\ud83d"  # half of a UTF-16 pair


def test_db_text_replaces_nul_and_lone_surrogates_one_for_one():
    assert db_text(f"a{NUL}b") == "a\ufffdb"
    assert db_text(ESCAPED) == "caf\ufffd"
    assert db_text(f"{HIGH}\ude00 {NUL}{NUL}") == "\ufffd\ufffd \ufffd\ufffd"


def test_db_text_keeps_every_other_character():
    text = "Prés 😀 \ufffd tab\t nl\n \x01 \u202e end"
    assert db_text(text) == text


# st.text() leaves surrogates out whatever its alphabet: a list of characters, joined, does not.
_EDGES = st.sampled_from([NUL, HIGH, "\udfff", "\ude00", "é", "a", "😀", "\ufffd"])


@given(st.lists(st.one_of(_EDGES, st.characters(codec=None, exclude_categories=()))).map("".join))
def test_db_text_replaces_exactly_what_the_pattern_names(text):
    """The fast path (no NUL, encodes as UTF-8) leaves nothing behind that the full scan would replace."""
    assert db_text(text) == m._UNSAFE.sub("\ufffd", text)


def _hostile_message(session) -> m.Message:
    session.add(m.Blob(sha256="b" * 64, size=1))
    message = m.Message(
        fingerprint="f" * 64,
        blob_sha256="b" * 64,
        message_id=f"id{NUL}@acme.example",
        status="parsed",
        subject=f"Pr{ESCAPED} {NUL}",
        sender=f"rachel{HIGH}@acme.example",
        body_text=f"Price list{NUL}attached",
        attachments=[f"deal{NUL}.pdf", ESCAPED],
    )
    session.add(message)
    session.flush()
    session.add(m.Participant(message_pk=message.id, role="from", email="r@acme.example", name=ESCAPED))
    session.add(m.Quarantine(message_pk=message.id, reason=f"bad {NUL}"))
    return message


def test_a_row_with_nul_and_lone_surrogates_round_trips_as_replacement_characters(repo):
    with repo.session() as s:
        _hostile_message(s)
        s.add(
            m.Suggestion(
                key=f"k{NUL}",
                kind="new_contact",
                summary=ESCAPED,
                payload={f"name{NUL}": ESCAPED, "nested": [{"quote": f"x{NUL}y"}, 3, None]},
                confidence=0.5,
                evidence=[{"quote": f"{HIGH}!"}],
            )
        )
    with repo.session() as s:
        message = s.scalars(select(m.Message)).one()
        person = s.scalars(select(m.Participant)).one()
        reason = s.scalars(select(m.Quarantine.reason)).one()
        suggestion = s.scalars(select(m.Suggestion)).one()
    assert message.message_id == "id\ufffd@acme.example"
    assert message.subject == "Prcaf\ufffd \ufffd"
    assert message.sender == "rachel\ufffd@acme.example"
    assert message.body_text == "Price list\ufffdattached"
    assert message.attachments == ["deal\ufffd.pdf", "caf\ufffd"]
    assert person.name == "caf\ufffd"
    assert reason == "bad \ufffd"
    assert suggestion.key == "k\ufffd"
    assert suggestion.summary == "caf\ufffd"
    assert suggestion.payload == {"name\ufffd": "caf\ufffd", "nested": [{"quote": "x\ufffdy"}, 3, None]}
    assert suggestion.evidence == [{"quote": "\ufffd!"}]


def test_a_lookup_by_the_raw_value_finds_the_stored_one(repo):
    """Values in a WHERE clause go through the same type, so the raw value still finds its row."""
    with repo.session() as s:
        _hostile_message(s)
    with repo.session() as s:
        found = s.scalar(select(m.Message.id).where(m.Message.message_id == f"id{NUL}@acme.example"))
    assert found is not None


def test_the_models_match_the_migrations(repo):
    """The text types change what is bound, not the column types: no migration is needed for them."""
    with repo.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_name": include_schema_name}
        )
        assert compare_metadata(context, m.Base.metadata) == []
