"""Every corpus file through a real Dovecot: APPENDed, synced, archived as the server serves it.

The archive must hold exactly the bytes the server returns (Dovecot turns LF into CRLF and drops
NULs, so the source files are not the reference), each message parsed or quarantined with a reason.
The same mail in a second rep's mailbox is the same messages with a second provenance each.
"""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select

from config.settings import load_settings
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline.sync import sync_mailbox
from storage import models as m
from tests.conftest import write_config
from tests.support.config import imap_mailbox

pytestmark = pytest.mark.slow


def test_corpora_synced_from_dovecot_are_archived_as_served_and_parsed_or_quarantined(
    tmp_path, dovecot, corpora, monkeypatch, repo, pipeline
):
    files = sorted(p for p in corpora.rglob("*") if p.is_file() and p.stat().st_size)
    dovecot.add_user("rita", "ritapw")
    dovecot.add_user("sam", "sampw")
    monkeypatch.setenv("TEST_RITA_PW", "ritapw")
    monkeypatch.setenv("TEST_SAM_PW", "sampw")
    refused: list[str] = []
    with dovecot.client("rita") as client:
        for path in files:
            try:
                client.append("INBOX", path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - the server's verdict on odd bytes is recorded, not fatal
                refused.append(f"{path.name}: {exc}")
    assert len(refused) < len(files) // 20, refused  # the server takes almost everything
    settings = load_settings(
        write_config(
            tmp_path,
            imap_mailbox(
                dovecot, "rita", name="rita", owner="rita@northwind.example", password_env="TEST_RITA_PW"
            )
            + imap_mailbox(
                dovecot, "sam", name="sam", owner="sam@northwind.example", password_env="TEST_SAM_PW"
            ),
        )
    )
    pipeline.settings = settings

    rita = settings.mailbox("rita")
    with ImapSource(rita) as source:
        (result,) = sync_mailbox(rita, pipeline, source)
    served = _served(dovecot, "rita")
    print(f"corpora over IMAP: {len(files)} files, {len(refused)} refused, {result.outcomes}")
    assert result.fetched == len(served) == len(files) - len(refused)
    assert set(result.outcomes) <= {"new", "copy", "quarantined"}
    with repo.session() as session:
        rows = session.execute(
            select(m.Provenance.uid, m.Provenance.blob_sha256, m.Message.status).join(
                m.Message, m.Message.id == m.Provenance.message_pk
            )
        ).all()
        quarantined_without_reason = session.scalar(
            select(func.count())
            .select_from(m.Message)
            .outerjoin(m.Quarantine, m.Quarantine.message_pk == m.Message.id)
            .where(m.Message.status == "quarantined", m.Quarantine.id.is_(None))
        )
    assert {uid: sha for uid, sha, _ in rows} == served  # every UID archived, byte for byte as served
    assert {status for _, _, status in rows} <= {"parsed", "quarantined"}
    assert quarantined_without_reason == 0
    for sha in set(served.values()):
        pipeline.archive.get(sha)

    # Sam got a slice of the same mail: no new messages, one more provenance for each.
    with repo.session() as session:
        before = session.scalar(select(func.count()).select_from(m.Message))
    shared = files[:40]
    with dovecot.client("sam") as client:
        for path in shared:
            client.append("INBOX", path.read_bytes())
    sam = settings.mailbox("sam")
    with ImapSource(sam) as source:
        (again,) = sync_mailbox(sam, pipeline, source)
    assert again.fetched == len(shared)
    assert set(again.outcomes) <= {"copy", "known"}, again.outcomes
    with repo.session() as session:
        assert session.scalar(select(func.count()).select_from(m.Message)) == before
        sams = session.scalar(
            select(func.count()).select_from(m.Provenance).where(m.Provenance.mailbox == "sam")
        )
    assert sams == len(shared)


def _served(dovecot, user: str) -> dict[int, str]:
    """UID -> SHA-256 of the bytes Dovecot serves, read with a plain client (not our source)."""
    served: dict[int, str] = {}
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        for start in range(0, len(uids), 100):
            for uid, data in client.fetch(uids[start : start + 100], ["BODY.PEEK[]"]).items():
                served[uid] = hashlib.sha256(data[b"BODY[]"]).hexdigest()
    return served
