"""Pipelined fetching: a thread runs the next UID FETCH while the caller stores the current batch.

    fetch thread:  FETCH range 1 ─> FETCH range 2 ─> FETCH range 3 ─> ...    (the IMAP connection)
                          │ bounded queue (AHEAD batches) │
    caller:               └─> capture batch 1 ────────────└─> capture batch 2 ...

A batch is one UID FETCH of the source (ImapSource.fetch_batches: a few hundred messages or a few MB,
in UID order). A spooled (huge) message travels alone and the thread waits until the caller is done
with it, because the source deletes its spool file when the thread moves on. An error in the thread
is raised in the caller; a caller that stops early (closing the iterator) stops the thread, which
finishes the FETCH under way. The connection is the thread's until then.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Generator

    from mailsync.mail.sources.imap import FolderStatus, ImapSource
    from storage.records import RawMessage

AHEAD = 1  # batches fetched ahead of the one being stored: memory stays at about two batches
_TICK = 0.1  # seconds between looks at `closing` while blocked


class _End:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


_Item = tuple[list["RawMessage"], threading.Event] | _End


class _Fetcher:
    def __init__(self, source: ImapSource, status: FolderStatus, uids: list[int]) -> None:
        self.source, self.status, self.uids = source, status, uids
        self.channel: queue.Queue[_Item] = queue.Queue(AHEAD)
        self.closing = threading.Event()

    def run(self) -> None:
        try:
            for batch in self.source.fetch_batches(self.status, self.uids):
                done = threading.Event()
                if not self._put((batch, done)):
                    return
                if any(raw.spool is not None for raw in batch):  # its spool file must outlive its capture
                    while not (done.wait(_TICK) or self.closing.is_set()):
                        pass
            self._put(_End())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which raises it
            self._put(_End(exc))

    def _put(self, item: _Item) -> bool:
        while not self.closing.is_set():
            try:
                self.channel.put(item, timeout=_TICK)
            except queue.Full:
                continue
            return True
        return False


def fetch_batches(source: ImapSource, status: FolderStatus, uids: list[int]) -> Generator[list[RawMessage]]:
    """The batches of `uids`' messages, each fetched while the one before is being stored."""
    fetcher = _Fetcher(source, status, uids)
    thread = threading.Thread(target=fetcher.run, name=f"fetch {status.name}", daemon=True)
    thread.start()
    try:
        while True:
            item = fetcher.channel.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            batch, done = item
            try:
                yield batch
            finally:
                done.set()
    finally:
        fetcher.closing.set()
        thread.join()
