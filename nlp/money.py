"""Amounts of money as people write them: "$48,000", "EUR 12.5k", "48k USD", "12.500,00 €"."""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

_SYMBOL = {"$": "USD", "€": "EUR", "£": "GBP", "us$": "USD"}
_CODE = r"(?:USD|EUR|GBP|CHF|CAD|AUD|SEK|NOK|DKK|MXN)"
_NUMBER = r"\d{1,3}(?:[.,' ]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_SCALE = r"\s?(?:k|K|m|M|mio\.?|Mio\.?|million|thousand|tsd\.?|mil)?\b"
_AMOUNT = re.compile(
    rf"""(?:(?P<cur1>US\$|[$€£]|{_CODE})\s?(?P<num1>{_NUMBER})(?P<scale1>{_SCALE})
        |(?P<num2>{_NUMBER})(?P<scale2>{_SCALE})\s?(?P<cur2>[€£$]|{_CODE})(?![A-Za-z]))""",
    re.VERBOSE,
)
# Every amount has its currency, as a symbol or a code: a text with neither has none (most mail).
_CURRENCY = re.compile(rf"[$€£]|{_CODE}")
_CACHE = 4096  # texts; a thread's messages are read again on every arrival
_THOUSANDS = 3  # digits after a lone separator that make it a thousands separator
_MULTIPLIER = {
    "k": 1_000,
    "thousand": 1_000,
    "tsd": 1_000,
    "m": 1_000_000,
    "mio": 1_000_000,
    "million": 1_000_000,
}


def _number(text: str) -> Decimal | None:
    text = text.replace(" ", "").replace("'", "")
    if "," in text and "." in text:  # the later separator is the decimal one
        decimal_sep = "," if text.rfind(",") > text.rfind(".") else "."
        thousands = "." if decimal_sep == "," else ","
        text = text.replace(thousands, "").replace(decimal_sep, ".")
    elif "," in text or "." in text:
        sep = "," if "," in text else "."
        head, _, tail = text.rpartition(sep)
        # one separator followed by exactly three digits is a thousands separator: 30.000 / 48,000
        text = text.replace(sep, "") if len(tail) == _THOUSANDS else head.replace(sep, "") + "." + tail
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def find_amounts(text: str) -> list[tuple[Decimal, str, str]]:
    """Every (amount, ISO currency, matched text) in `text`, in order."""
    return list(_find_amounts(text))


@functools.lru_cache(maxsize=_CACHE)
def _find_amounts(text: str) -> tuple[tuple[Decimal, str, str], ...]:
    if _CURRENCY.search(text) is None:
        return ()
    found = []
    for hit in _AMOUNT.finditer(text):
        currency = hit.group("cur1") or hit.group("cur2") or ""
        number = hit.group("num1") or hit.group("num2") or ""
        scale = (hit.group("scale1") or hit.group("scale2") or "").strip().lower().rstrip(".")
        value = _number(number)
        if value is None:
            continue
        value *= _MULTIPLIER.get(scale, 1)
        found.append(
            (
                value.quantize(Decimal("0.01")),
                _SYMBOL.get(currency.lower(), currency.upper()),
                hit.group(0).strip(),
            )
        )
    return tuple(found)


def forget() -> None:
    """Drop the readings kept by text (a benchmark times cold reading: nlp/signals.py forget)."""
    _find_amounts.cache_clear()
