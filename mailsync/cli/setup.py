"""`mailsync config check` and `mailsync db upgrade`: is the setup right, and is the schema current."""

from __future__ import annotations

import typer
from rich.table import Table

from config.errors import ConfigError
from mailsync.cli.app import out, state_of


def config_check(ctx: typer.Context) -> None:
    """Validate the config and the secrets it names; print what mailsync will use."""
    state = state_of(ctx)
    settings = state.settings()
    from sqlalchemy.engine import make_url

    from config.settings import config_path

    table = Table(title=f"config {config_path(state.config)}", show_header=False)
    table.add_row("database", make_url(settings.database_url).render_as_string(hide_password=True))
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


def db_upgrade(ctx: typer.Context) -> None:
    """Create or migrate the database schema to this version (safe to re-run)."""
    before, after = state_of(ctx).repo(current=False).upgrade()
    if before == after:
        out.print(f"schema already at {after}")
    else:
        out.print(f"schema upgraded: {before or 'empty'} -> {after}")
