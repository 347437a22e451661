"""Alembic migrations; `mailsync db upgrade` applies them. Never `create_all` outside tests."""
