"""Mailboxes of departed reps: not polled while their owner is inactive (`mailsync rep deactivate`).

A [[mailboxes]] entry whose `owner` is a rep marked inactive (by the CLI or reps.csv `active=false`;
mailsync/approval/reps.py) is skipped by `mailsync sync` and `mailsync run` before anything connects to
its server: the account of someone who left is often disabled, and what it holds is theirs to keep,
not new work. Everything it captured stays in the archive and the database, and `mailsync import` of
an exported copy still works. An owner who is no rep in the CRM (reps.csv never imported) is polled.
The daemon asks at every poll, so `mailsync rep activate` resumes polling without a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import structlog

from config.errors import StorageError
from storage.reps import owner_inactive

if TYPE_CHECKING:
    from config.settings import MailboxSettings
    from storage.repo import Repo

log = structlog.get_logger()


class InactiveMetrics(Protocol):
    """What the guard reports (the daemon's Metrics is one)."""

    def inactive(self, mailbox: str, skipped: bool) -> bool:
        """Record whether `mailbox` is skipped; True when that changed."""
        ...


def skip_inactive(repo: Repo, mailbox: MailboxSettings, metrics: InactiveMetrics | None = None) -> bool:
    """True when `mailbox` must not be polled now because its owner left.

    Logs `mailbox_skipped_inactive` once when skipping starts (and `mailbox_polled_again` when the owner
    is active again); with `metrics`, "once" is per process, without it (one-shot `mailsync sync`) per
    call. A database that cannot answer is not a reason to skip: the poll goes on and meets the fault
    in its own error handling, with its backoff."""
    try:
        with repo.session() as session:
            skipped = owner_inactive(session, mailbox.owner)
    except StorageError:
        return False
    changed = metrics.inactive(mailbox.name, skipped) if metrics is not None else skipped
    if changed and skipped:
        log.warning(  # a configured mailbox left unpolled deserves a look (or removal from the config)
            "mailbox_skipped_inactive",
            mailbox=mailbox.name,
            owner=mailbox.owner,
            fix=f"mailsync rep activate {mailbox.owner} (to poll it again)",
        )
    elif changed:
        log.info("mailbox_polled_again", mailbox=mailbox.name, owner=mailbox.owner)
    return skipped
