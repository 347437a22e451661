"""Machine mail: newsletters, auto-replies, bounces and notifications never become deals.

Calendar mail is told apart rather than dropped: a message carrying a calendar part (text/calendar,
an .ics file) gets a reason starting "calendar:" (invite, accepted, declined, cancelled). The reason is
stored with the message, so the propose stage can count a customer's invite as a meeting on the
thread while an internal invite, or one sent by a calendar service, stays noise.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.records import ParsedEmail

_ROBOT_SENDER = re.compile(
    r"^(?:no-?reply|do-?not-?reply|mailer-daemon|postmaster|notifications?|newsletter|news|bounces?|"
    r"calendar-notification|alerts?|updates?|marketing|info-?mail)[^@]*@",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:automatic\s+reply|auto(?:matische)?\s*(?:reply|antwort)|out\s+of\s+(?:the\s+)?office|"
    r"abwesenheitsnotiz|respuesta\s+autom[aá]tica|fuera\s+de\s+la\s+oficina|réponse\s+automatique|"
    r"undeliverable|undelivered\s+mail|delivery\s+status\s+notification|mail\s+delivery\s+(?:failed|failure)|"
    r"returned\s+mail|unzustellbar|invitation:|updated\s+invitation:|accepted:|declined:|einladung:|invitación:)",
    re.IGNORECASE,
)


_CALENDAR_TYPES = frozenset({"text/calendar", "application/ics", "text/x-vcalendar", "application/x-ics"})
_CALENDAR_FILE = re.compile(r"\.(?:ics|vcs)$", re.IGNORECASE)
_CALENDAR_REPLY = (
    (
        "accepted",
        re.compile(r"^\s*(?:accepted|akzeptiert|zugesagt|angenommen|aceptad[oa])\s*:", re.IGNORECASE),
    ),
    ("declined", re.compile(r"^\s*(?:declined|abgelehnt|rechazad[oa])\s*:", re.IGNORECASE)),
    ("tentative", re.compile(r"^\s*(?:tentative|mit\s+vorbehalt|vorläufig|provisional)\s*:", re.IGNORECASE)),
    ("cancelled", re.compile(r"^\s*(?:cancel+ed|canceled\s+event|abgesagt|cancelad[oa])\s*:", re.IGNORECASE)),
)


def calendar_kind(parsed: ParsedEmail) -> str | None:
    """invite | accepted | declined | tentative | cancelled for a message with a calendar part, else None."""
    if not any(
        a.content_type.lower() in _CALENDAR_TYPES or _CALENDAR_FILE.search(a.filename)
        for a in parsed.attachments
    ):
        return None
    return next((kind for kind, prefix in _CALENDAR_REPLY if prefix.match(parsed.subject)), "invite")


def automated_reason(parsed: ParsedEmail) -> str | None:
    """Why `parsed` is machine-sent (one short reason), or None for a person's mail."""
    if parsed.auto_submitted and parsed.auto_submitted.split(";")[0].strip().lower() != "no":
        return f"auto-submitted: {parsed.auto_submitted.split(';')[0].strip().lower()}"
    if parsed.list_id:
        return "mailing list"
    if parsed.precedence in {"bulk", "list", "junk", "auto_reply"}:
        return f"precedence: {parsed.precedence}"
    if parsed.content_type in {"multipart/report", "message/delivery-status"}:
        return "delivery report"
    if parsed.sender and _ROBOT_SENDER.match(parsed.sender.email):
        return "robot sender"
    calendar = calendar_kind(parsed)
    if calendar is not None:
        return f"calendar: {calendar}"
    if _AUTO_SUBJECT.match(parsed.subject):
        return "automatic subject"
    return None
