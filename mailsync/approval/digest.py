"""The rep's digest: open proposals with their evidence, as HTML and plain text (jinja2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from mailsync.mail.display import safe_line

if TYPE_CHECKING:
    from storage.models import Suggestion

KIND_TITLES = {
    "new_opportunity": "New opportunities",
    "stage_change": "Stage changes",
    "link_thread": "Conversations to link",
    "new_contact": "New contacts",
    "contact_moved": "Contacts who changed company",
}


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One proposal as the rep sees it; every string from mail or the CRM is `safe_line` text."""

    number: int  # the suggestion's id: what a rep types in "approve 12"
    kind: str
    summary: str
    confidence: float
    details: tuple[tuple[str, str], ...]
    evidence: tuple[tuple[str, str], ...]  # (date, quote)


@dataclass(frozen=True, slots=True)
class Digest:
    html: str
    text: str
    items: int


def _details(payload: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    shown = ("account", "new_account_domain", "opportunity", "amount", "currency", "first_seen_at",
             "from_stage", "to_stage", "reason", "silent_since", "contacts", "candidates", "because",
             "outcome", "contact", "email", "old_account", "new_account", "organisations", "money_named",
             "dates_named")  # fmt: skip
    return tuple(
        (k.replace("_", " "), safe_line(str(payload[k]))) for k in shown if payload.get(k) not in (None, "")
    )


def _evidence(entry: dict[str, Any]) -> tuple[str, str]:
    date = safe_line(str(entry.get("sent_at") or ""))[:10] or "undated"
    return date, safe_line(str(entry.get("quote") or ""))


def _item(row: Suggestion) -> DigestItem:
    evidence = tuple(_evidence(e) for e in row.evidence if isinstance(e, dict))
    return DigestItem(
        row.id, row.kind, safe_line(row.summary), row.confidence, _details(row.payload), evidence
    )


def render_digest(rep_email: str, rep_name: str, suggestions: list[Suggestion], now: datetime) -> Digest:
    """Render the digest for one rep; an empty list renders a short "nothing to review" digest."""
    env = Environment(
        loader=PackageLoader("mailsync.approval", "templates"),
        # Escaped unless the template is plain text: the extension is the last suffix, "j2", so keying on
        # "html" alone left digest.html.j2 unescaped.
        autoescape=select_autoescape(
            enabled_extensions=("html.j2",), disabled_extensions=("txt.j2",), default=True
        ),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    items = [_item(s) for s in suggestions]
    sections = [(title, [i for i in items if i.kind == kind]) for kind, title in KIND_TITLES.items()]
    context = {
        "rep_email": safe_line(rep_email),
        "rep_name": safe_line(rep_name or rep_email),
        "sections": [(title, section) for title, section in sections if section],
        "count": len(items),
        "generated": now.strftime("%Y-%m-%d %H:%M UTC"),
    }
    return Digest(
        html=env.get_template("digest.html.j2").render(context),
        text=env.get_template("digest.txt.j2").render(context),
        items=len(items),
    )
