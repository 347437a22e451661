"""Index participants by account: the threads at an account since a date

Revision ID: 0011
Revises: 0010

When a customer's mail wins or loses a deal, the threads at that account that began afterwards are
proposed again (a request there is the next deal, not the settled one: nlp/link.py); they are found
through their participants' account.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_participant_account_id", "participant", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_participant_account_id", table_name="participant")
