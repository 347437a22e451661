"""Real mail nobody on the team wrote: every file archived, then parsed or quarantined; threads hold.
On SQLite and on PostgreSQL (some of the real messages hold NUL bytes, which PostgreSQL text cannot)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.importer import import_source
from storage import models as m

OWNER = "dana@northwind.example"

pytestmark = pytest.mark.both_dbs


@pytest.mark.slow
def test_every_corpus_file_is_archived_then_parsed_or_quarantined(corpora, repo, pipeline):
    source = FileSource(corpora, "dana")
    assert len(source) > 600
    counts = import_source(pipeline, source, OWNER)
    assert counts["failed"] == 0
    with repo.session() as s:
        seen = {
            path.split("#")[0]: (status, sha)
            for path, status, sha in s.execute(
                select(m.Provenance.path, m.Message.status, m.Provenance.blob_sha256).join(
                    m.Message, m.Message.id == m.Provenance.message_pk
                )
            )
        }
        reasons = Counter(r.split(":")[0] for r in s.scalars(select(m.Quarantine.reason)))
        parsed = s.scalar(select(func.count()).select_from(m.Message).where(m.Message.status == "parsed"))
    for _folder, path in source.units:
        key = str(path).split(":2,")[0]
        assert key in seen, f"{path} left no trace"
        status, sha = seen[key]
        assert status in {"parsed", "quarantined"}
        assert pipeline.archive.path_for(sha).exists()
    assert parsed > 500
    assert sum(reasons.values()) == counts["quarantined"]
    assert all(reason for reason in reasons)


def thread_sizes(repo):
    with repo.session() as s:
        return sorted(
            s.scalars(
                select(func.count())
                .select_from(m.Message)
                .where(m.Message.thread_id.is_not(None))
                .group_by(m.Message.thread_id)
            )
        )


def test_ghost_root_siblings_share_one_thread(corpora, repo, pipeline):
    # Two conversations: a real root with five descendants (one also citing a missing id), and a
    # ticket whose replies share only a missing root <RT-Ticket-...> with each other.
    import_source(pipeline, FileSource(corpora / "threading/notmuch/threading/ghost-root", "dana"), OWNER)
    assert thread_sizes(repo) == [3, 6]


def test_parents_found_whatever_the_arrival_order(corpora, repo, pipeline):
    source = FileSource(corpora / "threading/notmuch/threading/parent-priority", "dana")
    source.units.reverse()  # children first: the late root must still join them
    import_source(pipeline, source, OWNER)
    assert thread_sizes(repo) == [3]


def test_duplicate_message_ids_with_other_bytes_stay_apart_or_together_by_content(corpora, repo, pipeline):
    counts = import_source(pipeline, FileSource(corpora / "threading/notmuch/duplicate", "dana"), OWNER)
    assert counts["new"] + counts["copy"] == 9
    with repo.session() as s:
        ids = Counter(s.scalars(select(m.Message.message_id)))
    assert max(ids.values()) >= 2  # same Message-ID, different content: kept as distinct messages
