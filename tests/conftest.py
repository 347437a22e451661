"""Shared fixtures: a config in a temp dir, a migrated SQLite or PostgreSQL database, the pipeline, the
corpora."""

from __future__ import annotations

import json
import logging
import os
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from config.settings import Settings, load_settings
from mailsync.logs import configure_logging
from mailsync.mail.parse_worker import ParseWorker
from mailsync.pipeline.ingest import Pipeline
from storage.archive import Archive
from storage.repo import Repo
from tests.support.postgres import PostgresCluster
from tests.support.smtp import SmtpServer

if TYPE_CHECKING:
    from collections.abc import Iterator


ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
DEMO = FIXTURES / "demo"
CORPORA = ROOT.parent / "shared" / "corpora"

_PG_SKIP_REASON = pytest.StashKey[str]()


BOTH_DBS = "both_dbs"
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    """Unconfigured structlog prints every debug event; tests that look at logs use capture_logs().

    A hook, not module code: helpers import this module again as `tests.conftest`, which must not reset
    a test's logging.
    """
    config.addinivalue_line(
        "markers", f"{BOTH_DBS}: run once on SQLite and once on PostgreSQL (see db_backend)"
    )
    configure_logging(json=False, level="warning")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # `@pytest.mark.both_dbs` (or a module's pytestmark) runs a test as test_x[sqlite] and
    # test_x[postgresql]; a test without it keeps the SQLite default. Module scope lets a module's shared,
    # expensive setup (an imported demo) be made once per backend and reused by its tests.
    if metafunc.definition.get_closest_marker(BOTH_DBS) is not None:
        metafunc.parametrize("db_backend", BACKENDS, indirect=True, scope="module")


def write_config(directory: Path, extra: str = "", *, database_url: str | None = None) -> Path:
    """A config like the demo's, with its database, archive and event log inside `directory`; with
    `database_url`, that database (e.g. a PostgreSQL one) instead of the SQLite file in `var/`."""
    path = directory / "mailsync.toml"
    url = json.dumps(database_url or "sqlite:///var/mailsync.db")  # a JSON string is a TOML basic string
    path.write_text(
        f"database_url = {url}\n"
        + textwrap.dedent(
            """\
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
def config_file(tmp_path: Path, db_url: str | None) -> Path:
    return write_config(tmp_path, database_url=db_url)


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


# --- PostgreSQL --------------------------------------------------------------------------------------


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Say once, plainly, why the PostgreSQL tests did not run (-ra lists each skip).
    reason = terminalreporter.config.stash.get(_PG_SKIP_REASON, None)
    if reason is not None:
        terminalreporter.write_line(f"PostgreSQL tests skipped: {reason}", yellow=True)


def _migrated(url: str) -> str:
    repo = Repo(url)
    try:
        repo.upgrade()
    finally:
        repo.dispose()  # a template must have no connections left when it is cloned
    return url


@pytest.fixture(scope="session")
def pg_cluster(pytestconfig: pytest.Config) -> Iterator[PostgresCluster]:
    """The local PostgreSQL; fails the run under CI=true, else skips, when it cannot be used.

    `pg_cluster.create()` makes an empty database of this run (e.g. to test `mailsync db upgrade`);
    every database the run made is dropped at the end.
    """
    cluster = PostgresCluster()
    reason = cluster.unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must not be skipped)", pytrace=False)
        pytestconfig.stash[_PG_SKIP_REASON] = reason
        pytest.skip(reason)
    yield cluster
    cluster.drop_all()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PostgresCluster) -> str:
    """This run's own database, migrated to head and shared by the session's tests (dropped at the
    end): for a database of a test's own, use `pg_fresh_url`."""
    return _migrated(pg_cluster.url(pg_cluster.create()))


@pytest.fixture(scope="session")
def _pg_template(pg_cluster: PostgresCluster) -> str:
    """A migrated database nobody connects to, cloned by `pg_fresh_url`."""
    name = pg_cluster.create()
    _migrated(pg_cluster.url(name))
    return name


@pytest.fixture
def pg_fresh_url(pg_cluster: PostgresCluster, _pg_template: str) -> Iterator[str]:
    """A PostgreSQL database for this test alone, migrated to head and empty; dropped after it (in the
    background)."""
    name = pg_cluster.create(template=_pg_template)
    yield pg_cluster.url(name)
    pg_cluster.drop_soon(name)


# --- Both databases ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def db_backend(request: pytest.FixtureRequest) -> str:
    """The database `config_file`, `settings`, `repo`, `pipeline` and `db_url` give the test: "sqlite",
    or under `@pytest.mark.both_dbs` "sqlite" then "postgresql"."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def db_url(db_backend: str, request: pytest.FixtureRequest) -> str | None:
    """`write_config(database_url=...)` for the test's `db_backend`: None on SQLite (the config's own
    var/mailsync.db, which `repo` or `mailsync db upgrade` migrates), else a migrated, empty PostgreSQL
    database of this test's own."""
    if db_backend == "postgresql":
        return str(request.getfixturevalue("pg_fresh_url"))
    return None


def shared_pg_url(request: pytest.FixtureRequest) -> str:
    """For a module-scoped fixture on PostgreSQL: a migrated, empty database of this run, dropped at the
    end of the session."""
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.url(cluster.create(template=request.getfixturevalue("_pg_template")))


def pg_copy_url(request: pytest.FixtureRequest, url: str) -> str:
    """A copy of the PostgreSQL database at `url` (e.g. a module's imported demo, all its engines
    disposed) for this test alone, dropped after it: what copying a SQLite file is on PostgreSQL."""
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = cluster.create(template=url.rsplit("/", 1)[1])
    request.addfinalizer(lambda: cluster.drop_soon(name))
    return cluster.url(name)


# --- SMTP --------------------------------------------------------------------------------------------


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd, plain, no auth) on a free loopback port; `.messages` holds what it
    accepted, `.smtp_toml()` is the `[smtp]` section for it. TLS and AUTH: tests/support/smtp.py."""
    with SmtpServer() as server:
        yield server
