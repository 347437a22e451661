"""Digests and decisions: per-rep digest settings, digests sent, decision edits, single-use link nonces

Revision ID: 0003
Revises: 0002

rep gains the optional reps.csv columns (lead, timezone, digest_at, locale) and paused_at (a rep who
pressed "unsubscribe"); digest_send records each digest once per (rep, kind, period) so none is sent
twice; decision keeps the edits a rep made and the event and digest it came from; used_link holds the
nonces of links already used.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rep") as batch:
        batch.add_column(sa.Column("lead", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("digest_at", sa.String(length=5), nullable=True))
        batch.add_column(sa.Column("locale", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("paused_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("decision") as batch:
        batch.add_column(sa.Column("edits", sa.JSON(), server_default="{}", nullable=False))
        batch.add_column(sa.Column("digest_token", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("event_id", sa.String(length=64), nullable=True))
    op.create_table(
        "digest_send",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("rep", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("period", sa.String(length=20), nullable=False),
        sa.Column("message_id", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_send")),
        sa.UniqueConstraint("token", name=op.f("uq_digest_send_token")),
        sa.UniqueConstraint("rep", "kind", "period", name=op.f("uq_digest_send_rep_kind_period")),
    )
    op.create_table(
        "used_link",
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("rep", sa.String(length=320), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_used_link")),
    )


def downgrade() -> None:
    op.drop_table("used_link")
    op.drop_table("digest_send")
    with op.batch_alter_table("decision") as batch:
        batch.drop_column("event_id")
        batch.drop_column("digest_token")
        batch.drop_column("edits")
    with op.batch_alter_table("rep") as batch:
        for column in ("paused_at", "locale", "digest_at", "timezone", "lead"):
            batch.drop_column(column)
