"""The command line: typer commands that load Settings, build the objects and hand over; no logic here.

`app.py` holds what every command shares (the typer app, consoles, the State a command reads its
settings and database from, and `main`); one module per command group registers its commands on it.
Commands import their machinery when they run, so `mailsync --help` loads neither spaCy, SQLAlchemy
nor the pipeline, and a command that does not match mail never loads spaCy.
"""

from mailsync.cli import (
    archive,
    backup,
    capture,
    crm,
    digest,
    export,
    privacy,
    proposals,
    reassign,
    replay,
    reps,
    search,
    setup,
    status,
    webhook,
)
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
app.command("search")(search.search)
app.command("show")(search.show)
app.command("quarantine")(archive.quarantine)
app.command("verify")(archive.verify)
app.command("export")(export.export)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
webhook.webhook_app.command("deliver")(webhook.deliver)
webhook.webhook_app.command("status")(webhook.status)
webhook.webhook_app.command("retry")(webhook.retry)
app.add_typer(webhook.webhook_app, name="webhook")
app.command("reassign")(reassign.reassign)
app.command("replay")(replay.replay)
app.command("rebuild")(replay.rebuild)
crm_app.command("import")(crm.crm_import)
app.add_typer(crm_app, name="crm")
app.command("forget")(privacy.forget)
privacy.retention_app.command("apply")(privacy.retention_apply)
app.add_typer(privacy.retention_app, name="retention")
reps.rep_app.command("pause")(reps.pause)
reps.rep_app.command("resume")(reps.resume)
reps.rep_app.command("deactivate")(reps.deactivate)
reps.rep_app.command("activate")(reps.activate)
app.add_typer(reps.rep_app, name="rep")
db_app.command("upgrade")(setup.db_upgrade)
app.add_typer(db_app, name="db")
config_app.command("check")(setup.config_check)
app.add_typer(config_app, name="config")

__all__ = ["app", "main", "run"]
