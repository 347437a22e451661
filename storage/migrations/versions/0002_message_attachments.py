"""message.attachments: the file names of a message's attachments (evidence for the propose stage)

Revision ID: 0002
Revises: 0001

Messages captured before this revision get an empty list; re-importing their archive does not
refill it (they are known), so their attachments simply do not count as evidence.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("attachments", sa.JSON(), server_default="[]", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("message") as batch:
        batch.drop_column("attachments")
