"""`mailsync digest`: each rep's digest of open proposals, as HTML and plain text."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from mailsync.cli.app import out, state_of
from mailsync.mail.display import safe_line
from storage.private import private_file


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
    from mailsync.approval.digest import render_digest
    from storage.mailstore import open_suggestions
    from storage.overview import RepLine, active_reps

    now = datetime.now(UTC)
    with state_of(ctx).repo().session() as session:
        reps = active_reps(session)
        if rep is not None:
            reps = [r for r in reps if r.email == rep.lower()] or [RepLine(rep.lower(), "")]
        single = rep is not None and preview.suffix == ".html"
        for person in reps:
            rendered = render_digest(person.email, person.name, open_suggestions(session, person.email), now)
            target = preview if single else preview / f"digest-{person.email.split('@')[0]}.html"
            # The preview holds mail text, like everything under the data directory: private.
            private_file(target.with_suffix(".txt")).write_text(rendered.text, encoding="utf-8")
            private_file(target).write_text(rendered.html, encoding="utf-8")
            out.print(f"{safe_line(person.email)}: {rendered.items} proposal(s) -> {target} (+ .txt)")
