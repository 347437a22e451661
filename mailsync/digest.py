"""The rep's digest: open proposals with their evidence, as HTML and plain text (jinja2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

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
    return tuple((k.replace("_", " "), str(payload[k])) for k in shown if payload.get(k) not in (None, ""))


def _item(row: Suggestion) -> DigestItem:
    evidence = tuple(
        ((e.get("sent_at") or "")[:10] or "undated", str(e.get("quote") or ""))
        for e in row.evidence
        if isinstance(e, dict)
    )
    return DigestItem(row.id, row.kind, row.summary, row.confidence, _details(row.payload), evidence)


def render_digest(rep_email: str, rep_name: str, suggestions: list[Suggestion], now: datetime) -> Digest:
    """Render the digest for one rep; an empty list renders a short "nothing to review" digest."""
    env = Environment(
        loader=PackageLoader("mailsync", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    items = [_item(s) for s in suggestions]
    sections = [(title, [i for i in items if i.kind == kind]) for kind, title in KIND_TITLES.items()]
    context = {
        "rep_email": rep_email,
        "rep_name": rep_name or rep_email,
        "sections": [(title, section) for title, section in sections if section],
        "count": len(items),
        "generated": now.strftime("%Y-%m-%d %H:%M UTC"),
    }
    return Digest(
        html=env.get_template("digest.html.j2").render(context),
        text=env.get_template("digest.txt.j2").render(context),
        items=len(items),
    )
