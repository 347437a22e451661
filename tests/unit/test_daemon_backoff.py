"""The daemon's backoff for a mailbox that fails for good (bad login): counted in polls, doubling, capped."""

from __future__ import annotations

from config.errors import AuthFailed, ConfigError, SourceError
from mailsync.service.daemon import Failure, _reason


def attempts(polls: int, cap: int) -> list[int]:
    """The polls (0-based) on which the daemon tries a mailbox whose every attempt fails the same way."""
    tried: list[int] = []
    failure: Failure | None = None
    for poll in range(polls):
        if failure is not None and not failure.due():
            continue
        tried.append(poll)
        if failure is None:
            failure = Failure("auth_failed")
        else:
            failure.again(cap)
    return tried


def test_retries_at_the_next_poll_then_doubles_the_wait_up_to_the_cap() -> None:
    assert attempts(40, cap=8) == [0, 1, 3, 7, 15, 23, 31, 39]


def test_a_cap_of_one_poll_retries_every_poll() -> None:
    assert attempts(5, cap=1) == [0, 1, 2, 3, 4]


def test_reasons_are_short_snake_case_class_names() -> None:
    assert _reason(AuthFailed("x")) == "auth_failed"
    assert _reason(SourceError("x")) == "source_error"
    assert _reason(ConfigError("x")) == "config_error"
