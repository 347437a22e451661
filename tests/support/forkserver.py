"""Run the `mailsync` CLI as forks of one process that has already imported it, for crash tests.

A fresh `mailsync` process spends ~3 s importing (spaCy, SQLAlchemy, pydantic) before it touches
anything; a test that SIGKILLs and restarts it fifty times spends most of its time there. A
ForkServer is a helper process that imports `mailsync.cli` once and then forks one child per command.
The child takes the command's environment, working directory and log file as its own and calls
`mailsync.cli.run()`, the console-script entry point, so from there on it is the real CLI in a real
process of its own: its own parse worker, database connections and IMAP session, killed by a real
SIGKILL. Only the imports are shared (plus the regular expressions spaCy's tokeniser compiles, in
`re`'s cache), and importing writes nothing a crash could damage.

`mailsync.faults` reads MAILSYNC_TEST_FAULT at import; the child calls `faults.reload()` after taking
its environment, so fault points work as in a fresh process.

The test talks to the server over its stdin/stdout, one line each way:

    start {"args": [...], "env": {...}, "cwd": "...", "log": "..."}  ->  <pid>
    poll <pid>                                                       ->  running | <exit code>

Exit codes are as subprocess reports them (-9 for SIGKILL). The server reaps a child only when polled,
so a pid the test has not seen exit cannot have been reused: killing it is always safe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
_SERVE = "from tests.support.forkserver import serve; serve()"
_POLL_INTERVAL = 0.005


class ForkServer:
    """The helper process; `start()` runs one CLI command in a forked child and returns its handle."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_with_root(os.environ if env is None else env),
            cwd=ROOT,
            text=True,
        )
        self._children: list[ForkedProcess] = []

    def _ask(self, line: str) -> str:
        stdin, stdout = self._proc.stdin, self._proc.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(line + "\n")
        stdin.flush()
        reply = stdout.readline()
        if not reply:
            raise RuntimeError(f"fork server exited ({self._proc.wait()}) on {line[:80]!r}")
        return reply.strip()

    def start(self, args: list[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> ForkedProcess:
        """Run `mailsync ARGS` in a new child with exactly `env`, in `cwd`, stdout and stderr to `log`."""
        request = {"args": args, "env": _with_root(env), "cwd": str(cwd), "log": str(log)}
        child = ForkedProcess(self, int(self._ask("start " + json.dumps(request))))
        self._children.append(child)
        return child

    def run(self, args: list[str], *, env: Mapping[str, str], cwd: Path, log: Path, timeout: float) -> int:
        """Run a command to its end; its exit code."""
        return self.start(args, env=env, cwd=cwd, log=log).wait(timeout)

    def close(self) -> None:
        """Kill the children still running (a test that failed half-way), then stop the server."""
        for child in self._children if self._proc.poll() is None else ():
            if child.poll() is None:
                child.kill()
                child.wait(timeout=10)
        if self._proc.stdin is not None:
            self._proc.stdin.close()  # the server exits at end of input
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _with_root(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the project root on PYTHONPATH, as `python -c` needs to import mailsync."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}


class ForkedProcess:
    """A child of the fork server, with the parts of subprocess.Popen's interface the tests use."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            reply = self.server._ask(f"poll {self.pid}")
            if reply != "running":
                self.returncode = int(reply)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["mailsync", f"pid {self.pid}"], timeout or 0.0)
            time.sleep(_POLL_INTERVAL)
        return code

    def send_signal(self, sig: int) -> None:
        # Not yet reaped by the server (returncode None): the pid is still this child, maybe a zombie.
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# -- the server side ---------------------------------------------------------------------------


def serve() -> None:
    """The fork server's loop (run as `python -c`, so a parse worker's spawn imports no __main__)."""
    import spacy  # noqa: PLC0415

    # The point: every child inherits these imports. The CLI imports its machinery only when a command
    # runs (so --help stays fast); what `sync --once` needs is imported here instead.
    import mailsync.cli  # noqa: PLC0415
    import mailsync.mail.parse_worker  # noqa: PLC0415
    import mailsync.mail.sources.imap  # noqa: PLC0415
    import mailsync.pipeline.ingest  # noqa: PLC0415
    import mailsync.pipeline.sync  # noqa: F401, PLC0415

    # The first spacy.blank() in a process spends ~0.2 s compiling the tokeniser's regular expressions;
    # re caches them, so a child's PhraseIndex builds in half the time. Nothing else is kept.
    spacy.blank("en")

    reply: IO[str] = sys.stdout
    exited: dict[int, int] = {}
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "start":
            request = json.loads(argument)
            reply.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)  # runs the CLI; ends with SystemExit, never returns here
            answer = str(pid)
        elif command == "poll":
            pid = int(argument)
            if pid not in exited:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited[pid] = os.waitstatus_to_exitcode(status)
            answer = str(exited[pid]) if pid in exited else "running"
        else:
            answer = f"error: unknown command {command!r}"
        print(answer, file=reply, flush=True)


def _child(request: dict[str, object]) -> None:
    from mailsync import cli, faults  # noqa: PLC0415 - imported by serve() already

    log = os.open(str(request["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # never the server's pipes: the child must not read or write the protocol
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.chdir(str(request["cwd"]))
    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    faults.reload()
    args = request["args"]
    assert isinstance(args, list)
    sys.argv = ["mailsync", *args]
    cli.run()  # sys.exit(main()): unwinds out of serve() and exits this process like the console script
