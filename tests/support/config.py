"""mailsync TOML config for tests and benchmarks that capture from the Dovecot test server."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import pytest

    from tests.support.dovecot import DovecotServer

OWNER = "dana@northwind.example"
PASSWORD_ENV = "TEST_IMAP_PW"


def imap_mailbox(
    server: DovecotServer,
    username: str,
    *,
    password_env: str,
    name: str = "imap",
    owner: str = OWNER,
    folders: Sequence[str] | None = ("INBOX",),
) -> str:
    """A `[[mailboxes]]` table syncing `username` from `server` over plain IMAP on loopback.

    The password is read from the environment variable `password_env` (set it in the test, or in the
    environment of the `mailsync` subprocess). `folders=None` leaves the key out (mailsync's default:
    INBOX and the \\Sent special-use folder). Append the result to a config file, e.g. with
    `tests.conftest.write_config(tmp_path, imap_mailbox(...))`.
    """
    lines = [
        "",
        "[[mailboxes]]",
        f"name = {json.dumps(name)}",
        f"owner = {json.dumps(owner)}",
        f"host = {json.dumps(server.host)}",
        f"port = {server.port}",
        'security = "plain"',
        f"username = {json.dumps(username)}",
        f"password_env = {json.dumps(password_env)}",
    ]
    if folders is not None:
        # JSON strings are TOML basic strings: "\\Sent" stays a backslash.
        lines.append(f"folders = {json.dumps(list(folders))}")
    return "\n".join(lines) + "\n"


def imap_config(
    directory: Path,
    server: DovecotServer,
    username: str,
    password: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    folders: Sequence[str] | None = ("INBOX", "\\Sent"),
    extra: str = "",
) -> Path:
    """The tests' usual config (`tests.conftest.write_config`) plus mailbox "imap" syncing `username`
    from `server`, with `extra` TOML after it; `password` is passed in the environment for the test."""
    from tests.conftest import write_config  # noqa: PLC0415 - not at import: the benchmarks use this module

    monkeypatch.setenv(PASSWORD_ENV, password)
    mailbox = imap_mailbox(server, username, password_env=PASSWORD_ENV, folders=folders)
    return write_config(directory, mailbox + extra)
