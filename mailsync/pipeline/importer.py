"""Import from files: every message of a FileSource captured a batch at a time, then processed, counted."""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from typing import TYPE_CHECKING

import structlog

from config.errors import CaptureError
from mailsync.pipeline.forgetting import purge_held
from mailsync.pipeline.staging import staged_ahead

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mailsync.mail.sources.files import FileSource
    from mailsync.pipeline.ingest import Pipeline
    from mailsync.pipeline.staging import Ticket
    from storage.records import RawMessage

log = structlog.get_logger()
BATCH_MESSAGES = 200
BATCH_BYTES = 8 * 1024 * 1024


def import_source(
    pipeline: Pipeline, source: FileSource, owner: str, advance: Callable[[], None] | None = None
) -> Counter[str]:
    """Capture everything in `source`, then process it; a message or file that fails is logged and
    counted, the rest go on. Counts: new (processed), copy, known, quarantined, failed. The stage
    workers hash and write each batch while the one before it is recorded, as sync does."""
    counts: Counter[str] = Counter()
    new: list[int] = []

    def batches() -> Iterator[list[RawMessage]]:
        batch: list[RawMessage] = []
        size = 0
        for folder, path in source.units:
            try:
                for raw in source.read(folder, path):
                    batch.append(raw)
                    size += raw.size
                    if len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES:
                        yield batch
                        batch, size = [], 0
            except CaptureError as exc:
                counts["failed"] += 1
                log.error("file_failed", path=str(path), error=str(exc), fix=exc.fix)
            if advance:
                advance()
        if batch:
            yield batch

    with closing(staged_ahead(batches(), pipeline.prepare)) as staged:
        for batch, ticket in staged:
            _capture(pipeline, batch, owner, counts, new, ticket)
    pipeline.end_capture()  # the stage workers hold no memory while the mail is processed
    processed = pipeline.drain()
    purge_held(pipeline)  # mail that names a forgotten person: deleted or redacted, as forget does
    quarantined = sum(processed.get(message_id) == "quarantined" for message_id in new)
    counts["new"] -= quarantined
    counts["quarantined"] += quarantined
    return +counts


def _capture(  # noqa: PLR0917 - import_source's state, passed on
    pipeline: Pipeline,
    batch: list[RawMessage],
    owner: str,
    counts: Counter[str],
    new: list[int],
    ticket: Ticket | None = None,
) -> None:
    """One batch; when it fails as a whole (the archive's disk is full, say), each message on its own,
    so that only those that fail are counted failed."""
    try:
        captured = pipeline.capture(batch, owner, ticket=ticket)
    except CaptureError as exc:
        if len(batch) > 1:
            for raw in batch:
                _capture(pipeline, [raw], owner, counts, new)
            return
        counts["failed"] += 1
        log.error("message_failed", locator=batch[0].provenance.locator, error=str(exc), fix=exc.fix)
        return
    for item in captured:
        counts[item.outcome] += 1
        if item.outcome == "new" and item.message_pk is not None:
            new.append(item.message_pk)
