"""The command line: typer commands that load Settings, build the objects and hand over; no logic here.

`app.py` holds what every command shares (the typer app, consoles, the State a command reads its
settings and database from, and `main`); one module per command group registers its commands on it.
Commands import their machinery when they run, so `mailsync --help` loads neither spaCy, SQLAlchemy
nor the pipeline, and a command that does not match mail never loads spaCy.
"""

from mailsync.cli import archive, capture, crm, digest, export, proposals, reps, setup, status
from mailsync.cli.app import app, config_app, crm_app, db_app, main, run

# The commands, in the order `mailsync --help` lists them: capture, what people read, then setup.
app.command("import")(capture.import_mail)
app.command("sync")(capture.sync_once)
app.command("run")(capture.run_daemon)
app.command("digest")(digest.digest)
app.command("status")(status.status)
app.command("proposals")(proposals.proposals)
app.command("approve")(proposals.approve)
app.command("reject")(proposals.reject)
app.command("quarantine")(archive.quarantine)
app.command("verify")(archive.verify)
app.command("export")(export.export)
crm_app.command("import")(crm.crm_import)
app.add_typer(crm_app, name="crm")
reps.rep_app.command("pause")(reps.pause)
reps.rep_app.command("resume")(reps.resume)
app.add_typer(reps.rep_app, name="rep")
db_app.command("upgrade")(setup.db_upgrade)
app.add_typer(db_app, name="db")
config_app.command("check")(setup.config_check)
app.add_typer(config_app, name="config")

__all__ = ["app", "main", "run"]
