"""`mailsync verify` finds damage; `verify --repair` re-fetches it from Dovecot or the imported files.

Everything runs through the CLI (`main(argv)`) against a real Dovecot, a real SQLite file and a real
archive directory; the damage is done to the files on disk.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
import shutil
import time

import pytest
from sqlalchemy import select

from config.errors import ArchiveError
from config.settings import load_settings
from mailsync.cli import main
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo
from tests.conftest import DEMO, write_config
from tests.support import config as support_config
from tests.support.mail import plain_mail

pytestmark = pytest.mark.integration

HOUR_AGO = time.time() - 3600


def mail(subject: str) -> bytes:
    return plain_mail(subject, f"Pricing for {subject}, please.", id_prefix="repair")


def imap_config(tmp_path, server, user, password, monkeypatch, folders=("INBOX",), extra=""):
    return support_config.imap_config(
        tmp_path, server, user, password, monkeypatch, folders=folders, extra=extra
    )


def cli(capsys, config, *argv):
    code = main(["-c", str(config), *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def blobs(config, folder="INBOX"):
    """{uid: blob sha256} of the IMAP copies in `folder` (newest UIDVALIDITY wins)."""
    repo = Repo(load_settings(config).database_url)
    try:
        with repo.session() as s:
            rows = s.execute(
                select(m.Provenance.uid, m.Provenance.blob_sha256)
                .where(m.Provenance.folder == folder, m.Provenance.uid.is_not(None))
                .order_by(m.Provenance.id)
            ).all()
    finally:
        repo.dispose()
    return dict(rows)


def archive_of(config):
    return Archive(load_settings(config).archive_dir)


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def expunge(dovecot, user, folder, uid):
    with dovecot.client(user) as client:
        client.select_folder(folder)
        client.delete_messages([uid])
        client.expunge()


def use_database(monkeypatch, url):
    """Point the CLI and load_settings() at `url` (a PostgreSQL database) instead of the config's SQLite."""
    if url is not None:
        monkeypatch.setenv("MAILSYNC_DATABASE_URL", url)


@pytest.fixture
def synced(dovecot, imap_user, tmp_path, monkeypatch, capsys, db_url):
    """(config, archive, uids, {uid: sha256}) after one sync of four messages from a fresh Dovecot user."""
    use_database(monkeypatch, db_url)
    config = imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch)
    assert cli(capsys, config, "db", "upgrade")[0] == 0
    uids = dovecot.append_many(imap_user.name, "INBOX", [mail(f"deal {i}") for i in range(4)])
    assert cli(capsys, config, "sync", "--once")[0] == 0
    return config, archive_of(config), uids, blobs(config)


@pytest.mark.both_dbs
def test_verify_finds_damage_and_repair_restores_it_from_dovecot(synced, capsys):
    config, archive, uids, sha = synced
    flipped, deleted = sha[uids[0]], sha[uids[1]]
    original = {key: archive.get(key) for key in (flipped, deleted)}
    flipped_path, deleted_path = archive.path_for(flipped), archive.path_for(deleted)

    flip_byte(flipped_path)  # (a)
    damaged_bytes = flipped_path.read_bytes()
    deleted_path.unlink()  # (b)
    orphan = archive.path_for(archive.put(b"From: x@y.example\n\nnot known to the database\n"))  # (c)
    stale = flipped_path.parent / ".tmp-xyz"  # (d): left by a crash an hour ago
    stale.write_bytes(b"half a blob")
    os.utime(stale, (HOUR_AGO, HOUR_AGO))
    fresh = deleted_path.parent / ".tmp-fresh"  # a write that may still be in progress
    fresh.write_bytes(b"being written")

    code, out, err = cli(capsys, config, "verify")
    assert code == 1
    assert f"corrupt: {flipped_path}" in err
    assert f"missing: {deleted_path}" in err
    assert f"orphan: {orphan}" in err
    assert re.search(r"partial writes\s*│\s*2\b", out)  # the two .tmp-* files
    assert stale.exists()  # plain verify changes nothing

    code, out, err = cli(capsys, config, "verify", "--repair")
    assert code == 1, "the orphan is kept, so the archive still needs a look"
    assert f"repaired (corrupt): {flipped_path} from imap:imap/INBOX;" in out
    assert f"repaired (missing): {deleted_path} from imap:imap/INBOX;" in out
    assert archive.get(flipped) == original[flipped]  # byte-exact, hash checked by get()
    assert archive.get(deleted) == original[deleted]
    kept = flipped_path.with_name(flipped_path.name + ".corrupt")
    assert kept.read_bytes() == damaged_bytes  # the evidence is kept beside the blob
    assert not stale.exists()
    assert fresh.exists()
    assert f"partial write kept: {fresh}" in err
    assert orphan.exists()
    assert "1 orphan blob(s) kept" in err
    assert not [row for row in err.splitlines() if row.startswith("unrepairable")]

    orphan.unlink()
    fresh.unlink()
    assert cli(capsys, config, "verify")[0] == 0
    code, out, _ = cli(capsys, config, "verify", "--repair")
    assert code == 0
    assert "archive ok" in out


def test_mail_expunged_on_the_server_is_reported_unrepairable(synced, dovecot, imap_user, capsys):
    config, archive, uids, sha = synced
    expunge(dovecot, imap_user.name, "INBOX", uids[2])
    path = archive.path_for(sha[uids[2]])
    flip_byte(path)
    damaged_bytes = path.read_bytes()

    code, _, err = cli(capsys, config, "verify", "--repair")
    assert code == 1
    (line,) = [row for row in err.splitlines() if row.startswith("unrepairable")]
    assert line.startswith(f"unrepairable (corrupt): {path}: imap:imap/INBOX;")
    assert f"uid={uids[2]}: no copy left on the server (UID {uids[2]} was deleted or moved)" in line
    assert path.read_bytes() == damaged_bytes  # left as found: there are no good bytes to put there
    assert not path.with_name(path.name + ".corrupt").exists()

    # Once a sync has seen it gone, repair knows without asking the server.
    assert cli(capsys, config, "sync", "--once")[0] == 0
    code, _, err = cli(capsys, config, "verify", "--repair")
    assert code == 1
    assert "no copy left on the server (gone since" in err
    assert archive.get(sha[uids[3]])  # the others are untouched


def test_uidvalidity_change_is_a_reason_until_a_resync_records_the_new_copy(
    dovecot, imap_user, tmp_path, monkeypatch, capsys
):
    config = imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, ("Deals",))
    cli(capsys, config, "db", "upgrade")
    dovecot.create_folder(imap_user.name, "Deals")
    messages = [mail("renewal"), mail("expansion")]
    uids = dovecot.append_many(imap_user.name, "Deals", messages)
    assert cli(capsys, config, "sync", "--once")[0] == 0
    archive = archive_of(config)
    target = blobs(config, "Deals")[uids[0]]
    original = archive.get(target)
    dovecot.delete_folder(imap_user.name, "Deals")  # a server restore: same mail, new UIDVALIDITY
    dovecot.create_folder(imap_user.name, "Deals")
    dovecot.append_many(imap_user.name, "Deals", messages)
    archive.path_for(target).unlink()

    code, _, err = cli(capsys, config, "verify", "--repair")
    assert code == 1
    assert f"unrepairable (missing): {archive.path_for(target)}" in err
    assert "UIDVALIDITY changed (was" in err

    assert cli(capsys, config, "sync", "--once")[0] == 0  # resync: records the copies' new UIDs
    assert archive.get(target) == original  # ingest archives first, so the resync restored it too
    archive.path_for(target).unlink()
    code, out, _ = cli(capsys, config, "verify", "--repair")
    assert code == 0  # the old copy's UIDVALIDITY is void; the new copy has the same bytes
    assert f"repaired (missing): {archive.path_for(target)} from imap:imap/Deals;" in out
    assert archive.get(target) == original


def test_unreachable_server_and_unconfigured_mailbox_are_reasons_not_crashes(
    dovecot_factory, tmp_path, monkeypatch, capsys
):
    server = dovecot_factory()
    config = imap_config(tmp_path, server, "dana", "danapw", monkeypatch)
    cli(capsys, config, "db", "upgrade")
    uids = server.append_many("dana", "INBOX", [mail("outage")])
    assert cli(capsys, config, "sync", "--once")[0] == 0
    archive = archive_of(config)
    target = blobs(config)[uids[0]]
    path = archive.path_for(target)
    original = archive.get(target)
    path.unlink()

    server.stop()
    code, _, err = cli(capsys, config, "verify", "--repair")
    assert code == 1
    line = next(row for row in err.splitlines() if row.startswith("unrepairable"))
    assert f"mailbox imap: connect on 127.0.0.1:{server.port}" in line

    write_config(tmp_path)  # the IMAP mailbox removed from the config
    code, _, err = cli(capsys, config, "verify", "--repair")
    assert code == 1
    assert "mailbox 'imap' not configured" in err

    server.start()
    config = imap_config(tmp_path, server, "dana", "danapw", monkeypatch)
    code, out, _ = cli(capsys, config, "verify", "--repair")
    assert code == 0
    assert f"repaired (missing): {path}" in out
    assert archive.get(target) == original


@pytest.mark.both_dbs
def test_repair_from_imported_files(tmp_path, capsys, db_url):
    config = write_config(tmp_path, database_url=db_url)
    cli(capsys, config, "db", "upgrade")
    maildir = tmp_path / "export" / "Maildir"
    (maildir / "new").mkdir(parents=True)
    (maildir / "tmp").mkdir()
    shutil.copytree(DEMO / "Maildir" / "cur", maildir / "cur")
    cur = sorted((maildir / "cur").iterdir())
    unread = maildir / "new" / "1779000000.M1P1.demo"  # not yet seen: no flags, in new/
    cur[0].rename(unread)
    flagged, vanished, edited = cur[1], cur[2], cur[3]
    mbox_path = tmp_path / "export" / "archive.mbox"
    box = mailbox.mbox(mbox_path)
    box.add(mail("from the mbox 0"))
    box.add(mail("from the mbox 1"))
    box.close()
    assert cli(capsys, config, "import", str(maildir), "--mailbox", "dana")[0] == 0
    assert cli(capsys, config, "import", str(mbox_path), "--mailbox", "dana")[0] == 0
    archive = archive_of(config)

    def sha(data):
        return hashlib.sha256(data).hexdigest()

    in_mbox = mailbox.mbox(mbox_path)
    mbox_sha = sha(in_mbox.get_bytes(in_mbox.keys()[1]))
    in_mbox.close()
    shas = {p: sha(p.read_bytes()) for p in (unread, flagged, vanished, edited)}
    original = {key: archive.get(key) for key in [*shas.values(), mbox_sha]}
    for key in original:
        archive.path_for(key).unlink()
    # Since the import: one message was read (new/ -> cur/, flag S), one flagged and replied to (-> FRS),
    # one deleted, one edited in place.
    unread.rename(maildir / "cur" / (unread.name + ":2,S"))
    flagged.rename(flagged.with_name(flagged.name.split(":2,")[0] + ":2,FRS"))
    vanished.unlink()
    edited.write_bytes(edited.read_bytes() + b"\nedited\n")

    code, out, err = cli(capsys, config, "verify", "--repair")
    assert code == 1
    for key in (shas[unread], shas[flagged], mbox_sha):
        assert f"repaired (missing): {archive.path_for(key)} from file:dana:" in out
        assert archive.get(key) == original[key]
    assert f"{mbox_path}#1" in out  # the mbox message by its number
    assert f"unrepairable (missing): {archive.path_for(shas[vanished])}" in err
    assert "the imported file is gone" in err
    assert f"unrepairable (missing): {archive.path_for(shas[edited])}" in err
    assert "bytes differ: the file changed since it was imported" in err
    for key in (shas[vanished], shas[edited]):
        with pytest.raises(ArchiveError):
            archive.get(key)


def test_big_mail_is_repaired_through_a_spool_file(dovecot, imap_user, tmp_path, monkeypatch, capsys):
    # With a 2 KiB limit, sync and repair fetch bigger mail in pieces into a spool file, as they do
    # with real 50 MB mail; the repair hashes and writes it from there.
    limits = "\n[limits]\nmax_bytes = 2048\n"
    monkeypatch.setenv("MAILSYNC_LOG_LEVEL", "info")  # message_fetched_in_pieces is an info event
    config = imap_config(tmp_path, dovecot, imap_user.name, imap_user.password, monkeypatch, extra=limits)
    cli(capsys, config, "db", "upgrade")
    big = mail("attachment").replace(b"\n\n", b"\n\n" + b"0123456789abcdef" * 600 + b"\n", 1)
    uids = dovecot.append_many(imap_user.name, "INBOX", [big, mail("small")])
    assert cli(capsys, config, "sync", "--once")[0] == 0
    archive = archive_of(config)
    sha = blobs(config)
    original = archive.get(sha[uids[0]])
    assert len(original) > 4 * 2048
    flip_byte(archive.path_for(sha[uids[0]]))
    archive.path_for(sha[uids[1]]).unlink()

    code, out, err = cli(capsys, config, "verify", "--repair")
    assert code == 0
    assert "message_fetched_in_pieces" in err
    assert archive.get(sha[uids[0]]) == original
    assert f"repaired (missing): {archive.path_for(sha[uids[1]])}" in out
    assert not list((tmp_path / "var" / "archive" / "spool").glob("*"))  # spool files cleaned up
