"""Alembic environment: runs migrations on the engine that storage.repo.Repo hands over."""

from __future__ import annotations

from alembic import context

from storage.models import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )
    context.run_migrations()
