"""The blob store contract (storage/archive.py: BlobStore), run against every store implementation.

A new backend (an S3-compatible bucket) adds its factory to STORES and passes these unchanged; the
pipeline and rebuild know stores only through BlobStore (checked at the end of this file).
"""

from __future__ import annotations

import ast
import hashlib
import os
import tracemalloc
from typing import TYPE_CHECKING

import pytest

from config.errors import ArchiveError
from storage.archive import SYNCFS_FROM, Archive, BlobStore, Staged, open_spec
from storage.records import Provenance, RawMessage
from tests.conftest import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# name -> a store rooted in (or named after) a test's tmp_path; calling it twice reopens the same store.
STORES: dict[str, Callable[[Path], BlobStore]] = {
    "filesystem": lambda tmp_path: Archive(tmp_path / "archive"),
}


@pytest.fixture(params=sorted(STORES))
def reopen(request, tmp_path) -> Callable[[], BlobStore]:
    factory = STORES[request.param]
    return lambda: factory(tmp_path)


@pytest.fixture
def store(reopen) -> BlobStore:
    return reopen()


def mail(n: int) -> bytes:
    return f"From: a{n}@example.com\r\nSubject: deal {n}\r\n\r\nbody {n}\r\n".encode() * (n % 7 + 1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_put_get_round_trip(store):
    data = mail(1) + bytes(range(256))  # every byte value, exactly as given
    key = store.put(data)
    assert key == sha(data)
    assert store.exists(key)
    assert store.get(key) == data


def test_put_of_known_bytes_is_idempotent(store):
    first = store.put(mail(2))
    assert store.put(mail(2)) == first
    assert list(store.keys()) == [first]
    assert store.get(first) == mail(2)


def test_put_stream_of_a_big_spooled_body_holds_one_chunk_at_a_time(store, tmp_path):
    spool = tmp_path / "spool.eml"
    block = os.urandom(1 << 16)
    with spool.open("wb") as out:
        out.write(b"From: big@example.com\r\nSubject: attachment\r\n\r\n")
        for n in range(384):  # 24 MiB, partly incompressible
            out.write(block if n % 2 else b"line of text\r\n" * 4681)
    raw = RawMessage(b"", Provenance("dana", path=str(spool)), spool=spool)
    tracemalloc.start()
    try:
        key = store.put_stream(raw.chunks(), raw.size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    body = spool.read_bytes()
    assert key == sha(body)
    assert peak < 4 * (1 << 20)  # chunks are 1 MiB; the body is 24
    assert store.exists(key)
    assert store.get(key) == body
    assert store.put_stream(raw.chunks(), raw.size) == key  # again: the same blob
    assert list(store.keys()) == [key]


@pytest.mark.parametrize("count", [2, SYNCFS_FROM + 4])  # an fsync per blob, and one syncfs
def test_stage_then_sync_makes_blobs_readable_from_a_reopened_store(reopen, count):
    store = reopen()
    blobs = {sha(mail(n)): mail(n) for n in range(count)}
    tokens = [store.stage(data, key) for key, data in blobs.items()]
    assert all(isinstance(token, Staged) for token in tokens)
    store.sync(tokens)
    store.sync([])  # an empty batch is nothing to do
    again = reopen()
    for key, data in blobs.items():
        assert again.exists(key)
        assert again.get(key) == data
    assert list(again.keys()) == sorted(blobs)


def test_stage_replaces_what_is_stored_under_the_name(store):
    key = store.put(mail(3))
    store.sync([store.stage(mail(3), key)])
    assert store.get(key) == mail(3)
    assert list(store.keys()) == [key]


def test_delete(store):
    kept, gone = store.put(mail(4)), store.put(mail(5))
    assert store.delete(gone) is True
    assert not store.exists(gone)
    assert store.delete(gone) is False  # not there any more
    with pytest.raises(ArchiveError):
        store.get(gone)
    assert list(store.keys()) == [kept]


def test_keys_are_every_blob_sorted(store):
    assert list(store.keys()) == []
    keys = {store.put(mail(n)) for n in range(6)}
    assert list(store.keys()) == sorted(keys)
    assert list(store) == sorted(keys)


def test_get_of_a_missing_key_raises_archive_error(store):
    missing = sha(b"never stored")
    assert not store.exists(missing)
    with pytest.raises(ArchiveError, match=missing):
        store.get(missing)


def test_verify_compares_stored_blobs_with_the_known_ones(store):
    known, orphan = store.put(mail(6)), store.put(mail(7))
    lost = sha(b"named by the database, never stored")
    report = store.verify({known, lost})
    assert report.checked == 2
    assert report.missing == [lost]
    assert report.orphans == [orphan]
    assert report.corrupt == []
    assert not report.ok


def test_a_store_opened_from_its_spec_in_another_process_stages_into_the_same_store(store):
    """What capture's stage workers do (mailsync/pipeline/staging.py): open the store from its spec,
    stage there, hand the token back to be synced here. A store without a spec is staged in-process."""
    spec = store.spec()
    if spec is None:  # not shareable: nothing more to hold it to
        return
    data = mail(9)
    token = open_spec(spec).stage(data, sha(data))
    store.sync([token])
    assert store.get(sha(data)) == data
    assert open_spec(spec).spec() == spec
    with pytest.raises(ArchiveError, match="unknown blob store"):
        open_spec('{"store": "carrier pigeon"}')


# -- the pipeline knows stores only through BlobStore ------------------------------------------------

FILESYSTEM_ONLY = {"path_for", "set_aside"}  # Archive's extras for verify --repair (storage/archive.py)
STORE_INTERNALS = {"root", "blobs"}  # the filesystem Archive's directories


FILESYSTEM_COMMANDS = {"archive.py", "repair.py"}  # verify --repair: the filesystem Archive's own


def store_agnostic_modules() -> list[Path]:
    """Everything that reads or writes blobs, but the filesystem-specific verify/repair commands: they
    get their store from open_store(settings), so that another backend needs no change here."""
    return [
        *sorted((ROOT / "mailsync" / "pipeline").glob("*.py")),
        *(p for p in sorted((ROOT / "mailsync" / "admin").glob("*.py")) if p.name not in FILESYSTEM_COMMANDS),
        *(p for p in sorted((ROOT / "mailsync" / "cli").glob("*.py")) if p.name not in FILESYSTEM_COMMANDS),
        ROOT / "mailsync" / "evaluation" / "runner.py",
    ]


def filesystem_leaks(source: str) -> list[str]:
    """Where `source` reaches past BlobStore into the filesystem Archive: path_for/set_aside, the
    `.root`/`.blobs` of anything named like an archive, or the Archive class itself."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            owner = ast.unparse(node.value)
            if node.attr in FILESYSTEM_ONLY or (node.attr in STORE_INTERNALS and "archive" in owner.lower()):
                found.append((node.lineno, f"{owner}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "storage.archive":
            found += [(node.lineno, "imports Archive") for a in node.names if a.name == "Archive"]
    return [f"line {line}: {what}" for line, what in sorted(found)]


@pytest.mark.parametrize("path", store_agnostic_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pipeline_and_rebuild_use_only_the_blob_store_interface(path):
    assert filesystem_leaks(path.read_text()) == []


def test_the_leak_check_sees_what_it_looks_for():
    leaky = (
        "from storage.archive import Archive, BlobStore\n"
        "Journal.beside(archive.root)\n"
        "pipeline.archive.path_for(sha).exists()\n"
        "store.set_aside(sha)\n"
        "self.archive.blobs.glob('*')\n"
        "source.root\n"  # a file source's root is not an archive's
    )
    assert filesystem_leaks(leaky) == [
        "line 1: imports Archive",
        "line 2: archive.root",
        "line 3: pipeline.archive.path_for",
        "line 4: store.set_aside",
        "line 5: self.archive.blobs",
    ]
