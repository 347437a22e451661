"""ImapSource against a real Dovecot: folder resolution, incremental UIDs, exact bytes, IDLE, outages."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from config.errors import SourceError, SourceUnavailable
from config.settings import MailboxSettings
from mailsync.mail.sources.imap import ImapSource
from tests.support.dovecot import DovecotServer, free_port

PW_VAR = "MAILSYNC_TEST_IMAP_PW"


def _message(subject: str, body: str = "Hello,\nline two\n") -> bytes:
    # Bare LF on purpose: Dovecot stores CRLF.
    return (
        f"From: Ann Example <ann@example.com>\n"
        f"To: dana@example.com\n"
        f"Subject: {subject}\n"
        f"Message-ID: <{uuid.uuid4()}@test.mailsync>\n"
        f"Date: Fri, 01 Mar 2024 12:00:00 +0000\n"
        f"\n"
        f"{body}"
    ).encode()


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def source_for(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ImapSource]:
    """Build an ImapSource for (server, user, password), password passed via the environment."""

    def make(
        server: DovecotServer, user: str, password: str, *, options: dict | None = None, **overrides
    ) -> ImapSource:
        monkeypatch.setenv(PW_VAR, password)
        fields = {
            "name": "t",
            "owner": "t@northwind.example",
            "host": server.host,
            "port": server.port,
            "security": "plain",
            "username": user,
            "password_env": PW_VAR,
        }
        return ImapSource(MailboxSettings(**(fields | overrides)), **(options or {}))

    return make


def test_connect_resolves_inbox_and_sent_special_use(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    with source_for(dovecot, user, password) as source:
        client = source._client
        source.connect()  # already connected: no second connection (the daemon calls it inside `with`)
        assert source._client is client
        assert source.folders() == ["INBOX", "Sent"]
        assert {"IDLE", "CONDSTORE"} <= source.capabilities
        status = source.select("INBOX")
        assert status.highest_modseq is not None  # CONDSTORE was ENABLEd
        assert status.exists == 0
    source.close()  # a second close is harmless


def test_unresolvable_special_use_flag_is_skipped_with_warning(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    with (
        capture_logs() as logs,
        source_for(dovecot, user, password, folders=("\\Archive", "INBOX")) as source,
    ):
        assert source.folders() == ["INBOX"]
    warnings = [e for e in logs if e["event"] == "special_folder_not_found"]
    assert [w["flag"] for w in warnings] == ["\\Archive"]
    assert warnings[0]["log_level"] == "warning"


def test_missing_plain_folder_lists_available(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    with (
        source_for(dovecot, user, password, folders=("INBOX", "Deals")) as source,
        pytest.raises(SourceError) as info,
    ):
        source.folders()
    assert not isinstance(info.value, SourceUnavailable)
    message = str(info.value)
    assert "'Deals'" in message
    assert "INBOX" in message
    assert "Sent" in message
    assert info.value.fix


def test_new_uids_and_fetch_exact_bytes_with_provenance(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    raws = [_message(f"m{i}") for i in range(5)]
    appended = dovecot.append_many(user, "INBOX", raws)
    with source_for(dovecot, user, password) as source:
        status = source.select("INBOX")
        uids = source.new_uids(0)
        assert uids == sorted(appended)
        assert len(uids) == 5
        assert source.new_uids(uids[-1]) == []  # RFC 3501's `*` answer is filtered out
        assert source.new_uids(uids[1]) == uids[2:]
        assert source.all_uids() == uids
        got = list(source.fetch(status, uids))
    assert [m.data for m in got] == [_crlf(raw) for raw in raws]
    for message, uid in zip(got, uids, strict=True):
        where = message.provenance
        assert (where.mailbox, where.folder, where.uid) == ("t", "INBOX", uid)
        assert where.uidvalidity == status.uidvalidity


def test_fetch_does_not_set_seen(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    uid = dovecot.append(user, "INBOX", _message("unread"))
    with source_for(dovecot, user, password) as source:
        status = source.select("INBOX")
        assert len(list(source.fetch(status, [uid]))) == 1
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        flags = client.fetch([uid], ["FLAGS"])[uid][b"FLAGS"]
    assert b"\\Seen" not in flags


@pytest.mark.usefixtures("debug_logging")
def test_vanished_uid_is_skipped_and_logged(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    uid = dovecot.append(user, "INBOX", _message("kept"))
    with capture_logs() as logs, source_for(dovecot, user, password) as source:
        status = source.select("INBOX")
        got = list(source.fetch(status, [uid, uid + 50]))
    assert [m.provenance.uid for m in got] == [uid]
    assert [e["uid"] for e in logs if e["event"] == "message_vanished"] == [uid + 50]


@pytest.mark.usefixtures("debug_logging")
def test_large_message_fetched_in_pieces(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    line = "0123456789abcdefghijklmnopqrstuvwxyz" * 2 + "\n"
    big = _message("big", line * 14_000)  # ~1 MB
    small = _message("small")
    uids = dovecot.append_many(user, "INBOX", [small, big, small])
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        stored = client.fetch([uids[1]], ["BODY.PEEK[]"])[uids[1]][b"BODY[]"]
    assert len(stored) > 1_000_000
    with (
        capture_logs() as logs,
        source_for(dovecot, user, password, options={"max_fetch_bytes": 100_000}) as source,
    ):
        status = source.select("INBOX")
        # A spool file lives until the consumer moves on: read each message as it comes.
        got = [(m.provenance.uid, m.read(), m.spool) for m in source.fetch(status, uids)]
    assert [uid for uid, _, _ in got] == uids
    assert got[1][1] == stored
    assert got[1][2] is not None
    assert not got[1][2].exists()  # removed after use
    assert got[0][1] == got[2][1] == _crlf(small)
    assert got[0][2] is None
    pieces = [e for e in logs if e["event"] == "message_fetched_in_pieces"]
    assert [p["uid"] for p in pieces] == [uids[1]]
    assert pieces[0]["pieces"] == len(stored) // 100_000 + 1


def test_since_filters_by_internal_date(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    old = dt.datetime(2020, 5, 1, 12, 0, tzinfo=dt.UTC)
    old_uid = dovecot.append(user, "INBOX", _message("old"), internal_date=old)
    new_uid = dovecot.append(user, "INBOX", _message("new"))
    with source_for(dovecot, user, password) as source:
        source.select("INBOX")
        assert source.new_uids(0) == [old_uid, new_uid]
        assert source.new_uids(0, since=dt.date(2021, 1, 1)) == [new_uid]
        assert source.new_uids(new_uid, since=dt.date(2021, 1, 1)) == []


@pytest.mark.usefixtures("debug_logging")
def test_wrong_password_is_permanent_and_secret_free(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    wrong = "wrong-" + password
    source = source_for(dovecot, user, wrong)
    with capture_logs() as logs, pytest.raises(SourceError) as info:
        source.connect()
    assert not isinstance(info.value, SourceUnavailable)
    text = f"{info.value} {info.value.fix}"
    assert "mailbox t" in text
    assert dovecot.host in text
    assert "password_env" in text
    assert wrong not in text
    assert wrong not in repr(logs)
    source.close()


def test_closed_port_is_unavailable(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    source = source_for(dovecot, user, password, port=free_port(), options={"timeout": 5})
    with pytest.raises(SourceUnavailable) as info:
        source.connect()
    assert "ConnectionRefusedError" in str(info.value)


def test_starttls_without_server_support_is_permanent(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    source = source_for(dovecot, user, password, security="starttls")
    with pytest.raises(SourceError) as info:
        source.connect()
    assert not isinstance(info.value, SourceUnavailable)
    assert "STARTTLS" in str(info.value)


def test_idle_wait_wakes_on_append_and_times_out(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    with source_for(dovecot, user, password) as source:
        source.select("INBOX")
        appender = threading.Timer(0.3, dovecot.append, (user, "INBOX", _message("wake up")))
        began = time.monotonic()
        appender.start()
        try:
            assert source.idle_wait(5) is True
        finally:
            appender.join()
        woke_after = time.monotonic() - began
        assert woke_after < 2.0

        began = time.monotonic()
        assert source.idle_wait(0.5) is False
        quiet = time.monotonic() - began
        assert 0.45 < quiet < 1.5
        # IDLE was left: ordinary commands work and see the new message.
        assert len(source.new_uids(0)) == 1


def test_uidvalidity_changes_when_folder_is_recreated(dovecot, imap_user, source_for) -> None:
    user, password = imap_user
    dovecot.create_folder(user, "Deals")
    dovecot.append(user, "Deals", _message("deal"))
    with source_for(dovecot, user, password, folders=("Deals",)) as source:
        assert source.folders() == ["Deals"]
        before = source.select("Deals")
    dovecot.delete_folder(user, "Deals")
    dovecot.create_folder(user, "Deals")
    with source_for(dovecot, user, password, folders=("Deals",)) as source:
        after = source.select("Deals")
        assert source.all_uids() == []
    assert after.uidvalidity != before.uidvalidity
    assert before.exists == 1
    assert after.exists == 0


def test_server_stopped_mid_fetch_is_unavailable(dovecot_factory, source_for) -> None:
    server = dovecot_factory()
    uids = server.append_many("dana", "INBOX", [_message(f"m{i}") for i in range(6)])
    source = source_for(server, "dana", "danapw", options={"batch_size": 2})
    source.connect()
    status = source.select("INBOX")
    stream = source.fetch(status, uids)
    received = [next(stream), next(stream)]  # the first batch
    server.stop()
    with pytest.raises(SourceUnavailable):
        received.extend(stream)
    assert [m.provenance.uid for m in received] == uids[:2]
    source.close()  # already closed by the failure; must stay quiet
    with pytest.raises(SourceUnavailable):
        source.select("INBOX")


def test_wire_commands_change_nothing(dovecot, imap_user, source_for, caplog) -> None:
    # EXAMINE and BODY.PEEK each keep \Seen unset alone, so test_fetch_does_not_set_seen cannot tell
    # if one is lost; the commands imapclient logs as sent can.
    user, password = imap_user
    uids = dovecot.append_many(user, "INBOX", [_message("a"), _message("b", "x\n" * 60_000)])
    caplog.set_level(logging.DEBUG, logger="imapclient")
    with source_for(dovecot, user, password, options={"max_fetch_bytes": 50_000}) as source:
        source.folders()
        status = source.select("INBOX")
        assert len(list(source.fetch(status, source.new_uids(0)))) == len(uids)
        source.idle_wait(0.1)
    # imapclient logs each command as "> b'TAG COMMAND ARGS'" (LOGIN's arguments redacted).
    sent = [m.group(1) for r in caplog.records if (m := re.match(r"> b'\S+ ([^']*)", r.getMessage()))]
    verbs = {" ".join(c.split()[:2]) if c.startswith("UID ") else c.split()[0] for c in sent}
    assert verbs == {"LOGIN", "ENABLE", "LIST", "EXAMINE", "UID SEARCH", "UID FETCH", "IDLE", "LOGOUT"}
    fetches = [c for c in sent if c.startswith("UID FETCH")]
    assert all("BODY.PEEK[]" in c or c.endswith("(RFC822.SIZE)") for c in fetches)
    assert sum("BODY.PEEK[]<" in c for c in fetches) == 4  # ~180 KB with CRLF, in 50 KB pieces
    assert password not in caplog.text
