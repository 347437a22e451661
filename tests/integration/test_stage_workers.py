"""Stage workers (mailsync/pipeline/staging.py): a large batch hashed, identified and written by worker
processes, a batch ahead of its commit.

What they store must be what the bytes say, exactly as the threads store it: every blob byte for byte
as the server served it, every identity as mail/identity.py computes it, the same outcomes (a second
copy of the same bytes in one batch is a copy), over real mail from the corpora and a message whose
body decodes to NUL, on SQLite and PostgreSQL. A worker killed before it answers, or stuck past the
timeout, costs speed only; a write that fails (a full disk) cuts the batch where it failed, and what
came before is committed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess

import pytest
from sqlalchemy import func, select

from config.errors import ArchiveError
from config.settings import load_settings
from mailsync.mail.identity import identify
from mailsync.mail.sources.files import FileSource
from mailsync.mail.sources.imap import ImapSource
from mailsync.pipeline import importer
from mailsync.pipeline.capture import capture
from mailsync.pipeline.staging import POOL_FROM, StagePool, staged_ahead
from mailsync.pipeline.sync import sync_mailbox
from storage import models as m
from storage.archive import Archive
from storage.journal import Journal
from storage.records import Provenance, RawMessage
from storage.repo import Repo
from tests.integration.test_failing_storage import small_disk  # noqa: F401 - a fixture, used by name
from tests.integration.test_postgres_capture import QP_NUL
from tests.support.config import imap_config
from tests.support.mail import plain_mail

pytestmark = pytest.mark.integration


class Counting:
    """StagePool.collect, counted: the workers were the ones that staged."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches = 0
        real = StagePool.collect

        def collect(pool, ticket):
            self.batches += 1
            return real(pool, ticket)

        monkeypatch.setattr(StagePool, "collect", collect)


@pytest.mark.both_dbs
def test_a_batch_the_workers_stage_is_stored_as_served_with_the_identities_of_its_bytes(
    tmp_path, dovecot, imap_user, corpora, monkeypatch, repo, pipeline
):
    files = sorted(p for p in corpora.rglob("*.eml") if p.stat().st_size)
    mail = [p.read_bytes() for p in files[: POOL_FROM + 4]]
    mail[len(mail) // 2 : len(mail) // 2] = [QP_NUL, QP_NUL]  # amid the batch, and the same bytes twice
    with dovecot.client(imap_user.name) as client:
        for data in mail:
            try:
                client.append("INBOX", data)
            except Exception:  # noqa: BLE001, S112 - the server's verdict on odd bytes; the rest is the test
                continue
    settings = load_settings(
        imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, folders=["INBOX"])
    )
    counting = Counting(monkeypatch)
    mailbox = settings.mailbox("imap")
    with ImapSource(mailbox) as source:
        (result,) = sync_mailbox(mailbox, pipeline, source)

    assert counting.batches >= 1, "the batch was not staged by the workers"
    served = _served(dovecot, imap_user.name)
    assert len(served) >= POOL_FROM
    assert sum(result.outcomes.values()) == result.fetched == len(served)
    assert result.outcomes.get("copy", 0) >= 1, result.outcomes  # QP_NUL, twice in the batch
    with repo.session() as s:
        rows = s.execute(
            select(m.Provenance.uid, m.Provenance.blob_sha256, m.Message.fingerprint, m.Message.status).join(
                m.Message, m.Message.id == m.Provenance.message_pk
            )
        ).all()
    assert {uid: sha for uid, sha, _, _ in rows} == {uid: sha for uid, (sha, _) in served.items()}
    assert {uid: fp for uid, _, fp, _ in rows} == {uid: fp for uid, (_, fp) in served.items()}
    assert {status for *_, status in rows} <= {"parsed", "quarantined"}
    for uid, (sha, _) in served.items():
        assert hashlib.sha256(pipeline.archive.get(sha)).hexdigest() == sha, uid
    report = pipeline.archive.verify({sha for sha, _ in served.values()})
    assert report.ok, report
    assert not report.partial, report


def test_a_stage_worker_killed_before_it_answers_costs_only_speed(tmp_path, repo, settings):
    archive, journal = Archive(settings.archive_dir), Journal.of(settings)
    raws = _batch("killed", POOL_FROM + 1)
    pool = StagePool(archive)
    ticket = pool.submit(raws)
    assert ticket is not None
    for process, _ in pool._workers:  # the workers, killed as the OOM killer would
        process.send_signal(signal.SIGKILL)
        process.wait()
    captured = capture(repo, archive, journal, raws, "dana", ticket=ticket)
    assert [c.outcome for c in captured] == ["new"] * len(raws)
    assert pool.broken, "a dead worker must hand its batches to the threads"
    assert pool.submit(_batch("after", POOL_FROM)) is None
    for raw in raws:
        assert archive.get(hashlib.sha256(raw.data).hexdigest()) == raw.data
    pool.close()


def test_a_stage_worker_stuck_past_the_timeout_is_killed_and_the_threads_stage_its_batch(
    tmp_path, repo, settings
):
    archive, journal = Archive(settings.archive_dir), Journal.of(settings)
    raws = _batch("stuck", POOL_FROM + 1)
    pool = StagePool(archive)
    pool.timeout = 0.5
    ticket = pool.submit(raws)
    assert ticket is not None
    workers = [process for process, _ in pool._workers]
    workers[0].send_signal(signal.SIGSTOP)  # as a hung file system would hold it
    captured = capture(repo, archive, journal, raws, "dana", ticket=ticket)
    assert [c.outcome for c in captured] == ["new"] * len(raws)
    assert pool.broken
    assert all(process.poll() is not None for process in workers), "a stuck worker must be killed"
    for raw in raws:
        assert archive.get(hashlib.sha256(raw.data).hexdigest()) == raw.data


@pytest.mark.slow
def test_a_full_disk_cuts_the_batch_where_a_worker_failed_and_the_rest_follows_once_there_is_room(
    small_disk,  # noqa: F811 - the fixture imported above
    tmp_path,
):
    archive, journal = Archive(small_disk), Journal.beside(small_disk)
    repo = Repo(f"sqlite:///{tmp_path / 'mailsync.db'}")
    repo.upgrade()
    raws = [
        RawMessage(
            plain_mail(f"scan {n}", base64.encodebytes(os.urandom(24_000)).decode()),
            Provenance("dana", "INBOX", 7, n + 1),
        )
        for n in range(POOL_FROM + 16)
    ]
    pool = StagePool(archive)
    journal.keep_reserve()  # as Pipeline.prepare does before it submits
    ticket = pool.submit(raws)
    assert ticket is not None
    with pytest.raises(ArchiveError):
        capture(repo, archive, journal, raws, "dana", ticket=ticket)
    committed = _committed(repo)
    assert 0 < len(committed) < len(raws), "the disk holds some of the batch, not all"
    # The workers write side by side: what they wrote is committed, whatever its place in the batch.
    written = {uid for uid, sha in _on_disk(archive, raws).items() if sha}
    assert set(committed) == written
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    captured = capture(repo, archive, journal, raws, "dana", ticket=pool.submit(raws))  # the pass again
    assert sum(c.outcome == "new" for c in captured) == len(raws) - len(committed)
    assert _committed(repo) == [raw.provenance.uid for raw in raws]
    for raw in raws:
        assert archive.get(hashlib.sha256(raw.data).hexdigest()) == raw.data
    pool.close()
    repo.dispose()


def test_staged_ahead_submits_the_next_batch_before_the_current_is_captured_but_never_past_a_spool(
    tmp_path,
):
    spool = tmp_path / "huge.eml"
    spool.write_bytes(plain_mail("huge", "x" * 100))
    batches = [
        [RawMessage(b"a", Provenance("dana", "INBOX", 7, 1))],
        [RawMessage(b"b", Provenance("dana", "INBOX", 7, 2))],
        [RawMessage(b"", Provenance("dana", "INBOX", 7, 3), spool=spool)],
        [RawMessage(b"d", Provenance("dana", "INBOX", 7, 4))],
    ]
    events: list[str] = []

    def source():
        for batch in batches:
            events.append(f"take {batch[0].provenance.uid}")
            yield batch

    def submit(batch):
        events.append(f"submit {batch[0].provenance.uid}")

    for batch, ticket in staged_ahead(source(), submit):
        assert ticket is None
        events.append(f"capture {batch[0].provenance.uid}")
    assert events == [
        "take 1", "submit 1",
        "take 2", "submit 2", "capture 1",
        "take 3", "capture 2", "capture 3",  # the spooled batch: never submitted, captured before the next
        "take 4", "submit 4", "capture 4",
    ]  # fmt: skip


def _batch(tag: str, count: int) -> list[RawMessage]:
    return [
        RawMessage(plain_mail(f"{tag} {n}", f"Pricing for {n} seats?"), Provenance("dana", "INBOX", 7, n + 1))
        for n in range(count)
    ]


def _on_disk(archive: Archive, raws: list[RawMessage]) -> dict[int, str | None]:
    """UID -> the SHA-256 of its blob if the archive holds it whole, else None."""
    found: dict[int, str | None] = {}
    for raw in raws:
        sha = hashlib.sha256(raw.data).hexdigest()
        try:
            found[raw.provenance.uid] = sha if archive.get(sha) == raw.data else None
        except ArchiveError:
            found[raw.provenance.uid] = None
    return found


def _committed(repo: Repo) -> list[int]:
    with repo.session() as s:
        return sorted(s.scalars(select(m.Provenance.uid)))


def _served(dovecot, user: str) -> dict[int, tuple[str, str]]:
    """UID -> (SHA-256, fingerprint) of the bytes Dovecot serves, read with a plain client."""
    served: dict[int, tuple[str, str]] = {}
    with dovecot.client(user) as client:
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        for uid, data in client.fetch(uids, ["BODY.PEEK[]"]).items():
            raw = data[b"BODY[]"]
            served[uid] = (hashlib.sha256(raw).hexdigest(), identify(raw).fingerprint)
    return served


def test_an_import_is_staged_by_the_workers_and_stored_as_its_files_hold_it(
    tmp_path, corpora, monkeypatch, repo, pipeline
):
    # `mailsync import` stages its batches in the workers, a batch ahead, as sync does.
    files = sorted(p for p in corpora.rglob("*.eml") if p.stat().st_size)[: 2 * POOL_FROM + 8]
    tree = tmp_path / "export"
    tree.mkdir()
    for number, path in enumerate(files):
        (tree / f"{number:04d}.eml").write_bytes(path.read_bytes())
    monkeypatch.setattr(importer, "BATCH_MESSAGES", POOL_FROM + 4)  # three batches, two for the workers
    counting = Counting(monkeypatch)
    counts = importer.import_source(pipeline, FileSource(tree, "dana"), "dana@northwind.example")

    assert counting.batches == 2, "the large batches were not staged by the workers"
    assert sum(counts.values()) == len(files), counts
    source = FileSource(tree, "dana")  # as read: an mbox "From " line, say, is not the message's
    for folder, path in source.units:
        for raw in source.read(folder, path):
            assert pipeline.archive.get(hashlib.sha256(raw.data).hexdigest()) == raw.data, path.name
    with repo.session() as s:
        assert s.scalar(select(func.count()).select_from(m.Provenance)) == len(files)
