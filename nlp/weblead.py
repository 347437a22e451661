"""A web-form lead that a colleague forwards internally: a deal that starts inside our own mail.

Website forms arrive at a shared queue (leads@, noreply@) and reach the rep as an internal forward,
inline or as an attached message, so the thread has no outside participant and would be dropped as
internal talk. What makes it a lead is the form itself: a block of "Field: value" lines with an e-mail
field at an outside address, and usually the time it was submitted. The deal starts then, not when
the colleague forwarded it. Field names are matched as families (EN/DE/FR/ES), not one form's labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from nlp.match import is_internal

# The value runs to the end of the line and is stripped in Python: a lazy value before trailing blanks
# backtracks quadratically on a line of hostile whitespace.
_FIELD = r"^[ \t>]*(?:{names})[ \t]*:(?P<value>[^\n]*)$"


def _field(*names: str) -> re.Pattern[str]:
    return re.compile(_FIELD.format(names="|".join(names)), re.IGNORECASE | re.MULTILINE)


def _value(found: re.Match[str] | None) -> str:
    return found.group("value").strip() if found else ""


EMAIL_FIELD = _field(
    r"e-?mail(?:[- ]adresse)?", r"courriel", r"adresse e-?mail", r"correo(?: electr[oó]nico)?"
)
SUBMITTED_FIELD = _field(
    r"submitted(?: on| at)?",
    r"date(?: submitted| of submission| de soumission| d'envoi| de la demande)?",
    r"sent",
    r"received",
    r"eingegangen(?: am)?",
    r"(?:eingangs|absende)datum",
    r"gesendet(?: am)?",
    r"datum",
    r"fecha(?: de env[ií]o| de recepci[oó]n| de la solicitud)?",
    r"enviado(?: el)?",
)
COMPANY_FIELD = _field(
    r"company",
    r"organi[sz]ation",
    r"soci[ée]t[ée]",
    r"[ée]tablissement",
    r"entreprise",
    r"firma",
    r"unternehmen",
    r"einrichtung",
    r"empresa",
    r"organismo",
)
# The message may start on the field's line or on the next one.
MESSAGE_FIELD = _field(
    r"message",
    r"votre\s+message",
    r"nachricht",
    r"mitteilung",
    r"anliegen",
    r"mensaje",
    r"comentarios?",
)
NAME_FIELD = _field(r"name", r"full\s+name", r"nom", r"nombre", r"vorname\s+und\s+name")
# "Demande reçue le 14.09.2026", "Submitted on 14/09/2026": a date without a field colon.
SUBMITTED_WORDS = re.compile(
    r"(?:submitted|received|sent|reçue?|envoyée?|eingegangen|gesendet|recibid[oa]|enviad[oa])\s+"
    r"(?:on|le|am|el)\s+(?P<value>[^\n]{0,40})",
    re.IGNORECASE,
)
FORM_WORDS = re.compile(
    r"(?<!\w)(?:form(?:ular(?:io|e)?)?|web(?:site)?|enquiry|inquiry|anfrage|demande|solicitud|lead)(?!\w)",
    re.IGNORECASE,
)
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMERIC_DATE = re.compile(r"(?P<a>\d{1,4})[./-](?P<b>\d{1,2})[./-](?P<c>\d{2,4})")
_MIN_FIELDS = 2  # an e-mail line alone is a signature; a form has more fields


@dataclass(frozen=True, slots=True)
class WebLead:
    email: str
    company: str | None
    submitted: date | None
    message: str  # what the person wrote in the form (the deal's evidence)
    name: str | None = None


def find_lead(body: str, internal_domains: frozenset[str]) -> WebLead | None:
    """The form in a forwarded body, when it names someone outside the company; None otherwise."""
    if not FORM_WORDS.search(body):
        return None
    email = next((e for e in _form_addresses(body) if not is_internal(e, internal_domains)), None)
    if email is None:
        return None
    fields = sum(1 for p in (SUBMITTED_FIELD, COMPANY_FIELD, MESSAGE_FIELD) if p.search(body))
    if fields < _MIN_FIELDS:
        return None
    message = MESSAGE_FIELD.search(body)
    return WebLead(
        email=email,
        company=_value(COMPANY_FIELD.search(body))[:200] or None,
        submitted=_submitted(body),
        message=_message_text(body, message.start("value")) if message else "",
        name=_value(NAME_FIELD.search(body))[:200] or None,
    )


def _form_addresses(body: str) -> list[str]:
    """The addresses of every e-mail field, in order (a forwarder's signature may come first)."""
    found = (_ADDRESS.search(m.group("value")) for m in EMAIL_FIELD.finditer(body))
    return [a.group(0).lower().rstrip(".") for a in found if a is not None]


def _submitted(body: str) -> date | None:
    for found in (*SUBMITTED_FIELD.finditer(body), *SUBMITTED_WORDS.finditer(body)):
        day = _numeric_date(found.group("value"))
        if day is not None:
            return day
    return None


def _numeric_date(text: str) -> date | None:
    """dd/mm/yyyy, dd.mm.yyyy or yyyy-mm-dd; forms outside the US write day first."""
    found = _NUMERIC_DATE.search(text)
    if found is None:
        return None
    a, b, c = (int(found.group(k)) for k in "abc")
    year, month, day = (a, b, c) if a > 31 else (c + 2000 if c < 100 else c, b, a)  # noqa: PLR2004 - a day is ≤ 31
    try:
        return date(year, month, day)
    except ValueError:
        return None


_NEXT_FIELD = re.compile(r"^\s*[\w ./'-]{2,40}:(?:\s|$)")


def _message_text(body: str, start: int) -> str:
    """The message field and its continuation lines, up to the next field or a blank line."""
    lines: list[str] = []
    for index, line in enumerate(body[start:].splitlines()):
        if index and (_NEXT_FIELD.match(line) or (not line.strip() and lines)):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)[:1000]
