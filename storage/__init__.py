"""Storage: the raw archive, the event log and the database (models, migrations, the repository)."""
