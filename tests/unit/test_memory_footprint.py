"""What a parse worker process loads (issue 14: the memory of a sync with a 50k-contact CRM), and what
spaCy brings into the process that matches mail.

A worker imports the module of its target (mailsync.mail.parse_worker) and unpickles its arguments.
It used to import structlog with that module and pydantic with the settings model of its limits:
~10 MB in every worker that parsing never uses. Now the module is light and the limits travel as a
plain tuple, and the limits the worker enforces are still the configured ones.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from config.errors import ParseError
from config.settings import ParseLimits
from mailsync.mail.parse_worker import ParseWorker, WorkerLimits

ROOT = Path(__file__).resolve().parents[2]
MAIL = (
    b"From: Ann <ann@acme.example>\r\nTo: bob@northwind.example\r\nSubject: rollout\r\n"
    b"Message-ID: <m1@acme.example>\r\nDate: Tue, 3 Mar 2026 10:00:00 +0000\r\n\r\nHello Bob\r\n"
)


def test_the_worker_module_imports_neither_structlog_nor_pydantic() -> None:
    code = (
        "import sys, mailsync.mail.parse_worker\n"
        "print(sorted(m for m in ('structlog', 'pydantic', 'config.settings') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_the_console_script_loads_no_command_line_until_it_runs() -> None:
    """Spawning a worker imports the parent's main script again: for the `mailsync` console script that
    is its entry point's module, which must not bring typer, rich or the settings into every worker."""
    (script,) = entry_points(group="console_scripts", name="mailsync")
    code = (
        f"import sys, {script.module}\n"
        "print(sorted(m for m in ('typer', 'rich', 'config.settings', 'mailsync.cli') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_matching_loads_spacy_without_its_command_line() -> None:
    """spaCy's package imports its CLI (weasel, httpx: ~15 MB); nlp/__init__.py keeps it out, and
    spacy.info() and spacy.cli still work when asked for."""
    code = (
        "import sys, nlp.pipeline, nlp.phrases, spacy\n"
        "print(sorted(m for m in ('weasel', 'httpx', 'spacy.cli') if m in sys.modules))\n"
        "print([t.text for t in spacy.blank('en')('Hello Bob')])\n"
        "print(spacy.info(silent=True)['spacy_version'] == spacy.__version__, 'weasel' in sys.modules)\n"
        "from spacy.cli.info import info\n"
        "print(info is not spacy.info)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.splitlines() == ["[]", "['Hello', 'Bob']", "True True", "True"]


def test_the_limits_a_worker_gets_pickle_without_the_settings_model() -> None:
    limits = ParseLimits(max_header_lines=12, max_body_chars=1500)
    plain = WorkerLimits.of(limits)
    assert b"config.settings" not in pickle.dumps(plain)
    assert {name: getattr(plain, name) for name in WorkerLimits._fields} == {
        name: getattr(limits, name) for name in WorkerLimits._fields
    }


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")
def test_a_running_worker_has_not_loaded_pydantic() -> None:
    with ParseWorker(ParseLimits()) as worker:
        parsed = worker.parse(MAIL, fingerprint="f1", archive_key="k1")
        assert worker._process is not None
        maps = Path(f"/proc/{worker._process.pid}/maps").read_text()
    assert parsed.subject == "rollout"
    assert "pydantic_core" not in maps  # pydantic's compiled core: mapped once pydantic is imported


def test_a_worker_enforces_the_configured_limits() -> None:
    many_headers = b"".join(b"X-Extra-%d: v\r\n" % i for i in range(20)) + MAIL
    with ParseWorker(ParseLimits(max_header_lines=15, max_body_chars=1000)) as worker:
        with pytest.raises(ParseError, match="too many header lines: 25 > limit 15"):
            worker.parse(many_headers, fingerprint="f2", archive_key="k2")
        long_body = MAIL.replace(b"Hello Bob", b"word " * 400)
        parsed = worker.parse(long_body, fingerprint="f3", archive_key="k3")
    assert len(parsed.body_text) == 1000
