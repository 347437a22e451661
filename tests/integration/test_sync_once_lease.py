"""`mailsync sync --once` beside daemons on one PostgreSQL: it takes each mailbox's lease for its pass
(storage/leases.py), skips a mailbox another live process holds, and gives back the leases it took."""

from __future__ import annotations

import secrets

import pytest
from sqlalchemy import func, select

from storage import leases
from storage import models as m
from storage.repo import Repo
from tests.conftest import write_config
from tests.integration.test_postgres_capture import cli
from tests.support.config import PASSWORD_ENV, imap_mailbox
from tests.support.mail import plain_mail

OTHER = "other-host:4242:abcdef"  # a daemon on another host: alive as far as this one can tell


def per_mailbox(repo: Repo) -> dict[str, int]:
    with repo.session() as s:
        rows = s.execute(select(m.Provenance.mailbox, func.count()).group_by(m.Provenance.mailbox))
        return dict(rows.all())


@pytest.mark.slow
def test_sync_once_skips_a_mailbox_another_process_holds_and_syncs_the_others(
    tmp_path, dovecot, monkeypatch, pg_fresh_url, capsys
):
    password = secrets.token_hex(8)
    users = {name: f"once{secrets.token_hex(3)}-{name}" for name in ("held", "free")}
    for name, user in users.items():
        dovecot.add_user(user, password)
        dovecot.append_many(user, "INBOX", [plain_mail(f"{name} {k}") for k in range(2)])
    mailboxes = "".join(
        imap_mailbox(dovecot, user, password_env=PASSWORD_ENV, name=name, folders=["INBOX"])
        for name, user in users.items()
    )
    config = write_config(tmp_path, mailboxes, database_url=pg_fresh_url)
    monkeypatch.setenv(PASSWORD_ENV, password)
    repo = Repo(pg_fresh_url)
    try:
        with repo.session() as s:
            assert leases.take(s, "mailbox:held", OTHER, 600) is not None

        assert cli(config, "sync", "--once") == 0  # skipped, not failed: the holder captures that mailbox
        err = capsys.readouterr().err
        assert per_mailbox(repo) == {"free": 2}
        skipped = [line for line in err.splitlines() if "held" in line]
        assert len(skipped) == 1, err
        assert OTHER in skipped[0]
        with repo.session() as s:
            assert leases.holder_of(s, "mailbox:held") == OTHER  # untouched
            assert leases.holder_of(s, "mailbox:free") is None  # given back after its pass
            leases.release(s, "mailbox:held", OTHER)

        assert cli(config, "sync", "--once") == 0
        assert per_mailbox(repo) == {"free": 2, "held": 2}
        with repo.session() as s:
            assert leases.holder_of(s, "mailbox:held") is None
    finally:
        repo.dispose()
