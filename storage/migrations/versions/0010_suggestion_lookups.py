"""Suggestions looked up by their deal and their contacts, not by their JSON payload

Revision ID: 0010
Revises: 0009

Processing read, per touched thread, the open new-opportunity suggestions whose payload lists one of the
thread's senders (a LIKE over every one of them) and the link suggestions whose payload names one of
the candidate deals (JSON extracted from every link suggestion): both costs grew with the table.

- `suggestion.opportunity_id`: the payload's `opportunity_id` (link and stage proposals name their deal),
  indexed. No foreign key: the payload may name a deal the CRM no longer has.
- `suggestion_contact`: one row per address of a payload's `contacts` ("a@x; b@y"), lower-cased,
  indexed on the address; its rows go with their suggestion (ON DELETE CASCADE).

The ORM fills both whenever a payload is set (storage/models.py, `Suggestion._from_payload`); this
migration fills them for the suggestions made before it, in Python, so SQLite and PostgreSQL read the
JSON the same way. The reads constrain nothing but the address or the deal in SQL (kind, status, mode
are checked on the few rows found): SQLite, without statistics, otherwise preferred ix_suggestion_kind_status
as soon as a thread had several senders or candidate deals, and read every open suggestion of the kind.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_EMAIL = 320
_BATCH = 1000

_suggestion = sa.table(
    "suggestion", sa.column("id", sa.Integer()), sa.column("payload", sa.JSON()), sa.column("opportunity_id")
)
_contact = sa.table("suggestion_contact", sa.column("suggestion_id"), sa.column("email"))


def upgrade() -> None:
    with op.batch_alter_table("suggestion") as batch:
        batch.add_column(sa.Column("opportunity_id", sa.Integer(), nullable=True))
        batch.create_index("ix_suggestion_opportunity_id", ["opportunity_id"])
    op.create_table(
        "suggestion_contact",
        sa.Column("suggestion_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=_EMAIL), nullable=False),
        sa.ForeignKeyConstraint(
            ["suggestion_id"],
            ["suggestion.id"],
            name="fk_suggestion_contact_suggestion_id_suggestion",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("suggestion_id", "email", name="pk_suggestion_contact"),
    )
    op.create_index("ix_suggestion_contact_email", "suggestion_contact", ["email"])
    _backfill(op.get_bind())


def _backfill(bind: sa.Connection) -> None:
    """Both, for every suggestion there is, a batch of rows at a time (a payload is a few hundred bytes)."""
    after = 0
    while True:
        rows = bind.execute(
            sa.select(_suggestion.c.id, _suggestion.c.payload)
            .where(_suggestion.c.id > after)
            .order_by(_suggestion.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        after = rows[-1].id
        deals = [
            {"row": row.id, "deal": deal} for row in rows if (deal := _deal(row.payload or {})) is not None
        ]
        if deals:
            bind.execute(
                sa.update(_suggestion)
                .where(_suggestion.c.id == sa.bindparam("row"))
                .values(opportunity_id=sa.bindparam("deal")),
                deals,
            )
        contacts = [
            {"suggestion_id": row.id, "email": email} for row in rows for email in _emails(row.payload or {})
        ]
        if contacts:
            bind.execute(sa.insert(_contact), contacts)


# As storage/models.py reads a payload at this revision (a migration does not follow later code).
def _deal(payload: dict[str, Any]) -> int | None:
    deal = payload.get("opportunity_id")
    return deal if isinstance(deal, int) and not isinstance(deal, bool) else None


def _emails(payload: dict[str, Any]) -> list[str]:
    listed = payload.get("contacts")
    found = {e.strip().lower() for e in listed.split(";")} if isinstance(listed, str) else set()
    return sorted(e for e in found if e and len(e) <= _EMAIL)


def downgrade() -> None:
    op.drop_index("ix_suggestion_contact_email", table_name="suggestion_contact")
    op.drop_table("suggestion_contact")
    with op.batch_alter_table("suggestion") as batch:
        batch.drop_index("ix_suggestion_opportunity_id")
        batch.drop_column("opportunity_id")
