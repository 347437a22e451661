"""The command line: typer commands that load Settings, build the objects and hand over; no logic here.

`app.py` holds what every command shares (the typer app and its groups, each listing its commands by
module and function, the consoles, the State a command reads its settings and database from, and
`main`); one module per command group holds its commands. A command's module is imported when the
command line names it (`--help` lists them all, so it imports them all), and commands import their
machinery when they run, so `mailsync --help` loads neither spaCy, SQLAlchemy nor the pipeline, a
command that does not match mail never loads spaCy, and `mailsync sync` loads none of the others.
"""

from mailsync.cli.app import app, main, run

__all__ = ["app", "main", "run"]
