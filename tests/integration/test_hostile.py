"""Hostile mail, generated: imported from files and synced from a real Dovecot, never a crash or a loss.

Each message must end up archived (its blob readable) and either parsed or quarantined with a reason;
an import never reports "failed". The parse worker's limits and timeout do the work; these tests
only prove the whole path holds, on SQLite and on PostgreSQL. The 50 MB header line and the 150 MB
message are in test_large_mail.py (streamed, with peak memory measured).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from config.settings import load_settings
from mailsync.mail.sources.files import FileSource
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline.importer import import_source
from mailsync.pipeline.ingest import Pipeline
from mailsync.pipeline.sync import sync_mailbox
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.support.config import imap_config
from tests.support.database import use_database

pytestmark = pytest.mark.both_dbs

HEAD = b"From: Rachel Kim <rachel@acme.example>\r\nTo: dana@northwind.example\r\nDate: Mon, 3 Jun 2024 10:00:00 +0000\r\n"


def _mail(
    name: str, headers: bytes, body: bytes, *, content_type: bytes = b"text/plain; charset=utf-8"
) -> bytes:
    return (
        HEAD + b"Message-ID: <hostile-" + name.encode() + b"@acme.example>\r\nSubject: hostile " + name.encode()
        + b"\r\nMIME-Version: 1.0\r\nContent-Type: " + content_type + b"\r\n" + headers + b"\r\n" + body
    )  # fmt: skip


def nested(depth: int = 1000) -> bytes:
    opening = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(depth - 1)
    )
    leaf = b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep down\r\n--b%d--\r\n" % (depth - 1, depth - 1)
    closing = b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth - 1)))
    return _mail("nested", b"", opening + leaf + closing, content_type=b"multipart/mixed; boundary=b0")


def many_parts(parts: int = 10_000) -> bytes:
    body = (
        b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(parts))
        + b"--p--\r\n"
    )
    return _mail("parts", b"", body, content_type=b"multipart/mixed; boundary=p")


def many_headers(lines: int = 100_000) -> bytes:
    return _mail("headers", b"".join(b"X-Filler-%d: v\r\n" % i for i in range(lines)), b"body\r\n")


def nul_bytes() -> bytes:
    return _mail("nul", b"X-Nul: a\x00b\r\n", b"before\x00after\r\n\x00\x00\r\n")


def unknown_charset() -> bytes:
    return _mail(
        "unknown-charset", b"", b"caf\xe9 \xff\xfe\r\n", content_type=b"text/plain; charset=x-no-such-charset"
    )


def lying_charset() -> bytes:
    return _mail("lying-charset", b"", "Grüße aus Köln, ça va?\r\n".encode("latin-1"))


def encoded_word_bomb(words: int = 10_000) -> bytes:
    word = b"=?utf-8?B?w6TDtsO8?="  # "äöü"
    lines = [b" ".join([word] * 10) for _ in range(words // 10)]
    subject = b"Subject: " + b"\r\n ".join(lines) + b"\r\n"
    raw = _mail("bomb", subject, b"body\r\n")
    return raw.replace(b"Subject: hostile bomb\r\n", b"", 1)


def cve_display_name() -> bytes:
    raw = _mail("cve-display", b"", b"Please advise.\r\n")
    return raw.replace(
        b"From: Rachel Kim <rachel@acme.example>", b'From: "alice@evil.example" <bob@good.example>'
    )


def cve_route() -> bytes:
    raw = _mail("cve-route", b"", b"Please advise.\r\n")
    return raw.replace(
        b"To: dana@northwind.example", b"To: alice@example.com<@evil.example>, dana@northwind.example"
    )


def raw_8bit_headers() -> bytes:
    raw = _mail("8bit", "X-Note: Grüße, 日本語\r\n".encode(), "Straße\r\n".encode())
    return raw.replace(b"From: Rachel Kim", "From: Jürgen Müller".encode()).replace(
        b"Subject: hostile 8bit", "Subject: hostile 8bit Ärger 😀".encode()
    )


CASES = {
    "nested": nested,
    "parts": many_parts,
    "headers": many_headers,
    "nul": nul_bytes,
    "unknown-charset": unknown_charset,
    "lying-charset": lying_charset,
    "bomb": encoded_word_bomb,
    "cve-display": cve_display_name,
    "cve-route": cve_route,
    "8bit": raw_8bit_headers,
}


@dataclass
class Outcome:
    status: str
    reason: str | None
    blob: str
    sender: str | None
    participants: list[tuple[str, int | None, int | None]]  # email, contact_id, account_id


def _crm(repo: Repo) -> dict[str, int]:
    """Accounts and contacts the CVE-style addresses try to be mistaken for."""
    with repo.session() as s:
        evil = m.Account(name="Evil", domains=[m.AccountDomain(domain="evil.example")])
        good = m.Account(name="Good", domains=[m.AccountDomain(domain="good.example")])
        s.add_all([evil, good])
        s.flush()
        alice = m.Contact(
            name="Alice", account_id=evil.id, addresses=[m.ContactAddress(email="alice@evil.example")]
        )
        s.add(alice)
        s.flush()
        return {"evil_account": evil.id, "alice_contact": alice.id, "good_account": good.id}


def _outcomes(repo: Repo, key_of: dict[str, str], column) -> dict[str, Outcome]:
    """case name -> what the database recorded, found through each copy's provenance."""
    found: dict[str, Outcome] = {}
    with repo.session() as s:
        for where, msg in s.execute(select(column, m.Message).join(m.Message)).all():
            name = key_of[str(where)]
            reason = s.scalar(select(m.Quarantine.reason).where(m.Quarantine.message_pk == msg.id))
            people = s.execute(
                select(m.Participant.email, m.Participant.contact_id, m.Participant.account_id).where(
                    m.Participant.message_pk == msg.id
                )
            ).all()
            found[name] = Outcome(msg.status, reason, msg.blob_sha256, msg.sender, [tuple(p) for p in people])
    return found


def _check(found: dict[str, Outcome], names: set[str], archive: Archive, ids: dict[str, int]) -> None:
    assert set(found) == names, f"missing from the database: {names - set(found)}"
    for name, outcome in found.items():
        assert isinstance(archive.get(outcome.blob), bytes), name  # archived, hash checked by get()
        assert outcome.status in {"parsed", "quarantined"}, name
        if outcome.status == "quarantined":
            assert outcome.reason, f"{name}: quarantined without a reason"
        print(f"{name}: {outcome.status} {outcome.reason or ''}")
    display = found["cve-display"]
    if display.status == "parsed":
        assert display.sender == "bob@good.example"
        for address, contact, account in display.participants:
            assert not address.endswith("evil.example"), display.participants
            assert contact != ids["alice_contact"], display.participants
            assert account != ids["evil_account"], display.participants
    route = found["cve-route"]
    if route.status == "parsed":
        # The obsolete route "<@evil.example>" is no address: evil.example must not become a participant.
        for address, _contact, account in route.participants:
            assert not address.endswith("@evil.example"), route.participants
            assert account != ids["evil_account"], route.participants


def test_hostile_files_are_archived_and_parsed_or_quarantined(tmp_path, pipeline, repo):
    ids = _crm(repo)
    pipeline.refresh_crm()
    mail_dir = tmp_path / "hostile"
    mail_dir.mkdir()
    key_of: dict[str, str] = {}
    for name, make in {**CASES, "empty": lambda: b""}.items():
        path = mail_dir / f"{name}.eml"
        path.write_bytes(make())
        key_of[str(path.resolve())] = name
    began = time.monotonic()
    counts = import_source(pipeline, FileSource(mail_dir, "dana"), "dana@northwind.example")
    print(f"import of {len(key_of)} hostile files: {time.monotonic() - began:.1f} s, {dict(counts)}")
    assert "failed" not in counts
    assert sum(counts.values()) == len(key_of)
    found = _outcomes(repo, key_of, m.Provenance.path)
    _check(found, set(key_of.values()), pipeline.archive, ids)
    for path, name in key_of.items():
        assert pipeline.archive.get(found[name].blob) == Path(path).read_bytes(), name  # the exact bytes
    assert found["empty"].status == "quarantined"
    assert found["headers"].status == "quarantined"  # 100,000 lines > max_header_lines
    assert found["nested"].status == "quarantined"  # 1,000 deep > max_mime_depth
    assert found["parts"].status == "quarantined"  # 10,000 > max_parts
    # Same bytes imported again: nothing new, nothing failed.
    again = import_source(pipeline, FileSource(mail_dir, "dana"), "dana@northwind.example")
    assert set(again) == {"known"}, again


def test_hostile_mail_synced_from_dovecot_is_archived_and_parsed_or_quarantined(
    tmp_path, dovecot, imap_user, monkeypatch, parse_worker, db_url
):
    use_database(monkeypatch, db_url)
    config = imap_config(
        tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"]
    )
    settings = load_settings(config)
    repo = Repo(settings.database_url)
    repo.upgrade()
    try:
        ids = _crm(repo)
        pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parse_worker)
        key_of: dict[str, str] = {}
        for name, make in CASES.items():  # IMAP cannot APPEND an empty message
            uid = dovecot.append(imap_user.name, "INBOX", make())
            key_of[str(uid)] = name
        mailbox = settings.mailbox("imap")
        began = time.monotonic()
        with ImapSource(mailbox) as source:
            (result,) = sync_mailbox(mailbox, pipeline, source)
        print(f"sync of {len(key_of)} hostile messages: {time.monotonic() - began:.1f} s, {result.outcomes}")
        assert result.fetched == len(key_of)
        assert set(result.outcomes) <= {"new", "quarantined"}
        found = _outcomes(repo, key_of, m.Provenance.uid)
        _check(found, set(key_of.values()), pipeline.archive, ids)
        with ImapSource(mailbox) as source:
            (again,) = sync_mailbox(mailbox, pipeline, source)
        assert again.fetched == 0
    finally:
        repo.dispose()
