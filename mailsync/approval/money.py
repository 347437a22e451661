"""Money, dates and counts as the rep reads them, in their locale (Babel's CLDR data).

`$41,650.00` for en_US and `12.500,00 €` for de_DE, not `41650.00 EUR`. Babel puts a no-break space
between a number and its symbol where the locale wants one, so the pair never wraps apart; these
strings are ours, so they must not go through `safe_line`, which would fold that space.
A locale Babel does not know (a typo in reps.csv) falls back to en_US rather than failing a digest.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import structlog
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from babel.numbers import UnknownCurrencyError, format_currency, format_decimal

log = structlog.get_logger()

FALLBACK = "en_US"
_ISO_4217 = re.compile("[A-Z]{3}")


def locale_of(name: str | None) -> Locale:
    """The Babel locale named `name` ("de_DE"), or en_US when it is missing or unknown."""
    try:
        return Locale.parse(name or FALLBACK)
    except (UnknownLocaleError, ValueError, TypeError):
        log.warning("locale_unknown", locale=name, using=FALLBACK)
        return Locale.parse(FALLBACK)


def decimal_of(value: object) -> Decimal | None:
    """An amount as stored in a proposal ("41650.00") or the CRM, or None when it is not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def money(value: object, currency: str | None, locale: Locale) -> str | None:
    """The amount with its currency as the locale writes it; without a currency just the number."""
    amount = decimal_of(value)
    if amount is None:
        return None
    code = (currency or "").strip().upper()
    number = format_decimal(amount, format="#,##0.00", locale=locale)
    if not _ISO_4217.fullmatch(code):
        return number  # no currency, or not a code: the number alone rather than a made-up symbol
    try:
        return format_currency(amount, code, locale=locale)
    except UnknownCurrencyError:
        return f"{number} {code}"


def day(value: date | datetime, locale: Locale) -> str:
    """A date as the locale writes it in full text: "Jan 22, 2026", "22.01.2026"."""
    return format_date(value, format="medium", locale=locale)


def short_day(value: date | datetime, locale: Locale) -> str:
    """Weekday and date without the year, for a subject line: "Mon, Nov 30", "Mo., 30. Nov."."""
    return format_skeleton("MMMEd", value, locale=locale)


def count(value: int, locale: Locale) -> str:
    """A whole number with the locale's grouping: "3,000", "3.000"."""
    return format_decimal(value, locale=locale)
