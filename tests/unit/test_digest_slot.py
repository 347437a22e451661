"""When a rep's digest is due and which period it belongs to: their local date and send time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.errors import ConfigError
from config.settings import DigestSettings
from mailsync.approval.send import Recipient, slot

BERLIN = DigestSettings(send_at="07:30", timezone="Europe/Berlin")


def rep(timezone: str | None = None, digest_at: str | None = None) -> Recipient:
    return Recipient("dana@northwind.example", "Dana", timezone, digest_at, None, active=True, paused=False)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-03-10T06:29:00", ("2026-03-10", False)),  # 07:29 in Berlin (UTC+1)
        ("2026-03-10T06:30:00", ("2026-03-10", True)),  # 07:30: the slot
        ("2026-03-10T22:59:00", ("2026-03-10", True)),  # 23:59: still that day's period
        ("2026-03-10T23:00:00", ("2026-03-11", False)),  # midnight in Berlin: the next period, not due
        ("2026-07-10T05:30:00", ("2026-07-10", True)),  # summer time (UTC+2): 07:30 local
    ],
)
def test_the_config_default_time_and_zone(now, expected):
    assert slot(rep(), BERLIN, at(now)) == expected


def test_the_reps_own_zone_and_time_override_the_default():
    new_york = rep("America/New_York", "06:00")
    assert slot(new_york, BERLIN, at("2026-03-10T09:59:00")) == ("2026-03-10", False)  # 05:59 EDT
    assert slot(new_york, BERLIN, at("2026-03-10T10:00:00")) == ("2026-03-10", True)
    # 02:00 UTC is still the evening before in New York: yesterday's period, long due.
    assert slot(new_york, BERLIN, at("2026-03-10T02:00:00")) == ("2026-03-09", True)


def test_a_slot_in_the_hour_that_summer_time_skips_is_due_once_the_clock_passes_it():
    # Berlin skips 02:00-03:00 on 2026-03-29: a 02:30 slot is due from 03:00 local on.
    early = rep(digest_at="02:30")
    assert slot(early, BERLIN, at("2026-03-29T00:59:00")) == ("2026-03-29", False)  # 01:59 CET
    assert slot(early, BERLIN, at("2026-03-29T01:00:00")) == ("2026-03-29", True)  # 03:00 CEST


def test_a_bad_zone_or_time_on_one_rep_is_a_config_error_naming_them():
    with pytest.raises(ConfigError, match=r"dana@northwind\.example.*Mars/Olympus") as caught:
        slot(rep("Mars/Olympus"), BERLIN, at("2026-03-10T12:00:00"))
    assert "reps.csv" in (caught.value.fix or "")
    with pytest.raises(ConfigError, match="25:00"):
        slot(rep(digest_at="25:00"), BERLIN, at("2026-03-10T12:00:00"))
