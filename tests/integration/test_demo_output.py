"""`make demo` as a new user sees it off a terminal (CI, a pipe): tables and lines, no log stream in between."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import DEMO, ROOT

MAILSYNC = [sys.executable, "-c", "from mailsync.cli import run; run()"]


def test_the_demo_commands_print_no_log_lines_into_their_output(tmp_path):
    demo = tmp_path / "demo"
    shutil.copytree(DEMO, demo)  # its mailsync.toml writes var/ beside itself
    config = str(demo / "mailsync.toml")
    lines = []
    for argv in (
        ("db", "upgrade"),
        ("crm", "import", str(demo / "crm")),
        ("import", str(demo / "Maildir"), "--mailbox", "dana"),
        ("digest", "--preview", str(tmp_path / "preview")),
        ("status",),
    ):
        done = subprocess.run(
            [*MAILSYNC, "--config", config, *argv],
            capture_output=True, text=True, cwd=ROOT, check=False, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, (argv, done.stderr)
        lines += (done.stdout + done.stderr).splitlines()
    assert any("quarantined (kept in archive)" in line for line in lines)  # the junk file, in the table
    for line in lines:
        assert not line.lstrip().startswith("{"), line
        assert "message_quarantined" not in line, line  # counted in the table, not logged at the user
    # A log stream is still there when asked for.
    done = subprocess.run(
        [*MAILSYNC, "--config", config, "--log-json", "-v", "status"],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0
    assert all(json.loads(line) for line in done.stderr.splitlines())
