"""The suggestions a batch's proposals may touch, read at once for all its threads.

mailstore.sync_suggestions needs, for each thread, the rows of its proposals' keys and the thread's
open link/new-opportunity/stage rows. Read per thread, that was an ORM query for every touched thread,
and the autoflush before it wrote the previous thread's suggestions one thread at a time. SuggestionRows
reads them for a whole batch in a few queries, given the keys its proposals are likely to have; a key
not among them is read when it is asked for, so a wrong guess costs a read, never a wrong answer. It is
kept current with what sync_suggestions writes (`note`), and the batch's new rows are flushed together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from storage import models as m
from storage.in_lists import chunks

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from sqlalchemy.orm import Session

THREAD_KINDS = ("link_thread", "new_opportunity", "stage_change")


class SuggestionRows:
    """Suggestions by key, and each thread's open link/new-opportunity/stage ones (see the module doc)."""

    def __init__(self, session: Session, threads: Iterable[int], keys: Iterable[str]) -> None:
        self._session = session
        self._rows: dict[str, m.Suggestion] = {}
        self._absent: set[str] = set()  # keys read and not found
        self._open: dict[int, dict[str, None]] = {}  # thread -> keys of its open thread-kind rows
        self._indexed: dict[str, int] = {}  # key -> the thread it is indexed under in _open
        wanted = sorted(set(keys))
        self._read(wanted)
        for part in chunks(sorted(set(threads))):
            self.note(
                session.scalars(
                    select(m.Suggestion).where(
                        m.Suggestion.thread_id.in_(part),
                        m.Suggestion.status == "open",
                        m.Suggestion.kind.in_(THREAD_KINDS),
                    )
                )
            )

    def read(self, thread_id: int, keys: Collection[str]) -> list[m.Suggestion]:
        """The rows with `keys` and the thread's open link/new-opportunity/stage rows, as they are now."""
        self._read([key for key in keys if key not in self._rows and key not in self._absent])
        found = {key: self._rows[key] for key in keys if key in self._rows}
        for key in self._open.get(thread_id, ()):
            found.setdefault(key, self._rows[key])
        return list(found.values())

    def note(self, rows: Iterable[m.Suggestion]) -> None:
        """Rows read or written since: later reads see them as they are now."""
        for row in rows:
            self._rows[row.key] = row
            self._absent.discard(row.key)
            before = self._indexed.pop(row.key, None)
            if before is not None:
                del self._open[before][row.key]
            if row.status == "open" and row.kind in THREAD_KINDS and row.thread_id is not None:
                self._open.setdefault(row.thread_id, {})[row.key] = None
                self._indexed[row.key] = row.thread_id

    def _read(self, keys: Sequence[str]) -> None:
        for part in chunks(keys):
            self.note(self._session.scalars(select(m.Suggestion).where(m.Suggestion.key.in_(part))))
        self._absent.update(key for key in keys if key not in self._rows)
