"""Alembic environment: runs migrations on the engine that storage.repo.Repo hands over."""

from __future__ import annotations

from alembic import context

from storage.models import Base
from storage.search import include_schema_name

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
        include_name=include_schema_name,  # the search index (0005) is not modelled
    )
    context.run_migrations()
