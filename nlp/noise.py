"""Machine mail: newsletters, auto-replies, bounces and notifications never become deals."""

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
    if _AUTO_SUBJECT.match(parsed.subject):
        return "automatic subject"
    return None
