"""`mailsync ARGV` in a fresh interpreter, reporting what it loaded: what the start-up tests read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import gc, json, subprocess, sys
started = []
class Recorded(subprocess.Popen):
    def __init__(self, args, *rest, **options):
        started.append([str(a) for a in args] if isinstance(args, list) else [str(args)])
        super().__init__(args, *rest, **options)
subprocess.Popen = Recorded
from mailsync.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules), "frozen": gc.get_freeze_count(),
                  "collecting": gc.isenabled(), "children": started}))
"""


def probe(*argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Its exit code ("code"), the modules it loaded ("modules"), the number of objects frozen out of
    the cycle collector ("frozen"), whether the collector is on at the end ("collecting") and the
    command lines of the processes it started ("children")."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
