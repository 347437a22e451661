"""For tests of projections (replay, rebuild) of one history: the demo with decisions taken on it, and
a database compared by natural keys."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import select

from mailsync.cli import main
from storage import models as m
from tests.support.demo import import_demo

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from storage.repo import Repo


def _keys(
    session: Session,
) -> tuple[dict[int, str], dict[int, str], dict[int, str], dict[int, str], dict[int, str]]:
    def pairs(model, key) -> dict[int, str]:
        return dict(session.execute(select(model.id, key)).all())

    return (
        pairs(m.Message, m.Message.fingerprint),
        pairs(m.Thread, m.Thread.key),
        pairs(m.Account, m.Account.name),
        pairs(m.Contact, m.Contact.name),
        pairs(m.Opportunity, m.Opportunity.name),
    )


def snapshot(repo: Repo) -> dict[str, list]:
    """The database by natural keys (fingerprints, thread keys, proposal keys, names), sorted; what
    differs between two projections of the same history only by row ids compares equal."""
    with repo.session() as s:
        msg, thread, account, contact, opp = _keys(s)
        suggestion = dict(s.execute(select(m.Suggestion.id, m.Suggestion.key)).all())

        def rows(query, shape) -> list:
            return sorted((shape(row) for row in s.execute(query)), key=repr)

        return {
            "blobs": rows(select(m.Blob), lambda r: (r.Blob.sha256, r.Blob.size, r.Blob.archived_at)),
            "mailboxes": rows(select(m.Mailbox), lambda r: (r.Mailbox.name, r.Mailbox.owner)),
            "messages": rows(
                select(m.Message),
                lambda r: (
                    r.Message.fingerprint, r.Message.blob_sha256, r.Message.message_id, r.Message.status,
                    r.Message.subject, r.Message.sender, r.Message.sent_at, r.Message.body_text,
                    r.Message.automated, r.Message.attachments, r.Message.captured_at,
                    thread.get(r.Message.thread_id),
                ),
            ),
            "provenances": rows(
                select(m.Provenance),
                lambda r: (
                    msg[r.Provenance.message_pk], r.Provenance.blob_sha256, r.Provenance.locator,
                    r.Provenance.mailbox, r.Provenance.folder, r.Provenance.uidvalidity, r.Provenance.uid,
                    r.Provenance.path, r.Provenance.seen_at,
                ),
            ),
            "participants": rows(
                select(m.Participant),
                lambda r: (
                    msg[r.Participant.message_pk], r.Participant.role, r.Participant.email,
                    r.Participant.name, contact.get(r.Participant.contact_id),
                    account.get(r.Participant.account_id),
                ),
            ),
            "refs": rows(select(m.MessageRef), lambda r: (msg[r.MessageRef.message_pk], r.MessageRef.ref)),
            "quarantine": rows(select(m.Quarantine), lambda r: (msg[r.Quarantine.message_pk], r.Quarantine.reason)),
            "threads": rows(
                select(m.Thread),
                lambda r: (
                    r.Thread.key, r.Thread.subject, r.Thread.subject_key, r.Thread.first_at,
                    r.Thread.last_at, opp.get(r.Thread.opportunity_id),
                ),
            ),
            "accounts": rows(
                select(m.Account.external_id, m.Account.name, m.AccountDomain.domain).join(
                    m.AccountDomain, isouter=True
                ),
                tuple,
            ),
            "contacts": rows(
                select(m.Contact, m.ContactAddress.email).join(m.ContactAddress, isouter=True),
                lambda r: (
                    r.Contact.external_id, r.Contact.name, r.Contact.owner_rep,
                    account.get(r.Contact.account_id), r.email,
                ),
            ),
            "opportunities": rows(
                select(m.Opportunity),
                lambda r: (
                    r.Opportunity.external_id, account.get(r.Opportunity.account_id), r.Opportunity.name,
                    r.Opportunity.stage, r.Opportunity.stage_raw, r.Opportunity.amount,
                    r.Opportunity.currency, r.Opportunity.owner_rep, r.Opportunity.created_at,
                    r.Opportunity.first_seen_at, r.Opportunity.closed_at, r.Opportunity.outcome,
                ),
            ),
            "reps": rows(
                select(m.Rep),
                lambda r: (r.Rep.email, r.Rep.name, r.Rep.team, r.Rep.active, r.Rep.lead, r.Rep.paused_at),
            ),
            "proposals": rows(
                select(m.Suggestion),
                lambda r: (
                    r.Suggestion.key, r.Suggestion.kind, r.Suggestion.status, r.Suggestion.summary,
                    json.dumps(r.Suggestion.payload, sort_keys=True), r.Suggestion.confidence,
                    json.dumps(r.Suggestion.evidence, sort_keys=True), r.Suggestion.owner_rep,
                    thread.get(r.Suggestion.thread_id),
                ),
            ),
            "decisions": rows(
                select(m.Decision),
                lambda r: (
                    suggestion[r.Decision.suggestion_id], r.Decision.verdict, r.Decision.who, r.Decision.how,
                    r.Decision.at, json.dumps(r.Decision.edits, sort_keys=True), r.Decision.digest_token,
                    r.Decision.event_id,
                ),
            ),
            "applied_events": rows(
                select(m.AppliedEvent), lambda r: (r.AppliedEvent.id, r.AppliedEvent.kind, r.AppliedEvent.digest)
            ),
            "cursors": rows(
                select(m.Mailbox.name, m.FolderState.name, m.FolderState.uidvalidity, m.FolderState.last_uid).join(
                    m.FolderState, m.FolderState.mailbox_id == m.Mailbox.id
                ),
                tuple,
            ),
        }  # fmt: skip


def cli(config: Path, *argv: str) -> None:
    code = main(["-c", str(config), *argv])
    assert code == 0, f"mailsync {' '.join(argv)} exited {code}"


def decided_demo(directory: Path, *extra_mail: Path) -> tuple[Path, Repo]:
    """The demo imported (then each of `extra_mail`, a directory of .eml files), then: a link approved,
    a new opportunity approved with an edit, a contact rejected, a rep's digest paused."""
    repo = import_demo(directory, *extra_mail)
    config = directory / "mailsync.toml"
    with repo.session() as s:
        open_keys = {
            kind: sorted(s.scalars(select(m.Suggestion.key).where(m.Suggestion.kind == kind)))
            for kind in ("link_thread", "new_opportunity", "new_contact")
        }
    assert all(open_keys.values()), open_keys
    cli(config, "approve", open_keys["link_thread"][0])
    cli(config, "approve", open_keys["new_opportunity"][0], "--edit", "amount=12345")
    cli(config, "reject", open_keys["new_contact"][0])
    cli(config, "rep", "pause", "dana@northwind.example")
    return config, repo
