"""What a command loads: `--help` and commands that do not match mail never import spaCy or the pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import DEMO, ROOT, write_config

PROBE = """
import json, sys
from mailsync.cli import main
code = main(sys.argv[1:])
heavy = ("spacy", "sqlalchemy", "mailsync.pipeline", "mailsync.mail.parse_worker", "jinja2")
print(json.dumps({"code": code, "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def loaded_by(*argv: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"]


def test_help_loads_neither_spacy_nor_sqlalchemy_nor_the_pipeline():
    assert loaded_by("--help") == (0, [])


@pytest.mark.slow
def test_commands_that_do_not_match_mail_never_load_spacy(tmp_path):
    config = str(write_config(tmp_path))
    commands = [
        ("config", "check"),
        ("db", "upgrade"),
        ("crm", "import", str(DEMO / "crm")),
        ("status",),
        ("quarantine",),
        ("verify",),
        ("digest", "--preview", str(tmp_path / "preview")),
    ]
    for argv in commands:
        code, loaded = loaded_by("--config", config, *argv)
        assert code == 0, argv
        assert "spacy" not in loaded, argv
        assert "mailsync.pipeline" not in loaded, argv
