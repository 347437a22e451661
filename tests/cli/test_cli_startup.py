"""What a command loads: `--help` and commands that do not match mail never import spaCy or the pipeline."""

from __future__ import annotations

import pytest

from tests.conftest import DEMO, write_config
from tests.support.probe import probe

HEAVY = ("spacy", "sqlalchemy", "mailsync.pipeline", "mailsync.mail.parse_worker", "jinja2")


def loaded_by(*argv: str) -> tuple[int, list[str]]:
    result = probe(*argv)
    return result["code"], [name for name in HEAVY if name in result["modules"]]


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
