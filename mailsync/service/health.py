"""The daemon's health rule: when /healthz answers 200 and when 503 (pure, with the clock passed in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

STALE_AFTER_POLLS = 3  # a mailbox is unhealthy once its last success is older than this many poll intervals


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The outcome of the health rule: `ok`, and one line per check ("ok" or why not)."""

    ok: bool
    checks: dict[str, str]


def evaluate_health(
    now: float,
    db_ok: bool,
    last_success: dict[str, float | None],
    poll_interval: float,
    started_at: float,
    *,
    failing: Mapping[str, str] | None = None,
) -> HealthReport:
    """Apply the health rule at Unix time `now`.

    Unhealthy when the database is unreachable, when a mailbox fails for a reason that will not pass by
    itself (`failing` maps it to a short reason, e.g. `auth_failed`: unhealthy at once, until it syncs
    again), or when a mailbox's last success is more than STALE_AFTER_POLLS poll intervals old. A mailbox
    that has never succeeded is unhealthy only once the daemon has been up for more than that long (a
    fresh start is not an outage). Keys of `last_success` are config mailbox names; they become check
    names `mailbox:<name>`.
    """
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be positive, got {poll_interval}")
    limit = STALE_AFTER_POLLS * poll_interval
    failing = failing or {}
    checks = {"database": "ok" if db_ok else "unreachable"}
    ok = db_ok
    for mailbox, success in sorted(last_success.items()):
        key = f"mailbox:{mailbox}"
        if mailbox in failing:
            checks[key] = f"failing: {failing[mailbox]}"
            ok = False
        elif success is None:
            uptime = now - started_at
            if uptime > limit:
                checks[key] = f"never succeeded in {uptime:.0f}s (limit {limit:.0f}s)"
                ok = False
            else:
                checks[key] = "ok: waiting for the first sync"
        elif now - success > limit:
            checks[key] = f"stale: last success {now - success:.0f}s ago (limit {limit:.0f}s)"
            ok = False
        else:
            checks[key] = "ok"
    return HealthReport(ok=ok, checks=checks)
