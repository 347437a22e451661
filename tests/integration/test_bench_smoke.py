"""`make bench` in small: the capture bench on 300 messages, one round, must fill every row.

Runs the real bench (private Dovecot, PostgreSQL, mbsync, notmuch, mailsync's CLI) as `make bench` does,
into a temporary directory, and checks its JSON: every contestant, peers included, has a positive
time, every compared figure and its peer's are positive, and the report and chart were written. The
bench itself fails when a capture run leaves fewer messages than it was given. No timing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from bench.capture_bench import missing_peer
from bench.mailgen import generate, shape_of
from bench.report import CONTESTANTS
from tests.conftest import ROOT

pytestmark = pytest.mark.integration
MESSAGES = 300


def test_generated_mail_is_distinct_deterministic_and_mixed():
    first = list(generate(MESSAGES, seed=3))
    assert len({hashlib.sha256(raw).digest() for raw in first}) == MESSAGES
    assert first == list(generate(MESSAGES, seed=3))
    assert first != list(generate(MESSAGES, seed=4))
    shapes = Counter(shape_of(raw) for raw in first)
    assert {"plain", "mixed", "alternative"} <= set(shapes), shapes
    assert len(shapes) >= 5, shapes


def test_bench_fills_every_row_peers_included(tmp_path):
    reason = missing_peer()  # mbsync, notmuch, Dovecot, PostgreSQL
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path / "bench.json"
    markdown, chart = tmp_path / "BENCHMARKS.md", tmp_path / "capture.png"
    command = [sys.executable, "-m", "bench.run", "--only", "capture", "--messages", str(MESSAGES)]
    command += ["--runs", "1", "--json", str(out), "--markdown", str(markdown), "--chart", str(chart)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert out.exists(), f"the bench skipped itself: {done.stdout[-2000:]}"
    result = json.loads(out.read_text())

    assert result["messages"] == MESSAGES
    for name in CONTESTANTS:
        runs = result["seconds"].get(name)
        assert runs, f"no row for {name}"
        assert len(runs) == 1
        assert all(s > 0 for s in runs), (name, runs)
    for row in result["rows"]:
        assert row["ours"] > 0, row
        if row["peer"]:
            assert row["peer_value"], row
            assert row["peer_value"] > 0, row
    assert {r["peer"] for r in result["rows"]} >= {"mbsync", "bare fetch", "notmuch new", "mail-parser"}
    assert {r["target"] for r in result["rows"] if r["met"] is not None} == {
        "≥ 1.5× mbsync", "≥ 0.5× bare fetch", "≥ 1× notmuch new", "≥ 1,000 msg/s", "≤ 1 s", "≤ 250 MB", "≤ 0.5×"
    }  # fmt: skip
    assert 0 < result["archive_ratio"] < 2
    assert result["latency"]["p95_s"] >= result["latency"]["p50_s"] > 0
    assert result["latency"]["timeouts"] == 0, "a message appended while idle was never proposed"

    text = markdown.read_text(encoding="utf-8")
    assert "| capture, sync --once --capture-only, PostgreSQL |" in text
    assert "| capture + processing, sync --once, PostgreSQL |" in text
    assert "notmuch new" in text
    assert "capture.png" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_rebuild_bench_writes_its_section(tmp_path):
    """`make bench`'s rebuild part in small: a rebuild into each database, its section in the report."""
    markdown = tmp_path / "BENCHMARKS.md"
    markdown.write_text("# Benchmarks\n\n## Growth\n\nkept\n", encoding="utf-8")
    command = [sys.executable, "-m", "bench.run", "--only", "rebuild", "--rebuild-messages", "40"]
    command += ["--rebuild-contacts", "500", "--rebuild-runs", "1", "--markdown", str(markdown)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    text = markdown.read_text(encoding="utf-8")
    assert "## Growth\n\nkept" in text  # another bench's section stays
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for database in ("SQLite", "PostgreSQL"):  # PostgreSQL skipped would be "PostgreSQL (skipped)"
        assert database in rows, text
        cells = [cell.strip() for cell in rows[database].split("|")[1:-1]]
        assert cells[1] == "40", cells  # every message rebuilt
        assert float(cells[4]) > 0, cells
        assert cells[6] in {"✓", "✗"}, cells
