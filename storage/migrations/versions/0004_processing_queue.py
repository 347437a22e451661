"""The processing queue: captured messages wait as status "pending"; an index finds them

Revision ID: 0004
Revises: 0003

Capture records a message with status "pending" in the commit that archives it and moves its folder's
cursor; the processing stage (parse, match, thread, propose) takes the pending messages oldest first.
The status column exists already: this revision adds the index that makes the queue and the backlog
count cheap whatever the size of the message table. Messages captured before it are all processed.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_message_status"), "message", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_message_status"), table_name="message")
