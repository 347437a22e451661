"""Capture commands: `mailsync import` from files, `mailsync sync --once` and the `mailsync run` service."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from config.errors import CaptureError, ConfigError
from mailsync.cli.app import State, err, labelled, out, progress, state_of
from mailsync.mail.display import safe_line, safe_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mailsync.pipeline.ingest import Pipeline


@contextmanager
def _pipeline(state: State) -> Iterator[Pipeline]:
    """The pipeline over the configured database and archive, with its parse workers closed at the end.
    They start with the first batch captured (in the background), so a pass with nothing new never
    starts them, and a pass with mail has them ready when its processing begins."""
    from mailsync.mail.parse_worker import configured_pool
    from mailsync.pipeline.ingest import Pipeline
    from storage.archive import open_store

    settings = state.settings()
    with configured_pool(settings) as parser:
        yield Pipeline(settings, state.repo(), open_store(settings), parser, one_shot=True)


@contextmanager
def _starting() -> Iterator[None]:
    """A one-shot command's start-up (its imports: SQLAlchemy, the models, pydantic; its settings)
    without the cycle collector, whose passes over the fast-growing heap cost ~0.05 s there. What the
    start-up built lives as long as the process: it is frozen out of later collections, so neither a
    later pass nor the one at exit scans it again (that exit took ~0.15 s of a `sync --once` with
    nothing new). No collection first: it would cost ~0.05 s and find a few dozen objects to free."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def import_mail(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(help="A Maildir, an mbox file, an .eml file, or a directory of them.")
    ],
    mailbox: Annotated[
        str, typer.Option("--mailbox", "-m", help="The configured mailbox these messages belong to.")
    ],
) -> None:
    """Import mail from files: archive, parse, thread, match and propose, like a sync."""
    # No mailbox lease: an import moves no cursor, and a message a daemon captures at the same time is
    # stored once either way (storage/leases.py).
    from mailsync.mail.sources.files import FileSource
    from mailsync.pipeline.importer import import_source

    state = state_of(ctx)
    settings = state.settings()
    owner = settings.mailbox(mailbox).owner
    source = FileSource(path, mailbox)
    with _pipeline(state) as pipeline, progress() as bar:
        task = bar.add_task(f"importing {safe_line(path.name)}", total=len(source))
        counts = import_source(pipeline, source, owner, lambda: bar.advance(task))
    table = Table(title=f"import {path} -> mailbox {mailbox}")
    table.add_column("outcome")
    table.add_column("messages", justify="right")
    labels = {"new": "new messages", "copy": "new copies of known messages", "known": "already imported",
              "quarantined": "quarantined (kept in archive)", "failed": "failed (see log)"}  # fmt: skip
    for key, label in labels.items():
        table.add_row(label, str(counts.get(key, 0)))
    out.print(table)
    if counts.get("quarantined"):
        out.print("`mailsync quarantine` lists quarantined messages with their reasons.")
    if counts.get("failed"):
        raise typer.Exit(1)


def run_daemon(ctx: typer.Context) -> None:
    """Run the capture daemon: poll every IMAP mailbox, IDLE between polls, serve /healthz and /metrics."""
    from mailsync.mail.parse_worker import configured_pool
    from mailsync.pipeline.ingest import Pipeline
    from mailsync.service.daemon import Daemon
    from mailsync.service.metrics import Metrics
    from storage.archive import open_store

    state = state_of(ctx)
    settings = state.settings()
    if not any(m.host for m in settings.mailboxes):
        raise ConfigError(
            "no IMAP mailbox configured (every [[mailboxes]] entry lacks host)",
            fix="add host, username and password_env to a mailbox",
        )
    parser = configured_pool(settings)
    parser.warm()  # warm before the first message
    pipeline = Pipeline(settings, state.repo(), open_store(settings), parser)
    pipeline.refresh_crm()  # at start: a missing spaCy model or database fails here, not per message
    raise typer.Exit(Daemon(settings, pipeline, Metrics(m.name for m in settings.mailboxes)).run())


def sync_once(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over every folder, then exit (for cron).")
    ] = False,
    mailbox: Annotated[str | None, typer.Option("--mailbox", "-m", help="Only this mailbox.")] = None,
    capture_only: Annotated[
        bool,
        typer.Option(
            "--capture-only",
            help="Archive and record what is new, and leave processing (threads, matches, proposals) to "
            "the next sync or `mailsync run`: a first backfill at the server's pace. `mailsync status` "
            "shows the backlog.",
        ),
    ] = False,
) -> None:
    """Sync IMAP mailboxes once: fetch what is new in each folder, archive and process it. A mailbox
    another process (a `mailsync run`) is syncing now is skipped with a note: that process captures it."""
    if not once:
        raise ConfigError(
            "`mailsync sync` needs --once; the long-running service is `mailsync run`",
            fix="mailsync sync --once",
        )
    with _starting():
        from mailsync.mail.sources.imap import ImapSource
        from mailsync.pipeline.active import skip_inactive
        from mailsync.pipeline.sync import sync_mailbox
        from storage import mailstore
        from storage.leases import MAILBOX, holder_id, holder_of, one_pass

        state = state_of(ctx)
        settings = state.settings()
    targets = [settings.mailbox(mailbox)] if mailbox else [m for m in settings.mailboxes if m.host]
    table = Table(title="sync")
    for column in ("mailbox", "folder", "fetched", "new", "known", "quarantined", "gone on server", "note"):
        table.add_column(column)
    failed = 0
    holder = holder_id()  # this run in the lease table, beside the daemons (storage/leases.py)
    lease_seconds = settings.daemon.lease_seconds
    with _pipeline(state) as pipeline, progress() as bar:

        def track(folder: str, total: int) -> Callable[[], None]:
            task = bar.add_task(safe_line(folder), total=total)
            return lambda: bar.advance(task)

        for target in targets:
            if skip_inactive(pipeline.repo, target):
                table.add_row(target.name, "", "", "", "", "", "", "owner inactive (departed): not polled")
                continue
            try:
                with one_pass(pipeline.repo, target.name, holder, lease_seconds) as lease:
                    if lease is None:  # a daemon, or another run, syncs it now: nothing is missed
                        with pipeline.repo.session() as session:
                            other = holder_of(session, MAILBOX + target.name) or "gone since"
                        note = f"skipped: another process ({other}) is syncing it"
                        err.print(labelled(f"{target.name}:", "yellow", note), highlight=False)
                        table.add_row(target.name, "", "", "", "", "", "", safe_text(note))
                        continue
                    with ImapSource.configured(target, settings) as source:
                        results = sync_mailbox(
                            target, pipeline, source, progress=track, process=not capture_only
                        )
            except CaptureError as exc:
                failed += 1
                err.print(labelled(f"{target.name}:", "red", exc), highlight=False)
                if exc.fix:
                    err.print(f"  fix: {safe_text(exc.fix)}", highlight=False)
                continue
            for r in results:
                note = "UIDVALIDITY changed: resynced" if r.resynced else ""
                table.add_row(target.name, safe_text(r.folder), str(r.fetched), str(r.outcomes.get("new", 0)),
                              str(r.outcomes.get("known", 0) + r.outcomes.get("copy", 0)),
                              str(r.outcomes.get("quarantined", 0)), str(r.gone), note)  # fmt: skip
    out.print(table)
    if capture_only:
        with state.repo().session() as session:
            waiting = mailstore.backlog(session)
        note = f"{waiting} messages wait for processing: the next `mailsync sync --once` or `mailsync run`"
        out.print(f"{note} processes them", markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)
