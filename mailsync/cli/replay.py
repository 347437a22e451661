"""`mailsync replay` and `mailsync rebuild`: archived mail processed again, and a new database built
from the archive, the provenance journal and the event log; neither touches a mail server."""

from __future__ import annotations

import json
from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from config.errors import ConfigError
from mailsync.cli.app import out, progress, state_of
from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress

    from mailsync.admin.rebuild import Handler

_JSON = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def replay(  # noqa: PLR0917 - typer passes a command's options by name
    ctx: typer.Context,
    mailbox: Annotated[str | None, typer.Option("--mailbox", "-m", help="Only this mailbox's mail.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only mail sent on or after this date (YYYY-MM-DD, UTC).")
    ] = None,
    from_stage: Annotated[
        str,
        typer.Option(
            "--from-stage",
            help="parse: everything, quarantined mail too; thread: re-thread, re-match, re-propose; "
            "match: re-match and re-propose in the same threads.",
        ),
    ] = "parse",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be replayed; change nothing.")
    ] = False,
    as_json: _JSON = False,
) -> None:
    """Process archived mail again (after a change of rules, CRM or model); no server is touched.
    Killed, it resumes where it stopped when run again with the same options."""
    from mailsync.admin.replay import STAGES, Selection
    from mailsync.admin.replay import replay as run_replay
    from mailsync.mail.parse_worker import configured_pool
    from mailsync.pipeline.ingest import Pipeline
    from storage.archive import open_store

    if from_stage not in STAGES:
        raise ConfigError(
            f"--from-stage {from_stage!r} is not a stage", fix=f"use one of {', '.join(STAGES)}"
        )
    state = state_of(ctx)
    settings = state.settings()
    if mailbox is not None:
        settings.mailbox(mailbox)  # ConfigError naming the mailboxes when it is not one
    selection = Selection(mailbox, _date(since), from_stage)
    with configured_pool(settings) as parser, progress() as bar:
        pipeline = Pipeline(settings, state.repo(), open_store(settings), parser, one_shot=True)
        report = run_replay(
            pipeline,
            selection,
            dry_run=dry_run,
            on_queue=_task(bar, "queuing messages"),
            on_drain=_task(bar, "processing"),
        )
    if as_json:
        out.print(json.dumps(report.as_json(), ensure_ascii=True, indent=2), highlight=False)
        return
    what = " ".join(
        part
        for part in (
            f"mailbox {safe_line(mailbox)}" if mailbox else "every mailbox",
            f"since {since}" if since else "",
            f"from {from_stage}",
        )
        if part
    )
    if dry_run:
        out.print(f"dry run: {report.selected} message(s) would be replayed ({what}); nothing changed.")
        return
    table = Table(title=f"replay: {what}{' (resumed)' if report.resumed else ''}")
    for column in ("", "before", "after"):
        table.add_column(column, justify="left" if not column else "right")
    for key in sorted(set(report.before) | set(report.after)):
        table.add_row(key.replace("_", " "), str(report.before.get(key, 0)), str(report.after.get(key, 0)))
    out.print(table)
    out.print(
        f"{report.requeued} queued again, {report.processed} processed "
        f"({report.quarantined} quarantined) in {report.seconds:.1f} s."
    )


def rebuild(
    ctx: typer.Context,
    into: Annotated[
        str,
        typer.Option(
            "--into", help="A NEW database URL to build (sqlite:///path or postgresql+psycopg://...)."
        ),
    ],
    as_json: _JSON = False,
) -> None:
    """Build a new database from the archive, the provenance journal and the event log alone."""
    from mailsync.admin.rebuild import rebuild as run_rebuild
    from mailsync.mail.parse_worker import configured_pool
    from storage.repo import Repo

    state = state_of(ctx)
    settings = state.settings()
    target = Repo(into)
    try:
        with configured_pool(settings) as parser, progress() as bar:
            parser.warm()
            report = run_rebuild(
                settings,
                target,
                parser,
                handlers=event_handlers(),
                on_copies=_task(bar, "reading the journal"),
                on_drain=_task(bar, "processing"),
            )
    finally:
        target.dispose()
    if as_json:
        out.print(json.dumps(report.as_json(), ensure_ascii=True, indent=2), highlight=False)
        return
    table = Table(title=f"rebuild into {safe_line(report.target)}")
    table.add_column("")
    table.add_column("count", justify="right")
    rows = [
        ("journal copies read", report.copies),
        ("copies skipped: blob gone from the archive", report.blobs_gone),
        ("messages", report.messages),
        ("copies (provenances)", report.provenances),
        ("folder cursors", report.cursors),
        ("messages processed", report.processed),
        ("quarantined", report.quarantined),
        *((f"events: {safe_line(kind)}", n) for kind, n in sorted(report.events.items())),
        *(
            (f"events NOT applied (unknown kind): {safe_line(kind)}", n)
            for kind, n in sorted(report.unknown_events.items())
        ),
        ("decisions refused (decided before)", report.decisions_refused),
        ("decisions without their proposal", report.decisions_orphaned),
    ]
    for label, count in rows:
        table.add_row(label, str(count))
    out.print(table)
    out.print(
        f"{report.messages} messages in {report.seconds:.1f} s ({report.messages_per_second} messages/s)."
    )
    if report.unknown_events:
        out.print("Some events are of a kind this version cannot apply: upgrade mailsync and rebuild again.")


def event_handlers() -> dict[str, Handler]:
    """Every kind of event a rebuild applies: mailsync/admin/rebuild.py's, and (one line a kind) those
    mailsync/approval applies, which admin may not import."""
    from mailsync.admin.rebuild import HANDLERS, deferred, in_session
    from mailsync.approval.decisions import KIND as DECISION
    from mailsync.approval.decisions import apply_decision_events
    from mailsync.approval.reps import apply_rep_event

    return {
        **HANDLERS,
        DECISION: deferred(apply_decision_events),  # its proposal may come with later mail
        "rep_paused": in_session(apply_rep_event),
        "rep_resumed": in_session(apply_rep_event),
        "rep_deactivated": in_session(apply_rep_event),
        "rep_activated": in_session(apply_rep_event),
    }


def _date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {value!r} is not a date", fix="write it as YYYY-MM-DD") from None


def _task(bar: Progress, description: str) -> Callable[[int, int], None]:
    """A progress task made when first advanced (a phase that never runs shows no bar)."""
    made: list[object] = []

    def advance(done: int, total: int) -> None:
        if not made:
            made.append(bar.add_task(description, total=total))
        bar.update(made[0], completed=done, total=total)  # type: ignore[arg-type]

    return advance
