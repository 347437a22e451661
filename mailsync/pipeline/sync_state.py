"""Sync state of one IMAP folder, and the rules for moving its cursor.

IMAP names a message in a folder by (UIDVALIDITY, UID). UIDs only grow while UIDVALIDITY stays
the same; when the server changes UIDVALIDITY (folder deleted and recreated, server migrated, a
"server that lies") every old UID is meaningless. So the cursor is the pair, kept per folder:

    folder_state: (mailbox, folder) -> uidvalidity, last_uid, highest_modseq, last_success_at

A sync pass over one folder:

    SELECT (read-only) ---> uidvalidity same? --no--> log uidvalidity_changed, last_uid := 0
          |                      |                   (a full resync: every message is matched by
          |                     yes                   its identity, so known mail gains a new
          v                      v                    provenance and nothing is imported twice)
    UID SEARCH UID last+1:* [SINCE since]  (only on a first sync)
          |
          v
    FETCH BODY.PEEK[] in batches --> pipeline.ingest each (archive first, one commit per message)
          |
          v
    cursor := highest UID of the batch whose every message is committed   (own transaction)

A crash anywhere leaves the cursor at or behind what is committed: the next pass fetches those
UIDs again and the pipeline recognises them ("known"), so nothing is lost and nothing duplicated.
Mail deleted or moved on the server is not an error: its provenance gets `gone_at`, the archive
keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from storage import models as m
from storage.models import utcnow

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sqlalchemy.orm import Session


@dataclass(frozen=True, slots=True)
class Cursor:
    uidvalidity: int | None
    last_uid: int


def load_cursor(session: Session, mailbox: str, folder: str) -> Cursor:
    state = _state(session, mailbox, folder)
    return Cursor(state.uidvalidity, state.last_uid) if state else Cursor(None, 0)


def save_cursor(
    session: Session, mailbox: str, folder: str, cursor: Cursor, *, highest_modseq: int | None = None
) -> None:
    """Move the cursor; called only after the messages up to `cursor.last_uid` are committed."""
    state = _state(session, mailbox, folder)
    if state is None:
        mailbox_id = session.scalar(select(m.Mailbox.id).where(m.Mailbox.name == mailbox))
        if mailbox_id is None:
            raise LookupError(mailbox)
        state = m.FolderState(mailbox_id=mailbox_id, name=folder)
        session.add(state)
    state.uidvalidity = cursor.uidvalidity
    state.last_uid = cursor.last_uid
    state.highest_modseq = highest_modseq
    state.last_success_at = utcnow()


def mark_gone(session: Session, mailbox: str, folder: str, uidvalidity: int, present: Iterable[int]) -> int:
    """Record copies no longer on the server (deleted or moved); returns how many were newly gone."""
    alive = set(present)
    rows = session.execute(
        select(m.Provenance.id, m.Provenance.uid).where(
            m.Provenance.mailbox == mailbox,
            m.Provenance.folder == folder,
            m.Provenance.uidvalidity == uidvalidity,
            m.Provenance.gone_at.is_(None),
        )
    ).all()
    gone = [row_id for row_id, uid in rows if uid not in alive]
    if gone:
        session.execute(update(m.Provenance).where(m.Provenance.id.in_(gone)).values(gone_at=utcnow()))
    return len(gone)


def _state(session: Session, mailbox: str, folder: str) -> m.FolderState | None:
    return session.scalar(
        select(m.FolderState)
        .join(m.Mailbox, m.Mailbox.id == m.FolderState.mailbox_id)
        .where(m.Mailbox.name == mailbox, m.FolderState.name == folder)
    )
