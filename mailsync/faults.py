"""Named fault-injection points for tests: a real SIGKILL (or an in-process hook) at a chosen point.

A test sets the environment variable `MAILSYNC_TEST_FAULT` of a `mailsync` subprocess to `name` (fire
the first time the point is reached) or `name:N` (fire the Nth time, counted in this process). When a
point fires, the process kills itself with SIGKILL: no `finally`, no commit, no flush, exactly like
the OOM killer or a power cut of the process. Without the variable every `point()` is one comparison.

The points, in the order a batch of messages meets them (capture, then processing):

    after_fetch     pipeline/capture.py  a RawMessage came from IMAP, nothing of it written yet
    after_archive   pipeline/capture.py  its blob is written (not yet synced), the database knows nothing
    before_cursor   pipeline/capture.py  the batch synced, its rows and folder cursor written, not committed
    during_match    pipeline/process.py  in a processing batch's transaction, before a message's match stage
    during_thread   pipeline/process.py  inside it, before the message's thread is assigned
    before_commit   pipeline/process.py  the processing batch's work is done, the commit has not happened
    after_commit    pipeline/process.py  the processing batch is committed, the caller has not heard of it
    after_sync      service/daemon.py    a sync pass is over, INBOX is not yet selected again to wait for mail
    before_idle     service/daemon.py    INBOX is selected and holds nothing unsynced, IDLE is not yet sent

and the one a digest meets:

    after_smtp      approval/send.py   the relay accepted the digest, its row is not yet marked `sent`

Test-only: production never sets the variable. The variable is read once, at import (and again by
`reload()`, which a test harness that forks already-imported processes calls in each child).

A test that runs mailsync in its own process can instead hook a point: inside `with faults.on(name,
callback):` every time the point is reached, in whatever thread, `callback()` runs there (to make the
world change at exactly that moment, e.g. mail arriving between a sync pass and IDLE).
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ENV = "MAILSYNC_TEST_FAULT"
POINTS = frozenset(
    {
        "after_fetch",
        "after_archive",
        "during_match",
        "during_thread",
        "before_commit",
        "after_commit",
        "before_cursor",
        "after_sync",
        "before_idle",
        "after_smtp",
    }
)


def _parse(value: str) -> tuple[str | None, int]:
    if not value:
        return None, 0
    name, _, nth = value.partition(":")
    if name not in POINTS:
        msg = f"{ENV}={value!r}: unknown point {name!r} (known: {', '.join(sorted(POINTS))})"
        raise ValueError(msg)
    count = int(nth) if nth else 1
    if count < 1:
        msg = f"{ENV}={value!r}: N must be 1 or more"
        raise ValueError(msg)
    return name, count


_ARMED, _FIRE_AT = _parse(os.environ.get(ENV, "").strip())
_reached = 0
_hooks: dict[str, Callable[[], object]] = {}
# Every name that does something: point() is one membership test while nothing is armed.
_watched: frozenset[str] = frozenset()


def _rewatch() -> None:
    global _watched  # noqa: PLW0603 - replaced whole, so point() in another thread sees old or new
    _watched = frozenset(_hooks) | ({_ARMED} if _ARMED else frozenset())


_rewatch()


def reload() -> None:
    """Read `MAILSYNC_TEST_FAULT` again and reset the count (tests/support/forkserver.py forks children)."""
    global _ARMED, _FIRE_AT, _reached  # noqa: PLW0603 - the same per-process state as at import
    _ARMED, _FIRE_AT = _parse(os.environ.get(ENV, "").strip())
    _reached = 0
    _rewatch()


@contextlib.contextmanager
def on(name: str, callback: Callable[[], object]) -> Iterator[None]:
    """Test-only: call `callback()` each time point `name` is reached, while the with-block runs."""
    if name not in POINTS:
        msg = f"unknown fault point {name!r} (known: {', '.join(sorted(POINTS))})"
        raise ValueError(msg)
    if name in _hooks:
        msg = f"fault point {name!r} is already hooked"
        raise RuntimeError(msg)
    _hooks[name] = callback
    _rewatch()
    try:
        yield
    finally:
        del _hooks[name]
        _rewatch()


def point(name: str) -> None:
    """Run the test hook on this point, if any; SIGKILL this process if `MAILSYNC_TEST_FAULT` names it
    and its count is due."""
    global _reached  # noqa: PLW0603 - one counter per process is the contract
    if name not in _watched:
        return
    hook = _hooks.get(name)
    if hook is not None:
        hook()
    if name != _ARMED:
        return
    _reached += 1
    if _reached >= _FIRE_AT:
        os.kill(os.getpid(), signal.SIGKILL)
