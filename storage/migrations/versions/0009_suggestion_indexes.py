"""Indexes for the reads processing makes per touched thread

Revision ID: 0009
Revises: 0008

A thread's own suggestions (`mailstore.sync_suggestions`), one kind's open suggestions
(`opportunity_context`, `_proposed_earlier`) and the threads of a deal were read by scanning their
tables, once per touched thread: processing fell from 92 to 48 msg/s between an empty database and one
of 20,000 messages (`python -m bench.run --only growth`).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_suggestion_thread_id_status", "suggestion", ["thread_id", "status"])
    op.create_index("ix_suggestion_kind_status", "suggestion", ["kind", "status"])
    op.create_index("ix_thread_opportunity_id", "thread", ["opportunity_id"])


def downgrade() -> None:
    op.drop_index("ix_thread_opportunity_id", table_name="thread")
    op.drop_index("ix_suggestion_kind_status", table_name="suggestion")
    op.drop_index("ix_suggestion_thread_id_status", table_name="suggestion")
