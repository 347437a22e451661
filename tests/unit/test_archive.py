"""The raw archive: content-addressed, compressed, stored once, verified."""

from __future__ import annotations

import hashlib

import pytest
import zstandard

from config.errors import ArchiveError
from storage.archive import Archive


def test_put_get_roundtrip_layout_and_compression(tmp_path):
    archive = Archive(tmp_path / "archive")
    data = b"Subject: x\n\n" + b"hello world\n" * 1000
    key = archive.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    path = archive.path_for(key)
    assert path == tmp_path / "archive" / "blobs" / key[:2] / key[2:4] / f"{key}.zst"
    assert path.stat().st_size < len(data) / 5
    assert zstandard.ZstdDecompressor().decompress(path.read_bytes()) == data
    assert archive.get(key) == data


def test_same_bytes_stored_once(tmp_path):
    archive = Archive(tmp_path)
    first = archive.put(b"same bytes")
    mtime = archive.path_for(first).stat().st_mtime_ns
    assert archive.put(b"same bytes") == first
    assert archive.path_for(first).stat().st_mtime_ns == mtime
    assert list(archive.keys()) == [first]


def test_get_detects_missing_and_corrupt(tmp_path):
    archive = Archive(tmp_path)
    key = archive.put(b"abc" * 100)
    path = archive.path_for(key)
    other = zstandard.ZstdCompressor().compress(b"abd" * 100)
    path.write_bytes(other)
    with pytest.raises(ArchiveError, match="corrupt"):
        archive.get(key)
    path.unlink()
    with pytest.raises(ArchiveError, match="missing"):
        archive.get(key)


def test_verify_reports_missing_corrupt_orphan_and_partial(tmp_path):
    archive = Archive(tmp_path)
    good, flipped, gone, orphan = (archive.put(bytes([i]) * 64) for i in range(4))
    path = archive.path_for(flipped)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    archive.path_for(gone).unlink()
    (archive.path_for(good).parent / ".tmp-leftover").write_bytes(b"half")
    report = archive.verify([good, flipped, gone])
    assert report.checked == 3
    assert report.corrupt == [flipped]
    assert report.missing == [gone]
    assert report.orphans == [orphan]
    assert len(report.partial) == 1
    assert not report.ok


def test_unwritable_archive_is_an_archive_error(tmp_path):
    blocker = tmp_path / "archive"
    blocker.write_text("a file where the archive directory should be")
    with pytest.raises(ArchiveError, match="cannot write a 1-byte blob") as caught:
        Archive(blocker).put(b"x")
    assert caught.value.fix
    assert not list(tmp_path.rglob("*.zst"))
