"""`mailsync webhook deliver|status|retry`: the outbound webhook to another CRM ([webhook] in the config)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_line

_JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _print_json(value: dict[str, Any]) -> None:
    out.print(json.dumps(value, ensure_ascii=True, indent=2, default=str), highlight=False)


def deliver(ctx: typer.Context, as_json: _JSON = False) -> None:
    """Queue new activity and decisions and POST every delivery that is due now (the daemon does this
    every minute); exits 1 when a delivery failed for good."""
    from config.errors import ConfigError
    from mailsync.admin.webhook import deliver as run_deliveries

    state = state_of(ctx)
    settings = state.settings().webhook
    if not settings.url:
        raise ConfigError("no webhook configured", fix="set [webhook] url and secret_env (or secret_file)")
    report = run_deliveries(state.repo(), settings)
    if as_json:
        _print_json(report.as_json())
    else:
        out.print(
            f"queued {report.queued} deliveries; delivered {report.delivered}, "
            f"retrying {report.retrying}, failed {report.failed}",
            highlight=False,
        )
    if report.failed:
        raise typer.Exit(1)


def status(
    ctx: typer.Context,
    last: Annotated[int, typer.Option("--last", help="How many recent attempts to list.", min=0)] = 20,
    as_json: _JSON = False,
) -> None:
    """Deliveries by status and the delivery log's latest attempts."""
    from storage import outbox

    with state_of(ctx).repo().session() as session:
        counts = outbox.counts(session)
        attempts: list[dict[str, Any]] = [
            {"at": a.at.isoformat(), "delivery": d.id, "kind": d.kind, "records": d.records,
             "status_code": a.status_code, "error": a.error, "ms": a.duration_ms, "delivery_status": d.status}
            for a, d in outbox.recent_attempts(session, last)
        ]  # fmt: skip
    if as_json:
        _print_json({"deliveries": counts, "attempts": attempts})
        return
    out.print(", ".join(f"{n} {status}" for status, n in counts.items()), highlight=False)
    table = Table(title="latest attempts")
    for column in ("at", "delivery", "kind", "records", "result", "ms"):
        table.add_column(column)
    for row in attempts:
        result = str(row["status_code"]) if row["error"] is None else safe_line(str(row["error"]))
        table.add_row(
            row["at"][:19], str(row["delivery"]), row["kind"], str(row["records"]), result, str(row["ms"])
        )
    out.print(table)


def retry(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count them; change nothing.")] = False,
    as_json: _JSON = False,
) -> None:
    """Queue the deliveries that failed for good again (after the receiving side is fixed)."""
    from storage import outbox
    from storage.models import utcnow

    with state_of(ctx).repo().session() as session:
        count = outbox.counts(session)[outbox.FAILED] if dry_run else outbox.retry_failed(session, utcnow())
    if as_json:
        _print_json({"requeued": count, "dry_run": dry_run})
    else:
        out.print(
            f"{'would queue' if dry_run else 'queued'} {count} failed deliveries again", highlight=False
        )
