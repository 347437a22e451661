"""Tombstones of forgotten people, the check the pipeline makes against them, and the database side of
deleting mail (shared by `mailsync forget` and retention).

A tombstone is HMAC-SHA256(key, normalised address), hex: the database and the event log can tell a
forgotten address when they see it again, and never name it. Normalised: trimmed, lower-cased, plus
tag dropped (jo+deals@x is jo@x), as contact addresses are. Two more kinds, for what an address alone
would miss: the person's display names of several words ("name:" + the name, case-folded: mail from
another address of theirs), and each message forget deleted or redacted ("message:" + its identity: a
copy of one that names them only in its text, imported again). The key comes from `[privacy]
tombstone_key_env` / `tombstone_key_file`, else is derived from the link-signing key ([web]
secret_key_*); without either, forget refuses.

The pipeline's one check is `held()`: processing calls it for each parsed message before matching
(mailsync/pipeline/process.py, `_apply`). A message that matches a tombstone (an address in its
headers, Message-IDs or text; a display name; its identity) is set to status "forgotten" and nothing
of it is stored; the purge (mailsync/pipeline/forgetting.py) then deletes or redacts it, blob included,
as forget would. When nobody was ever forgotten, the check is one query per transaction, no key read.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update

from config.errors import ConfigError
from config.settings import SecretRef
from storage import models as m
from storage.records import normalise_email

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from sqlalchemy.orm import Session

    from config.settings import Settings
    from storage.eventlog import Event
    from storage.records import ParsedEmail

FORGOTTEN = "forgotten"  # a message's status while it waits for the purge
_DERIVE = b"mailsync tombstone key v1"
_SESSION_KEY = "mailsync_tombstones"
_KEY_CACHE = "mailsync_tombstone_key"
_CHUNK = 500
_ADDRESS_LIKE = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def normalise(address: str) -> str:
    """As contact addresses are keyed: lower-cased, plus tag dropped (storage/records.py)."""
    return normalise_email(address)


def tombstone_key(settings: Settings) -> bytes:
    """The HMAC key: [privacy]'s, else derived from the link-signing key; ConfigError when neither."""
    privacy = settings.privacy
    if privacy.tombstone_key_env or privacy.tombstone_key_file:
        ref = SecretRef(env=privacy.tombstone_key_env, file=privacy.tombstone_key_file)
        return ref.read("privacy.tombstone_key").encode()
    web = settings.web
    if web.secret_key_env or web.secret_key_file:
        return hmac.new(web.secret_key.read("web.secret_key").encode(), _DERIVE, hashlib.sha256).digest()
    raise ConfigError(
        "no key for forget tombstones: [privacy] tombstone_key_env/_file and [web] secret_key_env/_file "
        "are all unset",
        fix='set [privacy] tombstone_key_env = "VAR" (a long random value in VAR) and keep it: a new key '
        "forgets the tombstones",
    )


def tombstone_of(key: bytes, address: str) -> str:
    return hmac.new(key, normalise(address).encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def normalise_name(name: str) -> str:
    return " ".join(name.casefold().split())


def name_tombstone_of(key: bytes, name: str) -> str:
    """A display name's tombstone (only names of several words get one: see forget)."""
    text = f"name:{normalise_name(name)}"
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def message_tombstone_of(key: bytes, fingerprint: str) -> str:
    """The tombstone of a message forget removed or redacted, by its original identity."""
    return hmac.new(key, f"message:{fingerprint}".encode(), hashlib.sha256).hexdigest()


def add_tombstone(session: Session, digest: str, event_id: str | None) -> bool:
    """Record a tombstone; False when it was there already."""
    if session.get(m.Tombstone, digest) is not None:
        return False
    session.add(m.Tombstone(digest=digest, event_id=event_id))
    session.info.pop(_SESSION_KEY, None)
    return True


def apply_forget_event(session: Session, event: Event) -> None:
    """A "forget" event of the log applied to a database (the forget command's own, or a rebuild's): its
    tombstone recorded, the event marked applied."""
    payload = event.payload
    for stone in (payload["tombstone"], *payload.get("names", ()), *payload.get("messages", ())):
        add_tombstone(session, str(stone), event.id)
    if session.get(m.AppliedEvent, event.id) is None:
        session.add(m.AppliedEvent(id=event.id, kind=event.kind, digest=event.digest))


def all_tombstones(session: Session) -> frozenset[str]:
    """Every tombstone, read once per transaction (there are few)."""
    found = session.info.get(_SESSION_KEY)
    if found is None:
        found = frozenset(session.scalars(select(m.Tombstone.digest)))
        session.info[_SESSION_KEY] = found
    return found


def forgotten(
    session: Session, settings: Settings, addresses: Iterable[str], names: Iterable[str] = ()
) -> set[str]:
    """Which of `addresses` and display `names` (as given) are tombstoned. Reads the key only when
    tombstones exist."""
    stones = all_tombstones(session)
    if not stones:
        return set()
    key = _session_key(session, settings)
    hits = {a for a in addresses if tombstone_of(key, a) in stones}
    return hits | {n for n in names if name_tombstone_of(key, n) in stones}


def _session_key(session: Session, settings: Settings) -> bytes:
    """The key, read once per transaction (a key file is not read for every message)."""
    key = session.info.get(_KEY_CACHE)
    if not isinstance(key, bytes):
        key = tombstone_key(settings)
        session.info[_KEY_CACHE] = key
    return key


def expand(addresses: Iterable[str]) -> set[str]:
    """Each address-like token lower-cased, and each tail of its local part after a dot: git's
    Message-IDs (`<hash.git.jo@x>`) and forwarding tokens embed a person's address so."""
    found: set[str] = set()
    for token in addresses:
        local, _, domain = token.lower().rpartition("@")
        parts = local.split(".")
        found |= {f"{'.'.join(parts[i:])}@{domain}" for i in range(len(parts)) if parts[i]}
    return found


def addresses_of(parsed: ParsedEmail) -> set[str]:
    """Every address a parsed message names: its people, its Message-IDs, and address-like tokens in
    subject and text (each expanded, see expand())."""
    people = [parsed.sender, *parsed.to, *parsed.cc]
    found = {p.email for p in people if p is not None and p.email}
    ids = " ".join((parsed.message_id, parsed.in_reply_to or "", *parsed.references))
    return expand(found | set(_ADDRESS_LIKE.findall(f"{ids}\n{parsed.subject}\n{parsed.body_text}")))


def names_of(parsed: ParsedEmail) -> set[str]:
    """The display names of a parsed message's people."""
    return {p.name for p in (parsed.sender, *parsed.to, *parsed.cc) if p is not None and p.name}


def held(session: Session, settings: Settings, message: m.Message, parsed: ParsedEmail | Exception) -> bool:
    """THE pipeline check: True when `parsed` names a forgotten person (an address, or a display name
    of several words that forget removed) or is a copy of a message forget deleted or redacted (which
    may name them only in its text), after setting `message` aside as "forgotten" (nothing of it
    stored; the purge deletes or redacts it). Call it before matching."""
    stones = all_tombstones(session)
    if isinstance(parsed, Exception) or not stones:
        return False
    again = message_tombstone_of(_session_key(session, settings), message.fingerprint) in stones
    if not again and not forgotten(session, settings, addresses_of(parsed), names_of(parsed)):
        return False
    message.status = FORGOTTEN
    message.message_id = f"{message.fingerprint}@mailsync.invalid"  # a Message-ID may hold the address
    return True


# -- deleting mail ----------------------------------------------------------------------------------


def blobs_of(session: Session, ids: Collection[int]) -> set[str]:
    """Every blob the messages `ids` name (their first copy's and each copy's)."""
    found: set[str] = set()
    wanted = sorted(ids)
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found |= set(session.scalars(select(m.Message.blob_sha256).where(m.Message.id.in_(chunk))))
        found |= set(
            session.scalars(select(m.Provenance.blob_sha256).where(m.Provenance.message_pk.in_(chunk)))
        )
    return found


def unnamed(session: Session, blobs: Iterable[str]) -> set[str]:
    """Which of `blobs` no message and no copy names any more."""
    wanted = set(blobs)
    named = set(session.scalars(select(m.Message.blob_sha256).where(m.Message.blob_sha256.in_(wanted))))
    named |= set(
        session.scalars(select(m.Provenance.blob_sha256).where(m.Provenance.blob_sha256.in_(wanted)))
    )
    return wanted - named


def delete_messages(session: Session, ids: Collection[int]) -> set[str]:
    """Delete messages with their participants, references, copies and quarantine records, threads left
    empty, and the blob rows nobody names any more; returns those blobs, whose FILES the caller deletes
    after the commit (Archive.delete)."""
    if not ids:
        return set()
    blobs = blobs_of(session, ids)
    wanted = sorted(ids)
    threads: set[int] = set()
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        threads |= {
            t for t in session.scalars(select(m.Message.thread_id).where(m.Message.id.in_(chunk))) if t
        }
        for model in (m.Participant, m.MessageRef, m.Provenance, m.Quarantine):
            session.execute(delete(model).where(model.message_pk.in_(chunk)))
        session.execute(delete(m.Message).where(m.Message.id.in_(chunk)))
    session.flush()
    drop_empty_threads(session, threads)
    return drop_blobs(session, blobs)


def drop_blobs(session: Session, blobs: Iterable[str]) -> set[str]:
    """Delete the rows of those `blobs` nobody names any more; returns them (files: the caller's,
    after the commit)."""
    session.flush()
    gone = unnamed(session, blobs)
    if gone:
        session.execute(delete(m.Blob).where(m.Blob.sha256.in_(gone)))
    return gone


def drop_empty_threads(session: Session, threads: Iterable[int]) -> None:
    """Threads with no message left go; their suggestions stay (decided history), unthreaded."""
    for thread_id in sorted(set(threads)):
        left = session.scalar(
            select(func.count()).select_from(m.Message).where(m.Message.thread_id == thread_id)
        )
        if left:
            continue
        session.execute(
            update(m.Suggestion).where(m.Suggestion.thread_id == thread_id).values(thread_id=None)
        )
        session.execute(delete(m.Thread).where(m.Thread.id == thread_id))


def delete_suggestions(session: Session, ids: Collection[int]) -> None:
    """Suggestions and the decisions taken on them."""
    if not ids:
        return
    session.execute(delete(m.Decision).where(m.Decision.suggestion_id.in_(list(ids))))
    session.execute(delete(m.Suggestion).where(m.Suggestion.id.in_(list(ids))))
