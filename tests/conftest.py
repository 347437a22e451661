"""Shared fixtures: a config in a temp dir, a migrated SQLite database, the pipeline, the corpora."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from config.settings import Settings, load_settings
from mailsync.logs import configure_logging
from mailsync.parse_worker import ParseWorker
from mailsync.pipeline import Pipeline
from storage.archive import Archive
from storage.repo import Repo

if TYPE_CHECKING:
    from collections.abc import Iterator

# Unconfigured structlog prints every debug event; tests that look at logs use capture_logs().
configure_logging(json=False, level="warning")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
DEMO = FIXTURES / "demo"
CORPORA = ROOT.parent / "shared" / "corpora"


def write_config(directory: Path, extra: str = "") -> Path:
    """A config like the demo's, with its database, archive and event log inside `directory`."""
    path = directory / "mailsync.toml"
    path.write_text(
        textwrap.dedent(
            """\
            database_url = "sqlite:///var/mailsync.db"
            internal_domains = ["northwind.example"]

            [[mailboxes]]
            name = "dana"
            owner = "dana@northwind.example"
            """
        )
        + textwrap.dedent(extra),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def settings(config_file: Path) -> Settings:
    return load_settings(config_file)


@pytest.fixture
def repo(settings: Settings) -> Repo:
    """A real SQLite database in tmp_path, built by the Alembic migrations."""
    repo = Repo(settings.database_url)
    repo.upgrade()
    yield repo
    repo.dispose()


@pytest.fixture(scope="session")
def parse_worker() -> ParseWorker:
    """One parser process for the session (spawning costs a few hundred ms)."""
    from config.settings import ParseLimits  # noqa: PLC0415

    with ParseWorker(ParseLimits()) as worker:
        yield worker


@pytest.fixture
def pipeline(settings: Settings, repo: Repo, parse_worker: ParseWorker) -> Pipeline:
    return Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)


@pytest.fixture
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.fail(f"the shared corpora are missing at {CORPORA}: clone beside ../shared as CI does")
    return CORPORA


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """Let debug/info events through the filtering logger that conftest configures at warning."""
    old = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(wrapper_class=old)
