"""A stop that cannot hang: once SIGTERM is in, the daemon has a grace period to wind down.

Stopping waits for the running polls to finish their batch, then closes the web server and the parse
workers. Should any of that block (a server that never answers, a worker that never dies), the process
would hang until a service manager kills it, with nothing said. Nothing is lost by leaving early
(a capture batch commits whole or not at all, processing resumes from the queue), so after the grace
period the watchdog logs where every thread stood and ends the process itself.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger()
STOP_GRACE = 20.0  # seconds from the stop request to a forced exit


def watch_stop(
    finished: threading.Event, grace: float = STOP_GRACE, exit_process: Callable[[int], object] = os._exit
) -> threading.Thread:
    """Start the watchdog: unless `finished` is set within `grace` seconds, log the threads' stacks
    (`stop_overdue`) and end the process with status 0, the stop having been asked for."""

    def watch() -> None:
        if finished.wait(grace):
            return
        frames = sys._current_frames()  # noqa: SLF001 - the one way to see where each thread stands
        stacks = {
            thread.name: "".join(traceback.format_stack(frame))
            for thread in threading.enumerate()
            if thread.ident is not None and (frame := frames.get(thread.ident)) is not None
        }
        log.error(
            "stop_overdue",
            waited_seconds=grace,
            threads=stacks,
            fix="nothing is lost (batches commit whole); report this log so the blocking step is fixed",
        )
        exit_process(0)

    thread = threading.Thread(target=watch, name="stop watchdog", daemon=True)
    thread.start()
    return thread
