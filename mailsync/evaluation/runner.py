"""The evaluation run, the I/O edge: a throwaway workspace, the real pipeline over the set, then scoring."""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from config.errors import ConfigError
from config.settings import load_settings
from mailsync.admin.crm_import import import_crm
from mailsync.evaluation.labels import load_labels, read_mail_files
from mailsync.evaluation.observe import observe
from mailsync.evaluation.scoring import evaluate_observed
from mailsync.mail.parse_worker import ParseWorker
from mailsync.mail.sources.files import FileSource
from mailsync.pipeline.followups import flag_unanswered
from mailsync.pipeline.importer import import_source
from mailsync.pipeline.ingest import Pipeline
from storage.archive import open_store
from storage.repo import Repo

if TYPE_CHECKING:
    from mailsync.evaluation.labels import Labels
    from mailsync.evaluation.scoring import Evaluation

MAILBOX = "eval"
NOW_AFTER_LAST = timedelta(days=1)  # the evaluation's "now": the latest Date in the set plus this


def _write_config(directory: Path, labels: Labels) -> Path:
    path = directory / "mailsync.toml"
    path.write_text(
        'database_url = "sqlite:///var/eval.db"\narchive_dir = "var/archive"\nevents_dir = "var/events"\n'
        f"internal_domains = {json.dumps(list(labels.internal_domains))}\n\n"
        f'[[mailboxes]]\nname = "{MAILBOX}"\nowner = {json.dumps(labels.mailbox_owner)}\n',
        encoding="utf-8",
    )
    return path


def run_evaluation(set_dir: Path, order: Literal["slug", "date"] = "slug") -> Evaluation:
    """Import the labelled set into a throwaway workspace through the real pipeline, then score it."""
    started = time.monotonic()
    labels = load_labels(set_dir / "labels.json")
    files = read_mail_files(set_dir / "mail")
    if order == "date":
        files = sorted(files, key=lambda f: (f.sent_at, f.slug, f.path.name))
    with tempfile.TemporaryDirectory(prefix="mailsync-eval-") as tmp:
        workspace = Path(tmp)
        settings = load_settings(_write_config(workspace, labels))
        for name in ("database_url", "archive_dir", "events_dir"):
            if tmp not in str(getattr(settings, name)):
                raise ConfigError(
                    f"{name} is overridden by the environment, away from the eval workspace",
                    fix=f"unset MAILSYNC_{name.upper()} for the evaluation",
                )
        repo = Repo(settings.database_url)
        try:
            repo.upgrade()
            crm = import_crm(settings, repo, [set_dir / "crm"], {})
            ingest: Counter[str] = Counter()
            with ParseWorker(settings.limits) as parser:
                pipeline = Pipeline(settings, repo, open_store(settings), parser)
                pipeline.refresh_crm()
                for f in files:
                    ingest += import_source(pipeline, FileSource(f.path, MAILBOX), labels.mailbox_owner)
                now = max((f.sent_at for f in files if f.sent_at.year < date.max.year), default=None)
                if now is not None:
                    flag_unanswered(repo, pipeline.crm, settings.matching, now + NOW_AFTER_LAST)
            seen = observe(repo, {str(f.path): f.message_id for f in files})
        finally:
            repo.dispose()
    evaluation = evaluate_observed(labels, files, seen)
    evaluation.problems[:0] = [f"CRM import: {e}" for e in crm.files.errors]
    evaluation.ingest = dict(ingest)
    evaluation.seconds = time.monotonic() - started
    return evaluation
