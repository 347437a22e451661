"""The processing stage's cache of stored matches (followups.MatchCache): a hit only for the same
message fields and the same CRM snapshot, a miss (a fresh match) otherwise, and never more than its size."""

from __future__ import annotations

from datetime import datetime

from config.settings import ParseLimits
from mailsync.mail.parse import parse_message
from mailsync.pipeline.followups import MatchCache, stored_match
from nlp.match import match_message
from storage import mailstore
from storage import models as m
from storage.mailstore import StoredPerson
from storage.records import AccountRef, CrmSnapshot

SENT = datetime(2026, 3, 2, 9, 0)  # noqa: DTZ001 - naive UTC, as stored


def _message(pk: int, body: str = "Can you send the pricing for 40 seats?") -> m.Message:
    return m.Message(
        id=pk, fingerprint=f"f{pk}", subject="Pricing", body_text=body, sent_at=SENT, attachments=["q.pdf"]
    )


def _people(email: str = "rachel@acme.example") -> list[m.Participant]:
    return [m.Participant(role="from", email=email, name="Rachel Kim")]


def test_a_hit_is_the_same_match_a_fresh_one_would_be():
    crm = CrmSnapshot()
    cache = MatchCache()
    first = cache.match(_message(1), _people(), crm)
    assert cache.match(_message(1), _people(), crm) is first
    assert first == stored_match(_message(1), _people(), crm)


def test_changed_fields_or_another_snapshot_match_afresh():
    crm = CrmSnapshot()
    cache = MatchCache()
    first = cache.match(_message(1), _people(), crm)
    redacted = cache.match(_message(1, body="[redacted]"), _people(), crm)
    assert redacted is not first
    assert redacted.body == "[redacted]"
    assert cache.match(_message(1), _people("tom@acme.example"), crm).participants[0].address.email == (
        "tom@acme.example"
    )
    acme = AccountRef(id=7, name="Acme")
    loaded = CrmSnapshot(accounts={7: acme}, accounts_by_domain={"acme.example": acme})
    again = cache.match(_message(1), _people(), loaded)
    assert again.participants[0].account == acme


def test_the_cache_keeps_at_most_its_size():
    crm = CrmSnapshot()
    cache = MatchCache(size=2)
    first = cache.match(_message(1), _people(), crm)
    cache.match(_message(2), _people(), crm)
    cache.match(_message(3), _people(), crm)
    assert len(cache._entries) == 2
    assert cache.match(_message(1), _people(), crm) is not first


def test_a_message_just_parsed_is_kept_as_its_stored_fields_match():
    """Processing keeps the match it made of a parsed message (MatchCache.remember), so its thread's view
    does not match it again: it must be the match of what was stored (the date as stored, naive UTC;
    the address normalised), and a stored value that differs (made safe for the database) matches anew."""
    raw = (
        b"From: Rachel Kim <Rachel+crm@ACME.example>\r\nTo: dana@northwind.example\r\n"
        b"Date: Mon, 2 Mar 2026 10:00:00 +0100\r\nSubject: Pricing\r\nMessage-ID: <p1@acme.example>\r\n"
        b"\r\nCan you send the pricing for 40 seats?\r\n-- \r\nRachel Kim, Acme\r\n"
    )
    parsed = parse_message(raw, fingerprint="f1", archive_key="k", limits=ParseLimits())
    acme = AccountRef(id=7, name="Acme")
    crm = CrmSnapshot(accounts={7: acme}, accounts_by_domain={"acme.example": acme})
    match = match_message(parsed, crm, None)
    message, rows = m.Message(id=1, fingerprint="f1"), []
    mailstore.fill_parsed(None, message, parsed, match, people=rows)  # type: ignore[arg-type] - no session
    stored = [StoredPerson(row["role"], row["name"], row["email"]) for row in rows]
    cache = MatchCache()
    cache.remember(message, match, crm)
    kept = cache._entries[1][1]
    assert cache.match(message, stored, crm) is kept
    assert kept == stored_match(message, stored, crm)
    assert kept.sent_at == SENT.replace(hour=9)
    safe = [stored[0]._replace(name="Rachel Kim?"), *stored[1:]]
    assert cache.match(message, safe, crm) == stored_match(message, safe, crm) != kept
