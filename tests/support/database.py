"""Pointing a test's configs at the database its `db_backend` gives (tests/conftest.py: `db_url`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

DATABASE_ENV = "MAILSYNC_DATABASE_URL"  # config/settings.py: the environment overrides the config file


def use_database(monkeypatch: pytest.MonkeyPatch, url: str | None) -> None:
    """Point `load_settings()` and every `mailsync` the test runs, in process or as a subprocess that
    inherits the environment, at `url` (a PostgreSQL database), whatever config file it reads; None
    (SQLite) leaves each config its own `var/mailsync.db`."""
    if url is not None:
        monkeypatch.setenv(DATABASE_ENV, url)
