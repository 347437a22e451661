"""What every command shares: the typer app, the consoles, the State, and `main`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import structlog
import typer
from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from config.errors import CaptureError, ConfigError
from config.settings import Settings, load_settings
from mailsync.logs import configure_logging, wants_json
from mailsync.mail.display import safe_text

if TYPE_CHECKING:
    from storage.repo import Repo

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

_UNWRAPPED_WIDTH = 10_000  # off a terminal: wide enough that no table is squeezed, no line broken
# A one-shot command's summary says what happened; its log shows only what went wrong (-v: everything).
COMMAND_LOG_LEVEL = "warning"
IDLE_FLOOR = 30.0  # seconds: the least idle-in-transaction time before the server ends a session


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


def labelled(label: str, style: str, text: object) -> Text:
    """`label` in `style`, then text from outside as written, minus control and invisible characters."""
    return Text.assemble((label, style), " ", safe_text(str(text)))


@dataclass
class State:
    """What the global options chose; settings and databases are opened on first use and closed at exit."""

    config: Path | None
    log_json: bool
    verbose: bool
    service: bool = False  # `mailsync run`: the service logs at the config's level, JSON off a terminal
    _settings: Settings | None = None
    _repos: list[Repo] = field(default_factory=list)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
            self.configure_logging()
            for note in self._settings.deprecations:
                structlog.get_logger().warning("config_deprecated", detail=note)
        return self._settings

    def configure_logging(self) -> None:
        settings = self._settings
        if self.verbose:
            level = "debug"
        elif settings and (self.service or "log_level" in settings.model_fields_set):
            level = settings.log_level  # the service's level, or one the config or environment names
        else:
            level = COMMAND_LOG_LEVEL
        log_format = settings.log_format if settings else "auto"
        # JSON off a terminal is for the service under a service manager; a command asked for it by flag.
        json = wants_json(self.log_json, log_format if self.service or log_format == "json" else "console")
        configure_logging(json=json, level=level)

    def repo(self, *, current: bool = True) -> Repo:
        from storage.repo import Repo

        settings = self.settings()
        # The service: a transaction idle for a lease's time is a frozen process's (storage/repo.py).
        idle = max(IDLE_FLOOR, 2 * settings.daemon.lease_seconds) if self.service else None
        repo = Repo(settings.database_url, idle_in_transaction=idle)
        self._repos.append(repo)
        if current:
            repo.require_current_schema()
        return repo

    def close(self) -> None:
        """Close every database connection the command opened (a test runs many commands in one process)."""
        for repo in self._repos:
            repo.dispose()
        self._repos.clear()


def state_of(ctx: typer.Context) -> State:
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
        bool,
        typer.Option("--log-json", help="Log JSON lines (the default for `run` off a terminal)."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug events.")] = False,
) -> None:
    """Options shared by every command."""
    state = State(config=config, log_json=log_json, verbose=verbose, service=ctx.invoked_subcommand == "run")
    state.configure_logging()
    ctx.obj = state
    ctx.call_on_close(state.close)


def progress() -> Progress:
    """A progress bar on stderr for a long command."""
    return Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err, transient=False,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a CaptureError becomes one line plus its fix, and exit code 1 (2 for config)."""
    try:
        app(args=argv, prog_name="mailsync")
    except CaptureError as exc:
        err.print(labelled("error:", "red", exc), highlight=False)
        if exc.fix:
            err.print(labelled("fix:", "bold", exc.fix), highlight=False)
        return 2 if isinstance(exc, ConfigError) else 1
    except SystemExit as exc:  # typer's standalone mode ends every run with one
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
