"""A command that exits when done freezes its CRM snapshot out of the cycle collector's passes (they
scanned the whole CRM again and again while it processed); the daemon, which replaces the snapshot on
every CRM change, does not, so an old snapshot's reference cycles stay collectable. Real SQLite, the
demo CRM, the real parse worker."""

from __future__ import annotations

import gc

import pytest

from mailsync.admin.crm_import import import_crm
from mailsync.pipeline.ingest import Pipeline
from storage.archive import open_store
from tests.conftest import DEMO


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # what a test froze goes back to the collector


@pytest.mark.parametrize("one_shot", [True, False])
def test_only_a_one_shot_pipeline_freezes_its_crm(one_shot, settings, repo, parse_worker, unfrozen):
    import_crm(settings, repo, [DEMO / "crm"], {})
    pipeline = Pipeline(settings, repo, open_store(settings), parse_worker, one_shot=one_shot)
    pipeline.refresh_crm()
    assert pipeline.crm.contacts_by_email
    tracked = {id(obj) for obj in gc.get_objects()}  # the permanent generation is not among them
    assert (id(pipeline.crm.contacts_by_email) not in tracked) is one_shot
    assert (gc.get_freeze_count() > 0) is one_shot
