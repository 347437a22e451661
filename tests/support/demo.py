"""The bundled demo, imported the way `make demo` does it, into a directory of the test's own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.settings import load_settings
from mailsync.cli import main
from storage.repo import Repo
from tests.conftest import DEMO, write_config

if TYPE_CHECKING:
    from pathlib import Path


def import_demo(directory: Path, *extra_mail: Path) -> Repo:
    """`db upgrade`, `crm import` and `import` of the demo Maildir (then of each of `extra_mail`, a
    directory of .eml files) as mailbox dana; the migrated, filled database."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory)
    commands = [
        ["db", "upgrade"],
        ["crm", "import", str(DEMO / "crm")],
        ["import", str(DEMO / "Maildir"), "--mailbox", "dana"],
    ]
    commands += [["import", str(path), "--mailbox", "dana"] for path in extra_mail]
    for argv in commands:
        code = main(["-c", str(config), *argv])
        if code != 0:
            raise AssertionError(f"mailsync {' '.join(argv)} exited {code}")
    return Repo(load_settings(config).database_url)


def imported_demo(base: Path, database_url: str | None = None) -> Path:
    """The demo through the real pipeline into `base`: the `var/` directory each test copies (with the
    database unless it is `database_url`)."""
    config = str(write_config(base, database_url=database_url))
    for argv in (["db", "upgrade"], ["crm", "import", str(DEMO / "crm")],
                 ["import", str(DEMO / "Maildir"), "--mailbox", "dana"]):  # fmt: skip
        assert main(["-c", config, *argv]) == 0
    return base / "var"
