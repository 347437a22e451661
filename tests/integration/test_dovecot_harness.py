"""Checks that the Dovecot test harness gives a real, isolated, restartable IMAP server."""

from __future__ import annotations

import datetime as dt
import socket
import time
import uuid
from collections.abc import Callable

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from imapclient.imapclient import SENT, TRASH

from tests.support.dovecot import DovecotError, DovecotServer


def _message(subject: str, message_id: str | None = None) -> bytes:
    # Bare LF on purpose: Dovecot stores CRLF, which the tests must account for.
    mid = message_id or f"<{uuid.uuid4()}@test.mailsync>"
    return (
        f"From: Ann Example <ann@example.com>\n"
        f"To: dana@example.com\n"
        f"Subject: {subject}\n"
        f"Message-ID: {mid}\n"
        f"Date: Fri, 01 Mar 2024 12:00:00 +0000\n"
        f"\n"
        f"Hello,\nline two\n"
    ).encode()


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_greeting_and_login(dovecot: DovecotServer) -> None:
    with socket.create_connection((dovecot.host, dovecot.port), timeout=5) as sock:
        assert sock.makefile("rb").readline().startswith(b"* OK")
    with dovecot.client("dana") as client:
        caps = set(client.capabilities())
        assert {b"IMAP4REV1", b"SPECIAL-USE", b"UIDPLUS", b"CONDSTORE"} <= caps
        assert client.select_folder("INBOX")[b"UIDVALIDITY"] > 0


def test_wrong_password_raises_login_error(dovecot: DovecotServer) -> None:
    for user, password in (("dana", "not-danapw"), ("nobody-here", "x")):
        client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
        try:
            with pytest.raises(LoginError):
                client.login(user, password)
        finally:
            client.shutdown()


def test_append_then_peek_returns_bytes_and_leaves_unseen(
    dovecot: DovecotServer, imap_user: tuple[str, str]
) -> None:
    user, _ = imap_user
    raw = _message("peek me")
    uid = dovecot.append(user, "INBOX", raw)
    with dovecot.client(user) as client:
        client.select_folder("INBOX")  # read-write, so a non-PEEK fetch would set \Seen
        assert client.search(["ALL"]) == [uid]
        data = client.fetch([uid], ["BODY.PEEK[]", "FLAGS"])[uid]
        assert data[b"BODY[]"] == _crlf(raw)
        assert b"\\Seen" not in data[b"FLAGS"]
        assert b"\\Seen" not in client.get_flags([uid])[uid]
        # Control: a plain BODY[] fetch does set \Seen, so the check above means something.
        client.fetch([uid], ["BODY[]"])
        assert b"\\Seen" in client.get_flags([uid])[uid]


def test_append_sets_flags_and_internal_date(dovecot: DovecotServer, imap_user: tuple[str, str]) -> None:
    user, _ = imap_user
    when = dt.datetime(2023, 7, 14, 9, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    uid = dovecot.append(user, "INBOX", _message("dated"), flags=[b"\\Flagged"], internal_date=when)
    with dovecot.client(user) as client:
        client.normalise_times = False  # keep the server's zone for an exact compare
        client.select_folder("INBOX", readonly=True)
        data = client.fetch([uid], ["FLAGS", "INTERNALDATE"])[uid]
    assert b"\\Flagged" in data[b"FLAGS"]
    assert data[b"INTERNALDATE"] == when


def test_append_many_keeps_order(dovecot: DovecotServer, imap_user: tuple[str, str]) -> None:
    user, _ = imap_user
    messages = [_message(f"bulk {i}") for i in range(450)]  # more than one MULTIAPPEND batch
    uids = dovecot.append_many(user, "INBOX", messages)
    assert len(uids) == len(messages)
    assert uids == sorted(set(uids))
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["ALL"]) == uids
        picked = [uids[0], uids[299], uids[-1]]
        subjects = client.fetch(picked, ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    for uid, i in zip(picked, (0, 299, 449), strict=True):
        header = subjects[uid][b"BODY[HEADER.FIELDS (SUBJECT)]"]
        assert header.strip() == f"Subject: bulk {i}".encode()


def test_special_use_folders(dovecot: DovecotServer, imap_user: tuple[str, str]) -> None:
    user, _ = imap_user
    with dovecot.client(user) as client:
        flags_by_name = {name: flags for flags, _delim, name in client.list_folders()}
        assert b"\\Sent" in flags_by_name["Sent"]
        assert client.find_special_folder(SENT) == "Sent"
        assert "Trash" not in flags_by_name  # not auto-created
    dovecot.create_folder(user, "Trash")
    with dovecot.client(user) as client:
        assert client.find_special_folder(TRASH) == "Trash"
    dovecot.delete_folder(user, "Trash")
    with dovecot.client(user) as client:
        assert client.find_special_folder(TRASH) is None


def test_users_are_isolated(dovecot: DovecotServer, imap_user: tuple[str, str]) -> None:
    user, _ = imap_user
    with dovecot.client(user) as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0  # fresh user, empty mailbox
    mid = f"<{uuid.uuid4()}@test.mailsync>"
    dovecot.append(user, "INBOX", _message("private", mid))
    with dovecot.client("dana") as client:
        client.select_folder("INBOX", readonly=True)
        assert client.search(["HEADER", "Message-ID", mid]) == []
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["HEADER", "Message-ID", mid])) == 1


def test_restart_keeps_mail_and_port(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory()
    raw = _message("survives restart")
    uid = server.append("dana", "INBOX", raw)
    port = server.port
    old = server.client("dana")
    uidvalidity = old.select_folder("INBOX")[b"UIDVALIDITY"]

    server.stop()
    with pytest.raises(ConnectionRefusedError):  # a real outage, not a hung port
        socket.create_connection((server.host, port), timeout=2).close()
    with pytest.raises((IMAPClient.AbortError, OSError)):
        old.noop()
    old.shutdown()

    server.start()
    assert server.port == port
    with server.client("dana") as client:
        assert client.select_folder("INBOX")[b"UIDVALIDITY"] == uidvalidity
        assert client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"] == _crlf(raw)


def test_broken_config_fails_fast_with_log(
    dovecot_factory: Callable[..., DovecotServer],
) -> None:
    server = dovecot_factory(start=False, extra_config="no_such_setting = 1\n")
    began = time.monotonic()
    with pytest.raises(DovecotError, match="no_such_setting"):
        server.start()
    assert time.monotonic() - began < 5
    assert not server.running
