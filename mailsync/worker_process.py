"""Helper processes: a new interpreter running `python -m MODULE ARGS...` on one end of a socket pair.

Not a fork of a threaded daemon (a lock another thread held at the fork stays held in the child), and
not a multiprocessing start method, which would also start its resource tracker: a process more, ~7 MB,
for nothing. The child finds the socket's fd in its first argument; this module stays import-light
(the parse and stage workers import it).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection


def spawn(module: str, *args: str) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start `module` as a worker; its process and this side's Connection (the child's fd is argv[1])."""
    ours, theirs = socket.socketpair()
    with theirs:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module, str(theirs.fileno()), *args],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},  # where this process found us
        )
    return process, Connection(ours.detach())


def stop(process: subprocess.Popen[bytes], *, grace: float = 0.0) -> None:
    """End a worker whose Connection this side has closed: it may finish what it holds for `grace`
    seconds (it exits on the end of its input), then it is killed."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
