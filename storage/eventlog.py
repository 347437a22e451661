"""The event log: everything that is not mail, appended durably before it is applied.

One JSON object a line in `<events_dir>/events-YYYY-MM.jsonl`, in order. An event is
{"id", "at", "kind", "actor", "digest", "payload"}; `digest` is the SHA-256 of the canonical JSON of
`kind` and `payload`, so the same change submitted twice is recognised. The database is a projection:
replaying the archive and this log rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from config.errors import StorageError
from storage.appending import appending, write_all
from storage.private import fsync_path

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    at: str
    kind: str
    actor: str
    digest: str
    payload: dict[str, Any]


def digest_of(kind: str, payload: dict[str, Any]) -> str:
    canonical = json.dumps({"kind": kind, "payload": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class EventLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def append(self, kind: str, payload: dict[str, Any], actor: str) -> Event:
        """Write one event durably (fsync) and return it."""
        now = datetime.now(UTC)
        event = Event(
            id=uuid.uuid4().hex,
            at=now.isoformat(),
            kind=kind,
            actor=actor,
            digest=digest_of(kind, payload),
            payload=payload,
        )
        line = json.dumps(asdict(event), sort_keys=True)
        path = self.directory / f"events-{now:%Y-%m}.jsonl"
        try:
            new = not path.exists()
            with appending(path) as fd:  # under the lock a rewrite (`mailsync forget`) also takes
                write_all(fd, (line + "\n").encode("utf-8"))
                os.fsync(fd)
            if new:
                fsync_path(self.directory)  # the new month file's name, or a crash could take the file
        except OSError as exc:
            raise StorageError(
                f"cannot append to event log {path}: {exc.strerror}",
                fix="free disk space or fix permissions on events_dir",
            ) from exc
        return event

    def __iter__(self) -> Iterator[Event]:
        if not self.directory.exists():
            return
        for path in sorted(self.directory.glob("events-*.jsonl")):
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, 1):
                    if not line.strip():
                        continue
                    try:
                        yield Event(**json.loads(line))
                    except (ValueError, TypeError) as exc:
                        raise StorageError(
                            f"{path}:{number}: not a valid event: {exc}",
                            fix="restore the file from backup; the log is append-only",
                        ) from exc
