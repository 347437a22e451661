"""Import from files: every message of a FileSource through the pipeline, counted."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import structlog

from config.errors import CaptureError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailsync.mail.sources.files import FileSource
    from mailsync.pipeline.ingest import Pipeline

log = structlog.get_logger()


def import_source(
    pipeline: Pipeline, source: FileSource, owner: str, advance: Callable[[], None] | None = None
) -> Counter[str]:
    """Ingest everything in `source`; a message that fails is logged and counted, the rest go on."""
    counts: Counter[str] = Counter()
    for folder, path in source.units:
        try:
            for raw in source.read(folder, path):
                try:
                    counts[pipeline.ingest(raw, owner).outcome] += 1
                except CaptureError as exc:
                    counts["failed"] += 1
                    log.error("message_failed", locator=raw.provenance.locator, error=str(exc), fix=exc.fix)
        except CaptureError as exc:
            counts["failed"] += 1
            log.error("file_failed", path=str(path), error=str(exc), fix=exc.fix)
        if advance:
            advance()
    return counts
