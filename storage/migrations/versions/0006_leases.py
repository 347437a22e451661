"""Mailbox leases and single-run jobs for several daemon processes

Revision ID: 0006
Revises: 0005

lease: who works on a mailbox (or the digest job) until when, with a fencing token that grows on every
change of holder, so that several `mailsync run` processes on one PostgreSQL share the mailboxes and a
process that lost its lease cannot commit for it (storage/leases.py). job_run: one row per (job, period),
inserted before a daily job runs, so that it runs once whatever the number of processes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lease",
        sa.Column("name", sa.String(length=400), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("taken_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_lease")),
    )
    op.create_table(
        "job_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job", sa.String(length=50), nullable=False),
        sa.Column("period", sa.String(length=20), nullable=False),
        sa.Column("holder", sa.String(length=300), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_run")),
        sa.UniqueConstraint("job", "period", name=op.f("uq_job_run_job_period")),
    )


def downgrade() -> None:
    op.drop_table("job_run")
    op.drop_table("lease")
