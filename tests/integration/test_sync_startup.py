"""A `mailsync sync --once` with nothing new loads only what such a pass uses (issue 14): neither the
other commands' modules, nor the PostgreSQL dialect on SQLite, nor the redaction and matching code of
the purge (a capture-only pass: no purge code at all); nor does it start parse worker processes. Its start-up heap
is left out of the cycle collector's passes, the one at exit included. What it costs in seconds is the
benchmarks' business, not a test's."""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

import pytest

from tests.conftest import write_config
from tests.support.config import PASSWORD_ENV, imap_mailbox
from tests.support.mail import plain_mail
from tests.support.probe import probe

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.dovecot import DovecotServer

NOT_FOR_A_NOTHING_NEW_PASS = (
    "spacy",
    "mailparser",  # the parsers load in the parse workers only
    "nlp.match",  # the purge's "from outside" test: only with held mail to treat
    "mailsync.mail.redact",
    "sqlalchemy.dialects.postgresql",  # the lease INSERT of the other dialect
    "mailsync.cli.search",  # another command's module
    "mailsync.cli.replay",
    "mailsync.cli.proposals",
)


WORKER = "mailsync.mail.parse_worker"  # a parse worker's command line: `python -m` it


def loaded_by(*argv: str, env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    result = probe(*argv, env=env)
    return result["code"], set(result["modules"])


def test_help_loads_neither_settings_nor_logging() -> None:
    code, modules = loaded_by("--help")
    assert code == 0
    unwanted = {"config.settings", "pydantic_settings", "structlog"}  # it loads every command module
    assert unwanted & modules == set()


@pytest.mark.slow
def test_a_nothing_new_sync_loads_only_what_it_uses(tmp_path: Path, dovecot: DovecotServer) -> None:
    password = secrets.token_hex(8)
    user = f"startup{secrets.token_hex(3)}"
    dovecot.add_user(user, password)
    dovecot.append_many(user, "INBOX", [plain_mail(f"startup {k}") for k in range(3)])
    config = str(write_config(tmp_path, imap_mailbox(dovecot, user, password_env=PASSWORD_ENV)))
    env = {**os.environ, PASSWORD_ENV: password}
    assert loaded_by("--config", config, "db", "upgrade", env=env)[0] == 0
    first = probe("--config", config, "sync", "--once", env=env)  # the mail: captured, processed
    assert first["code"] == 0
    assert any(WORKER in child for child in first["children"])  # the probe sees parse workers start
    for argv in (("sync", "--once", "--capture-only"), ("sync", "--once")):  # nothing new now
        result = probe("--config", config, *argv, env=env)
        code, modules = result["code"], set(result["modules"])
        assert code == 0, argv
        assert "mailsync.pipeline.sync" in modules, argv  # it did sync
        assert set(NOT_FOR_A_NOTHING_NEW_PASS) & modules == set(), argv
        assert not any(WORKER in child for child in result["children"]), argv
        assert result["frozen"] > 0, argv  # the start-up's objects: out of the collector's passes
        assert result["collecting"], argv  # and the collector on again for what the pass makes
        if "--capture-only" in argv:  # a capture-only pass purges nothing: no forgetting code
            assert "mailsync.pipeline.forgetting" not in modules
