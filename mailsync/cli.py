"""The command line: each command loads Settings, builds the objects and hands over; no logic here."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from config.errors import CaptureError, ConfigError
from config.settings import Settings, config_path, load_settings
from mailsync.crm_import import import_crm
from mailsync.digest import render_digest
from mailsync.display import safe_line, safe_text
from mailsync.importer import import_source
from mailsync.logs import configure_logging, wants_json
from mailsync.parse_worker import ParseWorker
from mailsync.pipeline import Pipeline
from mailsync.sources.files import FileSource
from storage import models as m
from storage.archive import Archive
from storage.mailstore import open_suggestions
from storage.repo import Repo

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailsync.repair import RepairResult

app = typer.Typer(
    help="mailsync: capture a sales team's mail into its CRM. Archives every message, threads and "
    "matches it to contacts, accounts and deals, and proposes what is missing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
crm_app = typer.Typer(help="CRM data: accounts, contacts, opportunities and reps.", no_args_is_help=True)
config_app = typer.Typer(help="The configuration file and environment.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(crm_app, name="crm")
app.add_typer(config_app, name="config")

_UNWRAPPED_WIDTH = 10_000  # off a terminal: wide enough that no table is squeezed, no line broken


class _Console(Console):
    """A rich Console for text from outside (mail, IMAP servers, CSV files, paths).

    Markup and emoji codes are off, so `[link=javascript:...]` or `:x:` in a CSV value or a folder name
    prints as written; our own styles are Text styles, never markup. Off a terminal (logs, pipes, CI)
    nothing is wrapped or squeezed: each line is whole, whatever the path length or COLUMNS says.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, markup=False, emoji=False, soft_wrap=True)

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(_UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:  # Console's size is settable; stays so
        self._width, self._height = new_size


out = _Console()
err = _Console(stderr=True)


def _labelled(label: str, style: str, text: object) -> Text:
    """`label` in `style`, then text from outside as written, minus control and invisible characters."""
    return Text.assemble((label, style), " ", safe_text(str(text)))


@dataclass
class State:
    config: Path | None
    log_json: bool
    verbose: bool
    _settings: Settings | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
            level = "debug" if self.verbose else self._settings.log_level
            configure_logging(json=wants_json(self.log_json, self._settings.log_format), level=level)
        return self._settings

    def repo(self, *, current: bool = True) -> Repo:
        repo = Repo(self.settings().database_url)
        if current:
            repo.require_current_schema()
        return repo


def _state(ctx: typer.Context) -> State:
    state: State = ctx.obj
    return state


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (env MAILSYNC_CONFIG; default ./mailsync.toml).",
            show_default=False,
        ),
    ] = None,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log JSON lines (default off a terminal).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug events.")] = False,
) -> None:
    """Options shared by every command."""
    configure_logging(json=wants_json(log_json), level="debug" if verbose else "info")
    ctx.obj = State(config=config, log_json=log_json, verbose=verbose)


@config_app.command("check")
def config_check(ctx: typer.Context) -> None:
    """Validate the config and the secrets it names; print what mailsync will use."""
    state = _state(ctx)
    settings = state.settings()
    table = Table(title=f"config {config_path(state.config)}", show_header=False)
    table.add_row("database", Repo(settings.database_url).engine.url.render_as_string(hide_password=True))
    table.add_row("archive", str(settings.archive_dir))
    table.add_row("event log", str(settings.events_dir))
    table.add_row("internal domains", ", ".join(settings.internal_domains) or "(none: set internal_domains)")
    problems = []
    for mailbox in settings.mailboxes:
        where = "import only" if not mailbox.host else f"{mailbox.security}://{mailbox.host}:{mailbox.port}"
        status = "ok"
        if mailbox.host:
            try:
                mailbox.password.read(f"mailboxes.{mailbox.name}")
            except ConfigError as exc:
                status = "secret missing"
                problems.append(exc)
        table.add_row(f"mailbox {mailbox.name}", f"{where}, owner {mailbox.owner}, {status}")
    out.print(table)
    if problems:
        raise problems[0]
    out.print("config ok", style="green")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to this version (safe to re-run)."""
    before, after = _state(ctx).repo(current=False).upgrade()
    if before == after:
        out.print(f"schema already at {after}")
    else:
        out.print(f"schema upgraded: {before or 'empty'} -> {after}")


@crm_app.command("import")
def crm_import(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="CSV files or directories holding accounts.csv, contacts.csv, opportunities.csv, reps.csv."
        ),
    ],
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map", help="Rename a column of another CRM's export: --map 'Account Name=name'. Repeatable."
        ),
    ] = None,
    delimiter: Annotated[
        str | None,
        typer.Option(
            "--delimiter",
            help="The field separator, one character or 'tab'. Default: detected per file from its header "
            "(, ; tab or |).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import CRM records from CSV (upsert by the CRM's id); bad rows are reported, good rows kept."""
    state = _state(ctx)
    mapping = {}
    for item in column_map or []:
        source, sep, target = item.partition("=")
        if not sep:
            raise ConfigError(
                f"--map {item!r} is not COLUMN=FIELD", fix="write it as --map 'Their Column=field'"
            )
        mapping[source.strip()] = target.strip()
    report = import_crm(state.settings(), state.repo(), paths, mapping, delimiter)
    for warning in report.files.warnings:
        err.print(_labelled("warning:", "yellow", warning))
    for problem in report.files.errors:
        err.print(_labelled("rejected", "red", problem))
    table = Table(title="CRM import")
    for column in ("file", "rows read", "rejected", "new", "updated", "unchanged"):
        table.add_column(column, justify="left" if column == "file" else "right")
    for kind, read in report.files.read.items():
        rejected = sum(1 for e in report.files.errors if Path(e.file).stem.lower() == kind)
        counts = report.counts.get(kind)
        unchanged = counts["unchanged"] if counts else (read - rejected if report.unchanged else 0)
        table.add_row(f"{kind}.csv", str(read), str(rejected), str(counts["new"] if counts else 0),
                      str(counts["updated"] if counts else 0), str(unchanged))  # fmt: skip
    out.print(table)
    summary = report.summary()
    if summary:
        (err if report.files.errors else out).print(summary, highlight=False)
    if report.files.errors:
        raise typer.Exit(1)


@app.command("import")
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
    state = _state(ctx)
    settings = state.settings()
    owner = settings.mailbox(mailbox).owner
    source = FileSource(path, mailbox)
    with ParseWorker(settings.limits) as parser:
        pipeline = Pipeline(settings, state.repo(), Archive(settings.archive_dir), parser)
        with _progress() as progress:
            task = progress.add_task(f"importing {safe_line(path.name)}", total=len(source))
            counts = import_source(pipeline, source, owner, lambda: progress.advance(task))
    table = Table(title=f"import {path} -> mailbox {mailbox}")
    table.add_column("outcome")
    table.add_column("messages", justify="right")
    labels = {"new": "new messages", "copy": "new copies of known messages", "known": "already imported",
              "quarantined": "quarantined (kept in archive)", "failed": "failed (see log)"}  # fmt: skip
    for key, label in labels.items():
        table.add_row(label, str(counts.get(key, 0)))
    out.print(table)
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command("run")
def run_daemon(ctx: typer.Context) -> None:
    """Run the capture daemon: poll every IMAP mailbox, IDLE between polls, serve /healthz and /metrics."""
    from mailsync.daemon import Daemon  # noqa: PLC0415 - imports the scheduler and HTTP server
    from mailsync.metrics import Metrics  # noqa: PLC0415

    state = _state(ctx)
    settings = state.settings()
    if not any(m.host for m in settings.mailboxes):
        raise ConfigError(
            "no IMAP mailbox configured (every [[mailboxes]] entry lacks host)",
            fix="add host, username and password_env to a mailbox",
        )
    parser = ParseWorker(settings.limits)
    pipeline = Pipeline(settings, state.repo(), Archive(settings.archive_dir), parser)
    pipeline.refresh_crm()  # at start: a missing spaCy model or database fails here, not per message
    raise typer.Exit(Daemon(settings, pipeline, Metrics(m.name for m in settings.mailboxes)).run())


@app.command("sync")
def sync_once(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One pass over every folder, then exit (for cron).")
    ] = False,
    mailbox: Annotated[str | None, typer.Option("--mailbox", "-m", help="Only this mailbox.")] = None,
) -> None:
    """Sync IMAP mailboxes once: fetch what is new in each folder, archive and process it."""
    from mailsync.sources.imap import ImapSource  # noqa: PLC0415
    from mailsync.sync import sync_mailbox  # noqa: PLC0415

    if not once:
        raise ConfigError(
            "`mailsync sync` needs --once; the long-running service is `mailsync run`",
            fix="mailsync sync --once",
        )
    state = _state(ctx)
    settings = state.settings()
    targets = [settings.mailbox(mailbox)] if mailbox else [m for m in settings.mailboxes if m.host]
    table = Table(title="sync")
    for column in ("mailbox", "folder", "fetched", "new", "known", "quarantined", "gone on server", "note"):
        table.add_column(column)
    failed = 0
    with ParseWorker(settings.limits) as parser, _progress() as progress:
        pipeline = Pipeline(settings, state.repo(), Archive(settings.archive_dir), parser)

        def track(folder: str, total: int) -> Callable[[], None]:
            task = progress.add_task(safe_line(folder), total=total)
            return lambda: progress.advance(task)

        for target in targets:
            try:
                with ImapSource.configured(target, settings) as source:
                    results = sync_mailbox(target, pipeline, source, progress=track)
            except CaptureError as exc:
                failed += 1
                err.print(_labelled(f"{target.name}:", "red", exc), highlight=False)
                if exc.fix:
                    err.print(f"  fix: {safe_text(exc.fix)}", highlight=False)
                continue
            for r in results:
                note = "UIDVALIDITY changed: resynced" if r.resynced else ""
                table.add_row(target.name, safe_text(r.folder), str(r.fetched), str(r.outcomes.get("new", 0)),
                              str(r.outcomes.get("known", 0) + r.outcomes.get("copy", 0)),
                              str(r.outcomes.get("quarantined", 0)), str(r.gone), note)  # fmt: skip
    out.print(table)
    if failed:
        raise typer.Exit(1)


@app.command("digest")
def digest(
    ctx: typer.Context,
    preview: Annotated[
        Path,
        typer.Option(
            "--preview",
            help="Write the digest here instead of sending it: a .html file, or a directory for every rep.",
        ),
    ],
    rep: Annotated[
        str | None, typer.Option("--rep", help="The rep's email; default: every active rep.")
    ] = None,
) -> None:
    """Render each rep's digest of open proposals (HTML + plain text) for preview."""
    state = _state(ctx)
    repo = state.repo()
    now = datetime.now(UTC)
    with repo.session() as session:
        reps = list(session.scalars(select(m.Rep).where(m.Rep.active).order_by(m.Rep.email)))
        if rep is not None:
            reps = [r for r in reps if r.email == rep.lower()] or [m.Rep(email=rep.lower(), name="")]
        single = rep is not None and preview.suffix == ".html"
        for person in reps:
            rendered = render_digest(person.email, person.name, open_suggestions(session, person.email), now)
            target = preview if single else preview / f"digest-{person.email.split('@')[0]}.html"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered.html, encoding="utf-8")
            target.with_suffix(".txt").write_text(rendered.text, encoding="utf-8")
            out.print(f"{person.email}: {rendered.items} proposal(s) -> {target} (+ .txt)")


@app.command("verify")
def verify(
    ctx: typer.Context,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="After verifying, restore each missing or corrupt blob from a copy the database knows "
            "(its IMAP folder and UID, or the imported file) whose bytes still hash to the blob's name, "
            "keeping a corrupt file as <name>.corrupt; remove .tmp-* files a crash left (older than 10 "
            "minutes). Orphans are listed, never deleted. Exits 1 while anything is left.",
        ),
    ] = False,
) -> None:
    """Re-hash every archived blob; report missing, corrupt and orphan files (--repair fixes what it can)."""
    state = _state(ctx)
    settings = state.settings()
    repo = state.repo()
    with repo.session() as session:
        known = list(session.scalars(select(m.Blob.sha256)))
    archive = Archive(settings.archive_dir)
    with _progress() as progress:
        task = progress.add_task("verifying archive", total=len(known))
        report = archive.verify(known, lambda: progress.advance(task))
    table = Table(title=f"archive {settings.archive_dir}")
    table.add_column("check")
    table.add_column("blobs", justify="right")
    rows = {"checked": report.checked, "missing": len(report.missing), "corrupt": len(report.corrupt),
            "orphan": len(report.orphans), "partial writes": len(report.partial)}  # fmt: skip
    for label, value in rows.items():
        table.add_row(label, str(value))
    out.print(table)
    for label, keys in (("missing", report.missing), ("corrupt", report.corrupt), ("orphan", report.orphans)):
        for key in keys:
            err.print(f"{label}: {archive.path_for(key)}", highlight=False)
    if repair:
        from mailsync.repair import repair_archive  # noqa: PLC0415 - imports the IMAP client

        result = repair_archive(report, repo, archive, settings)
        _print_repair(result, archive)
        if not result.ok:
            raise typer.Exit(1)
    elif not report.ok:
        raise typer.Exit(1)


def _print_repair(result: RepairResult, archive: Archive) -> None:
    table = Table(title="repair")
    table.add_column("outcome")
    table.add_column("files", justify="right")
    rows = {"repaired": len(result.repaired), "unrepairable": len(result.unrepairable),
            "partial writes removed": len(result.partial_removed),
            "partial writes kept": len(result.partial_kept), "orphans kept": len(result.orphans)}  # fmt: skip
    for label, value in rows.items():
        table.add_row(label, str(value))
    out.print(table)
    for fixed in result.repaired:
        kept = f"; the corrupt file is kept as {fixed.kept}" if fixed.kept else ""
        source = safe_text(fixed.source)
        out.print(f"repaired ({fixed.damage}): {archive.path_for(fixed.sha256)} from {source}{kept}",
                  highlight=False)  # fmt: skip
    for broken in result.unrepairable:
        reason = safe_text(broken.reason)
        err.print(f"unrepairable ({broken.damage}): {archive.path_for(broken.sha256)}: {reason}",
                  highlight=False)  # fmt: skip
    if result.unrepairable:
        err.print(
            f"{len(result.unrepairable)} blob(s) could not be repaired: restore them from a backup of "
            f"{archive.blobs} (same layout), then run `mailsync verify` again.",
            highlight=False,
        )
    for path, why in result.partial_kept:
        err.print(f"partial write kept: {path}: {why}", highlight=False)
    if result.orphans:
        err.print(
            f"{len(result.orphans)} orphan blob(s) kept (listed above): on disk but unknown to the database. "
            "They are still mail and are never deleted; a later sync of the same message adopts one.",
            highlight=False,
        )
    if result.ok:
        out.print("archive ok", style="green")


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Show the schema, what is captured per mailbox, and open proposals."""
    state = _state(ctx)
    repo = state.repo(current=False)
    current, head = repo.schema_revisions()
    out.print(f"schema {current or 'empty'} (this version needs {head})")
    if current != head:
        raise typer.Exit(1)
    with repo.session() as session:
        table = Table(title="mailboxes")
        for column in ("mailbox", "owner", "messages", "last captured"):
            table.add_column(column)
        rows = session.execute(
            select(
                m.Mailbox.name,
                m.Mailbox.owner,
                func.count(func.distinct(m.Provenance.message_pk)),
                func.max(m.Provenance.seen_at),
            )
            .join(m.Provenance, m.Provenance.mailbox == m.Mailbox.name, isouter=True)
            .group_by(m.Mailbox.name, m.Mailbox.owner)
            .order_by(m.Mailbox.name)
        )
        for name, owner, count, last in rows:
            table.add_row(name, owner, str(count), f"{last:%Y-%m-%d %H:%M}" if last else "never")
        out.print(table)
        folders = Table(title="IMAP folders")
        for column in ("mailbox", "folder", "uidvalidity", "last uid", "last success"):
            folders.add_column(column)
        for name, folder, validity, last_uid, success in session.execute(
            select(
                m.Mailbox.name,
                m.FolderState.name,
                m.FolderState.uidvalidity,
                m.FolderState.last_uid,
                m.FolderState.last_success_at,
            )
            .join(m.Mailbox, m.Mailbox.id == m.FolderState.mailbox_id)
            .order_by(m.Mailbox.name, m.FolderState.name)
        ):
            folders.add_row(
                name,
                safe_text(folder),
                str(validity),
                str(last_uid),
                f"{success:%Y-%m-%d %H:%M:%S}" if success else "never",
            )
        if folders.row_count:
            out.print(folders)
        totals = Table(title="totals")
        totals.add_column("what")
        totals.add_column("count", justify="right")
        for label, query in (
            ("messages", select(func.count()).select_from(m.Message)),
            ("threads", select(func.count()).select_from(m.Thread)),
            ("quarantined", select(func.count()).select_from(m.Quarantine)),
            (
                "open proposals",
                select(func.count()).select_from(m.Suggestion).where(m.Suggestion.status == "open"),
            ),
        ):
            totals.add_row(label, str(session.scalar(query)))
        out.print(totals)


@app.command("quarantine")
def quarantine(ctx: typer.Context) -> None:
    """List quarantined messages with their reasons (they stay in the archive)."""
    with _state(ctx).repo().session() as session:
        rows = session.execute(
            select(m.Quarantine.reason, m.Message.blob_sha256, func.min(m.Provenance.locator))
            .join(m.Message, m.Message.id == m.Quarantine.message_pk)
            .join(m.Provenance, m.Provenance.message_pk == m.Message.id)
            .group_by(m.Quarantine.id, m.Quarantine.reason, m.Message.blob_sha256)
            .order_by(m.Quarantine.id)
        ).all()
    table = Table(title=f"{len(rows)} quarantined message(s)")
    for column in ("reason", "first seen at", "archive key"):
        table.add_column(column, overflow="fold")
    for reason, key, locator in rows:
        table.add_row(safe_text(reason), safe_text(locator), key[:16])
    out.print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, transient=False,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a CaptureError becomes one line plus its fix, and exit code 1 (2 for config)."""
    try:
        app(args=argv, prog_name="mailsync")
    except CaptureError as exc:
        err.print(_labelled("error:", "red", exc), highlight=False)
        if exc.fix:
            err.print(_labelled("fix:", "bold", exc.fix), highlight=False)
        return 2 if isinstance(exc, ConfigError) else 1
    except SystemExit as exc:  # typer's standalone mode ends every run with one
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
