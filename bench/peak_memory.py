"""Run a command and report its wall time and the peak memory of its whole process tree.

    python -m bench.peak_memory [--exclude dovecot,postgres] -- .venv/bin/pytest -q

Every 0.2 s the proportional set size (PSS, from /proc/PID/smaps_rollup: shared pages counted once
across the tree) of the command and all its descendants is summed; the peak of that sum is printed
with the processes that made it up. Servers the tests start (Dovecot, PostgreSQL) are left out by
name, as the budget in issue [6/11] is for pytest and its children. Linux only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"


def _tree(root: int, excluded: tuple[str, ...]) -> list[int]:
    children = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if any(word in _name(pid) for word in excluded):
            continue  # a server and everything it forked
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class PeakPss:
    """Samples the summed PSS of a process tree in a thread until stopped; `peak_mb`, `at_peak`."""

    def __init__(self, root: int, excluded: tuple[str, ...] = ("dovecot", "postgres"), every: float = 0.2):
        self.root, self.excluded, self.every = root, excluded, every
        self.peak_kb, self.at_peak = 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = {pid: _pss_kb(pid) for pid in _tree(self.root, self.excluded)}
            total = sum(sizes.values())
            if total > self.peak_kb:
                self.peak_kb = total
                top = sorted(sizes.items(), key=lambda item: -item[1])[:6]
                self.at_peak = "; ".join(f"{kb / 1024:.0f} MB {_command(pid)}" for pid, kb in top)
            self._stop.wait(self.every)

    def stop(self) -> float:
        """Stop sampling; the peak, MB."""
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--exclude", default="dovecot,postgres", help="process names left out, with their subtrees"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [c for c in args.command if c != "--"] if args.command[:1] == ["--"] else args.command
    excluded = tuple(w for w in args.exclude.split(",") if w)
    began = time.monotonic()
    child = subprocess.Popen(command)  # the user's own command line
    sampler = PeakPss(child.pid, excluded)
    child.wait()
    peak = sampler.stop()
    wall = time.monotonic() - began
    print(
        f"exit {child.returncode}; wall {wall:.0f} s; peak PSS of the tree {peak:.0f} MB ({sampler.at_peak})"
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
