"""`mailsync forget` rewrites the event log and the provenance journal while daemons append to them.

Three writer processes append through the real EventLog and Journal while this process rewrites both
files again and again with `rewrite_file` (redacting a token every appended line carries, so each pass
that finds new lines replaces the file). An append that lands in the old file after it was read is lost
with it (without storage/appending.py's lock, every run lost a few); at the end every line written is
there exactly once, redacted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

from config.errors import StorageError
from mailsync.pipeline.forgetting import rewrite_file
from storage.eventlog import EventLog
from storage.journal import CursorMoved, Journal

if TYPE_CHECKING:
    from pathlib import Path

WRITERS = 3
LINES = 300
TOKEN = "SECRET-TOKEN"

WRITER = f"""
import sys
import time
from datetime import datetime
from pathlib import Path

from storage.eventlog import EventLog
from storage.journal import CursorMoved, Journal

root, name = Path(sys.argv[1]), sys.argv[2]
events, journal = EventLog(root / "events"), Journal(root / "journal")
(root / f"ready-{{name}}").touch()
while not (root / "go").exists():
    time.sleep(0.001)
for n in range({LINES}):
    events.append("race", {{"writer": name, "n": n, "token": "{TOKEN}"}}, actor="test")
    moved = CursorMoved(mailbox=name, folder="{TOKEN}", uidvalidity=1, last_uid=n, at=datetime(2026, 1, 1))
    journal.append([moved])
"""


def redact(text: str) -> str:
    return text.replace(TOKEN, "REDACTED")


def rewrite_all(root: Path, refused: list[str]) -> int:
    """Each file rewritten once; a rewrite refused (the file kept changing) is noted, not raised, so
    that the lines lost, if any, are what the test reports first."""
    paths = sorted((root / "events").glob("events-*.jsonl")) + sorted((root / "journal").glob("*.jsonl"))
    done = 0
    for path in paths:
        try:
            done += rewrite_file(path, redact)
        except StorageError as exc:
            refused.append(str(exc))
    return done


def test_appends_during_rewrites_are_all_kept(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    (tmp_path / "journal").mkdir()
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}"]) for i in range(WRITERS)
    ]
    try:
        while not all((tmp_path / f"ready-w{i}").exists() for i in range(WRITERS)):
            assert all(writer.poll() is None for writer in writers), "a writer died before starting"
            time.sleep(0.01)
        (tmp_path / "go").touch()
        rewrites, refused = 0, list[str]()
        while any(writer.poll() is None for writer in writers):
            rewrites += rewrite_all(tmp_path, refused)
        assert [writer.wait() for writer in writers] == [0] * WRITERS
        rewrites += rewrite_all(tmp_path, refused)  # what the last appends brought
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()

    assert rewrites > 0
    expected = {(f"w{i}", n) for i in range(WRITERS) for n in range(LINES)}
    events = list(EventLog(tmp_path / "events"))
    moves = [entry for entry in Journal(tmp_path / "journal") if isinstance(entry, CursorMoved)]
    # each line written once: a line lost shows as 0, a line written twice as 2
    assert not_once(expected, [(e.payload["writer"], e.payload["n"]) for e in events]) == {}
    assert not_once(expected, [(entry.mailbox, entry.last_uid) for entry in moves]) == {}
    assert {e.payload["token"] for e in events} == {"REDACTED"}
    assert {entry.folder for entry in moves} == {"REDACTED"}
    assert refused == []


def not_once(expected: set[tuple[str, int]], found: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    seen = Counter(found)
    return {key: seen[key] for key in expected | set(seen) if seen[key] != 1 or key not in expected}
