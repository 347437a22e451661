"""A labelled set on disk: `labels.json` (validated, schema in `<set>/README.md`) and its mail files."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from config.errors import ConfigError

Language = Literal["en", "de", "es", "fr"]
LANGUAGES: tuple[Language, ...] = ("en", "de", "es", "fr")


class _Label(BaseModel):
    model_config = ConfigDict(frozen=True)


class NewOpportunityLabel(_Label):
    account: str | None
    company_domain: str | None
    amount: Decimal | None
    currency: str | None
    first_seen: date


class ThreadLabel(_Label):
    kind: Literal["existing_opportunity", "new_opportunity", "noise", "internal", "other"]
    opportunity: str | None
    new_opportunity: NewOpportunityLabel | None
    signal: Literal["won", "lost"] | None
    stage: Literal["demo", "proposal", "negotiation"] | None
    moved_contacts: tuple[str, ...] = ()  # CRM contacts the thread shows moving to another company
    note: str = ""


class MessageLabel(_Label):
    thread: str
    language: Language
    contacts: tuple[str, ...]


class Labels(_Label):
    mailbox_owner: str
    internal_domains: tuple[str, ...]
    messages: dict[str, MessageLabel]
    threads: dict[str, ThreadLabel]


def load_labels(path: Path) -> Labels:
    """labels.json, validated; a ConfigError names the file and the first problem."""
    try:
        return Labels.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", fix="pass --set DIR holding labels.json"
        ) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}: {where}: {first['msg']}", fix="see the label schema in README.md"
        ) from exc


@dataclass(frozen=True, slots=True)
class MailFile:
    """One `<slug>/NN.eml` of the set, with the headers the harness orders and pairs by."""

    path: Path
    unit: str  # "slug/NN.eml"
    slug: str
    message_id: str
    sent_at: datetime


def read_mail_files(mail_dir: Path) -> list[MailFile]:
    """Every `<slug>/*.eml` under `mail_dir`, with its Message-ID (no angle brackets) and Date."""
    found = []
    parser = BytesHeaderParser()
    for path in sorted(mail_dir.glob("*/*.eml"), key=lambda p: (p.parent.name, p.name)):
        headers = parser.parsebytes(path.read_bytes())
        message_id = str(headers.get("Message-ID", "")).strip().strip("<>").strip()
        try:
            sent_at = parsedate_to_datetime(str(headers.get("Date", ""))).astimezone(UTC)
        except (TypeError, ValueError):
            sent_at = datetime.max.replace(tzinfo=UTC)
        unit = f"{path.parent.name}/{path.name}"
        found.append(MailFile(path.resolve(), unit, path.parent.name, message_id, sent_at))
    return found
