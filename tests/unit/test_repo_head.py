"""The fast schema check trusts a naming rule: each migration file `NNNN_name.py` has revision NNNN."""

from __future__ import annotations

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from config.errors import StorageError
from storage.repo import MIGRATIONS, Repo, shipped_head


def test_the_newest_file_is_alembics_head_and_every_revision_is_its_file_number():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert shipped_head() == scripts.get_current_head()
    for revision in scripts.walk_revisions():
        assert revision.path is not None
        assert revision.path.rpartition("/")[2].startswith(f"{revision.revision}_")


def test_a_current_schema_passes_and_a_stale_one_names_the_fix(tmp_path):
    repo = Repo(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        repo.upgrade()
        repo.require_current_schema()  # current: no error
        with repo.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
        with pytest.raises(StorageError) as raised:
            repo.require_current_schema()
        assert "mailsync db upgrade" in (raised.value.fix or "")
    finally:
        repo.dispose()
