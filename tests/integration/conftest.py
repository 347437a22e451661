"""Fixtures for integration tests against a real Dovecot IMAP server."""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.conftest import shared_pg_url
from tests.support.demo import imported_demo
from tests.support.dovecot import DovecotServer, missing_requirement
from tests.support.forkserver import ForkServer

_HERE = Path(__file__).resolve().parent

DEFAULT_USERS = {"dana": "danapw", "sam": "sampw"}

_SKIP_REASON = pytest.StashKey[str]()
_user_numbers = itertools.count(1)


class ImapUser(NamedTuple):
    """A throwaway IMAP account; unpacks as (username, password)."""

    name: str
    password: str


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items; mark only those under this directory.
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Say once, plainly, why the Dovecot tests did not run (-ra lists each skip).
    reason = terminalreporter.config.stash.get(_SKIP_REASON, None)
    if reason is not None:
        terminalreporter.write_line(f"Dovecot integration tests skipped: {reason}", yellow=True)


def require_dovecot(config: pytest.Config) -> None:
    """Fail under CI=true, else skip, when Dovecot cannot run here."""
    reason = missing_requirement()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: integration tests must not be skipped)", pytrace=False)
    config.stash[_SKIP_REASON] = reason
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dovecot(pytestconfig: pytest.Config) -> Iterator[DovecotServer]:
    """One Dovecot for the session, with users dana/danapw and sam/sampw."""
    require_dovecot(pytestconfig)
    server = DovecotServer(users=DEFAULT_USERS)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def dovecot_factory(pytestconfig: pytest.Config) -> Iterator[Callable[..., DovecotServer]]:
    """Make private servers (for restart/outage or config tests); all closed after the test.

    `dovecot_factory(users=None, *, start=True, **DovecotServer kwargs)`; users
    default to dana/sam.
    """
    require_dovecot(pytestconfig)
    servers: list[DovecotServer] = []

    def make(users: dict[str, str] | None = None, *, start: bool = True, **kwargs: Any) -> DovecotServer:
        server = DovecotServer(users=DEFAULT_USERS if users is None else users, **kwargs)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def imap_user(dovecot: DovecotServer, request: pytest.FixtureRequest) -> ImapUser:
    """A fresh account per test, so tests never see each other's mail."""
    # Name carries the test name for reading Dovecot's log; counter keeps it unique.
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    user = ImapUser(f"u{next(_user_numbers)}-{stem}", secrets.token_hex(8))
    dovecot.add_user(user.name, user.password)
    return user


@pytest.fixture(scope="module")
def demo_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo imported once per module into SQLite: the `var/` directory each test copies."""
    return imported_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def demo_pg(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """The demo imported once per module into PostgreSQL: (its var/ without the database, the URL)."""
    url = shared_pg_url(request)
    return imported_demo(tmp_path_factory.mktemp("demo-pg"), url), url


@pytest.fixture(scope="module")
def forks() -> Iterator[ForkServer]:
    """A fork server that imported mailsync once: the module's processes start in milliseconds."""
    with ForkServer() as server:
        yield server
