"""Forget tombstones (keyed hashes of forgotten addresses)

Revision ID: 0007
Revises: 0006

`mailsync forget EMAIL` removes a person everywhere and leaves a tombstone: HMAC-SHA256 of the
normalised address under the tombstone key (storage/forget.py), never the address itself, so that a
re-import, a sync or a replay recognises the person without the database naming them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tombstone",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_tombstone")),
    )


def downgrade() -> None:
    op.drop_table("tombstone")
