"""What every command shares: the typer app, the consoles, the State, and `main`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import typer
import typer.main
from rich.console import Console, ConsoleDimensions
from rich.text import Text
from typer.core import TyperGroup

from config.errors import CaptureError, ConfigError
from mailsync.logs import configure_logging, wants_json
from mailsync.mail.display import safe_text

if TYPE_CHECKING:
    from rich.progress import Progress
    from typer._click import Command

    from config.settings import Settings
    from storage.repo import Repo


class _Commands(MutableMapping[str, "Command"]):
    """A group's commands, each imported and built when asked for by name: `mailsync sync` loads
    capture.py alone, and typer builds one command, not thirty (~0.1 s of a one-shot command's start).
    `--help` lists them all, so it loads them all. The keys are every name, without loading."""

    def __init__(self, lazy: dict[str, str], built: MutableMapping[str, Command]) -> None:
        self._lazy = dict(lazy)  # name -> "module:function" in mailsync.cli
        self._built = dict(built)  # the sub-groups typer built already

    def __getitem__(self, name: str) -> Command:
        if name not in self._built and name in self._lazy:
            module, function = self._lazy[name].split(":")
            single = typer.Typer(add_completion=False)
            single.command(name)(getattr(importlib.import_module(f"mailsync.cli.{module}"), function))
            self._built[name] = typer.main.get_command(single)
        return self._built[name]

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._built

    def __iter__(self) -> Iterator[str]:  # the order `--help` lists: commands, then sub-groups
        yield from self._lazy
        yield from (name for name in self._built if name not in self._lazy)

    def __len__(self) -> int:
        return len(self._lazy.keys() | self._built.keys())

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._lazy.pop(name, None)
        self._built.pop(name, None)


class _LazyGroup(TyperGroup):
    lazy: ClassVar[dict[str, str]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.lazy, self.commands)


def _lazy(commands: dict[str, str]) -> type[TyperGroup]:
    """A group class over `commands` (name -> "module:function" in mailsync.cli), in `--help` order."""
    return type("LazyGroup", (_LazyGroup,), {"lazy": commands})


# Each group's commands (name -> "module:function" in mailsync.cli), in the order `mailsync --help`
# lists them: capture, what people read, then setup; the sub-groups follow.
_COMMANDS = {
    "import": "capture:import_mail", "sync": "capture:sync_once", "run": "capture:run_daemon",
    "digest": "digest:digest", "status": "status:status", "proposals": "proposals:proposals",
    "approve": "proposals:approve", "reject": "proposals:reject", "search": "search:search",
    "show": "search:show", "quarantine": "archive:quarantine", "verify": "archive:verify",
    "export": "export:export", "backup": "backup:backup", "restore": "backup:restore",
    "reassign": "reassign:reassign", "replay": "replay:replay", "rebuild": "replay:rebuild",
    "forget": "privacy:forget",
}  # fmt: skip
_REP_COMMANDS = {
    "pause": "reps:pause", "resume": "reps:resume",
    "deactivate": "reps:deactivate", "activate": "reps:activate",
}  # fmt: skip

app = typer.Typer(
    cls=_lazy(_COMMANDS),
    help="mailsync: capture a sales team's mail into its CRM. Archives every message, threads and "
    "matches it to contacts, accounts and deals, and proposes what is missing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# The sub-groups: name -> (their commands, help), in the order `--help` lists them.
_GROUPS = {
    "webhook": (
        {"deliver": "webhook:deliver", "status": "webhook:status", "retry": "webhook:retry"},
        "The outbound webhook: activity and decisions POSTed, signed, to another CRM.",
    ),
    "crm": ({"import": "crm:crm_import"}, "CRM data: accounts, contacts, opportunities and reps."),
    "retention": (
        {"apply": "privacy:retention_apply"},
        "Retention: delete mail older than the keep_years setting (retention section), archive included.",
    ),
    "rep": (_REP_COMMANDS, "Reps: pause and resume their digest; deactivate one who left, activate again."),
    "db": ({"upgrade": "setup:db_upgrade"}, "Database schema (Alembic migrations)."),
    "config": ({"check": "setup:config_check"}, "The configuration file and environment."),
}
for _name, (_commands, _help) in _GROUPS.items():
    app.add_typer(typer.Typer(cls=_lazy(_commands), help=_help, no_args_is_help=True), name=_name)

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
            import structlog

            from config.settings import load_settings  # pydantic-settings: not for `mailsync --help`

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
    few_malloc_arenas()
    sys.exit(main())


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def few_malloc_arenas() -> None:
    """At most two glibc malloc arenas for the process, before its threads start. By default every
    thread that allocates may get its own (up to 8 per core), and memory one arena frees is never
    reused by another: the fetch, read and staging threads each left pages that the processing stage
    could not reuse, 5-11 MB more at the peak of a `sync --once` (the GIL runs one thread at a time:
    two arenas cost no waiting). A no-op where the C library has no mallopt."""
    import ctypes

    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, 2)
