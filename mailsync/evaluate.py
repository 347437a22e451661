"""Evaluation harness: runs the real pipeline over a labelled mailbox and scores matching quality.

    python -m mailsync.evaluate [--set fixtures/eval] [--json out.json] [--order slug|date]

1. Builds a throwaway workspace (config, SQLite database, archive, event log) in a temporary directory,
   applies the migrations, imports `<set>/crm`, then every `<set>/mail/<thread>/*.eml` through the real
   parse worker and pipeline (mailbox "eval", owner and internal domains from `labels.json`). Order:
   thread directory, then file name (`--order date` sorts by the Date header instead). The directories
   are only the judge's grouping: the product threads by headers itself.
2. Runs the daily no-reply job (mailsync/followups.py) once, at NOW = the latest Date in the set plus
   one day: the set is read as if the job ran the morning after its last message, so a follow-up of
   ours that nobody answered for `matching.lost_after_days` before that is a lost signal.
3. Reads back what the product stored (participants, threads, open suggestions) and scores it against
   `labels.json` (schema in `<set>/README.md`). It measures; it never tunes or approves anything.
4. Prints the scores against the quality targets, then every miss; `--json` writes all numbers.

Scoring
-------
Every metric is micro-averaged over items. An item is one unit (a message for contacts, a thread for
the rest) with a gold set and a predicted set:

    tp = |gold & predicted|    fp = |predicted - gold|    fn = |gold - predicted|

A binary metric has sets of at most one element; a link to the wrong opportunity is one FP and one FN.
P = tp / (tp + fp), R = tp / (tp + fn). Empty denominators: P = 1.0 when there is neither a prediction
nor gold (nothing claimed, nothing to find), else 0.0 when there is no prediction; R likewise is 1.0
with neither, else 0.0 when there is no gold. F1 = 0.0 when P + R = 0.

Threads: a labelled thread is scored on the product thread holding most of its messages (ties: the one
holding its earliest message). When the product split a labelled thread, each other fragment is scored
for its false positives only (a correct link there would count twice; a second new-opportunity
proposal is always a false positive, it would create a duplicate deal). Merged threads are listed, and
the message-pair threading row shows both splits and merges.

Predictions on a product thread: links = the thread's opportunity plus every open link_thread
suggestion; new opportunity = any open new_opportunity suggestion; won/lost = a stage_change to
closed_won/closed_lost or a new_opportunity whose outcome is won/lost; stage advances = stage_change
to demo/proposal/negotiation; moved contacts = the contact of every open contact_moved suggestion
(label `moved_contacts`); automatic links (info) = the thread's opportunity plus link suggestions in
mode "link", the ones made without asking. Language is the labelled one (the product does not detect
language): a message's own, and for a thread its first message's.

Exit status: 0 whenever the run completes (a measurement, not a gate), 2 on a harness error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from config.errors import CaptureError, ConfigError
from config.settings import load_settings
from mailsync.crm_import import import_crm
from mailsync.followups import flag_unanswered
from mailsync.importer import import_source
from mailsync.logs import configure_logging
from mailsync.parse_worker import ParseWorker
from mailsync.pipeline import Pipeline
from mailsync.sources.files import FileSource
from storage import models as m
from storage.archive import Archive
from storage.repo import Repo

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

DEFAULT_SET = Path(__file__).resolve().parents[1] / "fixtures" / "eval"
MAILBOX = "eval"
LANGUAGES = ("en", "de", "es")
STAGES = frozenset({"demo", "proposal", "negotiation"})
# metric -> (table label, target precision, target recall); None: informational, no target.
METRICS: dict[str, tuple[str, float | None, float | None]] = {
    "contacts": ("contacts (message)", None, None),
    "links": ("thread → opportunity", 0.95, 0.90),
    "new_opportunities": ("new opportunity", 0.85, 0.80),
    "won": ("won signal", 0.90, 0.85),
    "lost": ("lost signal", 0.90, 0.85),
    "stage_advances": ("stage adv. (info)", None, None),
    "moved_contacts": ("contact moved (info)", None, None),
    "auto_links": ("auto links (info)", None, None),
    "threading": ("thread pairs (info)", None, None),
}
_WHY_CHARS = 110
# Suggestion keys start with these (nlp/propose.py), then the thread key: the current thread's come first.
_KEY_PREFIX = {
    "link_thread": "link",
    "new_opportunity": "new_opportunity",
    "stage_change": "stage",
    "contact_moved": "contact_moved",
}
NOW_AFTER_LAST = timedelta(days=1)  # the evaluation's "now": the latest Date in the set plus this

Language = Literal["en", "de", "es"]


# --- labels (outside input, validated) ---------------------------------------------------------------


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


# --- scoring (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    """One scored unit: a message (contacts, threading) or a labelled thread (everything else)."""

    metric: str
    unit: str  # thread slug, or "slug/NN.eml"
    language: str
    gold: frozenset[str]
    predicted: frozenset[str]
    why: str = ""  # what the product did, shown next to a miss
    fp_only: bool = False  # a split-off fragment: only its false positives count

    @property
    def tp(self) -> int:
        return 0 if self.fp_only else len(self.gold & self.predicted)

    @property
    def fp(self) -> int:
        return len(self.predicted - self.gold)

    @property
    def fn(self) -> int:
        return 0 if self.fp_only else len(self.gold - self.predicted)


@dataclass(frozen=True, slots=True)
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        if self.tp + self.fp == 0:
            return 1.0 if self.fn == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        if self.tp + self.fn == 0:
            return 1.0 if self.fp == 0 else 0.0
        return self.tp / (self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def score(items: Iterable[Item]) -> Score:
    """Micro-averaged counts over `items` (see the module docstring for the empty cases)."""
    tp = fp = fn = 0
    for item in items:
        tp, fp, fn = tp + item.tp, fp + item.fp, fn + item.fn
    return Score(tp, fp, fn)


def meets(result: Score, precision: float | None, recall: float | None) -> bool | None:
    """Whether `result` reaches both targets; None when the metric has none."""
    if precision is None or recall is None:
        return None
    return result.precision >= precision and result.recall >= recall


@dataclass
class Accuracy:
    """A share of true positives whose field is right, with the wrong ones spelled out."""

    correct: int = 0
    total: int = 0
    misses: list[tuple[str, str]] = field(default_factory=list)  # (thread slug, what differs)

    def add(self, unit: str, *, right: bool, detail: str) -> None:
        self.total += 1
        self.correct += right
        if not right:
            self.misses.append((unit, detail))

    @property
    def share(self) -> float:
        return self.correct / self.total if self.total else math.nan


def map_threads(groups: Mapping[str, Sequence[int | None]]) -> dict[str, int | None]:
    """Labelled thread -> the product thread holding most of its messages (ties: the earliest one's).

    `groups` gives each labelled thread's product thread ids in message order (None: not threaded).
    """
    mapping: dict[str, int | None] = {}
    for slug, ids in groups.items():
        present = [i for i in ids if i is not None]
        counts = Counter(present)
        top = max(counts.values(), default=0)
        mapping[slug] = next((i for i in present if counts[i] == top), None)
    return mapping


def fragments(
    groups: Mapping[str, Sequence[int | None]], mapping: Mapping[str, int | None]
) -> dict[int, str]:
    """Product threads that are no labelled thread's own -> the labelled thread with most messages there."""
    mains = {i for i in mapping.values() if i is not None}
    owners: dict[int, Counter[str]] = defaultdict(Counter)
    for slug, ids in groups.items():
        for i in ids:
            if i is not None and i not in mains:
                owners[i][slug] += 1
    return {i: counts.most_common(1)[0][0] for i, counts in owners.items()}


def pair_items(order: Sequence[tuple[str, str, str, int | None]]) -> list[Item]:
    """Threading as message pairs: for each (unit, slug, language, thread id), the earlier messages it
    shares a labelled thread with (gold) and a product thread with (predicted); each pair counts once."""
    items = []
    for index, (unit, slug, language, thread_id) in enumerate(order):
        earlier = order[:index]
        gold = frozenset(u for u, s, _, _ in earlier if s == slug)
        predicted = frozenset(u for u, _, _, t in earlier if thread_id is not None and t == thread_id)
        items.append(Item("threading", unit, language, gold, predicted))
    return items


# --- what the product stored -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suggested:
    """An open suggestion, with internal ids already translated to CRM external ids."""

    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    quote: str
    opportunity: str | None  # external id of payload opportunity_id
    account: str | None  # external id of payload account_id
    contact: str | None = None  # external id of payload contact_id


@dataclass
class Observed:
    """The product's view, keyed by Message-ID and product thread id."""

    thread_of: dict[str, int | None] = field(default_factory=dict)  # message-id -> thread id
    status: dict[str, str] = field(default_factory=dict)  # message-id -> parsed | quarantined
    people: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)  # (email, contact)
    thread_key: dict[int, str] = field(default_factory=dict)
    thread_opportunity: dict[int, str | None] = field(default_factory=dict)
    suggestions: dict[int, list[Suggested]] = field(default_factory=lambda: defaultdict(list))
    known_ids: frozenset[str] = frozenset()  # every CRM external id in the store
    open_opportunities: frozenset[str] = frozenset()

    def contacts(self, message_id: str) -> frozenset[str]:
        return frozenset(c for _, c in self.people.get(message_id, ()) if c is not None)

    def of_kind(self, thread_id: int | None, kind: str) -> list[Suggested]:
        if thread_id is None:
            return []
        found = [s for s in self.suggestions.get(thread_id, ()) if s.kind == kind]
        current = f"{_KEY_PREFIX[kind]}:{self.thread_key.get(thread_id)}"
        return sorted(found, key=lambda s: (not s.key.startswith(current), -s.id))

    def links(self, thread_id: int | None, *, automatic: bool = False) -> frozenset[str]:
        linked = self.thread_opportunity.get(thread_id) if thread_id is not None else None
        proposed = {
            s.opportunity
            for s in self.of_kind(thread_id, "link_thread")
            if s.opportunity and (not automatic or s.payload.get("mode") == "link")
        }
        return frozenset(proposed | ({linked} if linked else set()))

    def moved(self, thread_id: int | None) -> frozenset[str]:
        return frozenset(s.contact for s in self.of_kind(thread_id, "contact_moved") if s.contact)

    def outcomes(self, thread_id: int | None) -> dict[str, str]:
        """won/lost -> the evidence for it."""
        found: dict[str, str] = {}
        for s in self.of_kind(thread_id, "new_opportunity"):
            if s.payload.get("outcome") in {"won", "lost"}:
                found.setdefault(str(s.payload["outcome"]), f"new opp with outcome {s.payload['outcome']}")
        for s in self.of_kind(thread_id, "stage_change"):
            outcome = {"closed_won": "won", "closed_lost": "lost"}.get(str(s.payload.get("to_stage")))
            if outcome:
                found[outcome] = f"→{s.payload['to_stage']} “{s.quote}”"
        return found

    def stages(self, thread_id: int | None) -> dict[str, str]:
        return {
            str(s.payload.get("to_stage")): f"→{s.payload.get('to_stage')} “{s.quote}”"
            for s in self.of_kind(thread_id, "stage_change")
            if s.payload.get("to_stage") in STAGES
        }

    def summary(self, thread_id: int | None) -> str:
        """The product's suggestions on a thread, one short phrase each (for explaining a miss)."""
        if thread_id is None:
            return "no product thread"
        parts = []
        for s in sorted(self.suggestions.get(thread_id, ()), key=lambda s: s.id):
            if s.kind == "link_thread":
                parts.append(f"link→{s.opportunity}")
            elif s.kind == "stage_change":
                parts.append(f"stage→{s.payload.get('to_stage')}")
            elif s.kind == "new_opportunity":
                parts.append("new opp")
            elif s.kind == "contact_moved":
                parts.append(f"moved {s.contact}")
        return "product: " + (", ".join(parts) if parts else "no deal suggestion")


def observe(repo: Repo, message_ids: Mapping[str, str]) -> Observed:
    """Read the product's store back; `message_ids` maps each imported file (resolved path) to its ID."""
    seen = Observed()
    with repo.session() as session:
        opp_ids = dict(session.execute(select(m.Opportunity.id, m.Opportunity.external_id)).all())
        acc_ids = dict(session.execute(select(m.Account.id, m.Account.external_id)).all())
        contact_ids = dict(session.execute(select(m.Contact.id, m.Contact.external_id)).all())
        seen.known_ids = frozenset(
            str(i) for i in (*opp_ids.values(), *acc_ids.values(), *contact_ids.values()) if i
        )
        seen.open_opportunities = frozenset(
            str(o.external_id)
            for o in session.scalars(select(m.Opportunity))
            if o.external_id and o.stage not in {"closed_won", "closed_lost"}
        )
        by_pk: dict[int, str] = {}
        rows = session.execute(
            select(m.Provenance.path, m.Message.id, m.Message.thread_id, m.Message.status).join(
                m.Message, m.Message.id == m.Provenance.message_pk
            )
        )
        for path, pk, thread_id, status in rows:
            message_id = message_ids.get(str(path))
            if message_id is not None:
                by_pk[pk] = message_id
                seen.thread_of[message_id], seen.status[message_id] = thread_id, status
        for person in session.scalars(select(m.Participant).order_by(m.Participant.id)):
            if person.message_pk in by_pk:
                contact = contact_ids.get(person.contact_id) if person.contact_id else None
                seen.people.setdefault(by_pk[person.message_pk], []).append((person.email, contact))
        for thread in session.scalars(select(m.Thread)):
            seen.thread_key[thread.id] = thread.key
            seen.thread_opportunity[thread.id] = (
                opp_ids.get(thread.opportunity_id) if thread.opportunity_id else None
            )
        for row in session.scalars(select(m.Suggestion).where(m.Suggestion.status == "open")):
            if row.thread_id is None:
                continue
            opp, acc = row.payload.get("opportunity_id"), row.payload.get("account_id")
            con = row.payload.get("contact_id")
            quote = str(row.evidence[0].get("quote", "")) if row.evidence else ""
            seen.suggestions[row.thread_id].append(
                Suggested(
                    row.id,
                    row.kind,
                    row.key,
                    dict(row.payload),
                    " ".join(quote.split()),
                    opp_ids.get(opp) if isinstance(opp, int) else None,
                    acc_ids.get(acc) if isinstance(acc, int) else None,
                    contact_ids.get(con) if isinstance(con, int) else None,
                )
            )
    return seen


# --- the evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MailFile:
    path: Path
    unit: str  # "slug/NN.eml"
    slug: str
    message_id: str
    sent_at: datetime


@dataclass
class Evaluation:
    items: list[Item]
    fields: dict[str, Accuracy]
    threading: dict[str, Any]
    coverage: dict[str, int]
    problems: list[str]
    ingest: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def score(self, metric: str, language: str | None = None) -> Score:
        return score(i for i in self.items if i.metric == metric and language in {None, i.language})


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


def _clip(text: str) -> str:
    return text if len(text) <= _WHY_CHARS else text[: _WHY_CHARS - 1] + "…"


def _set(value: str | None) -> frozenset[str]:
    return frozenset({value} if value else ())


def message_items(
    labels: Labels, files: Sequence[MailFile], seen: Observed, internal: Sequence[str]
) -> list[Item]:
    """Contact matching per labelled message, and threading as message pairs."""
    unit_of = {f.message_id: f.unit for f in files}
    items = []
    for message_id, label in labels.messages.items():
        people = seen.people.get(message_id, [])
        unmatched = [e for e, c in people if c is None and e.rpartition("@")[2] not in internal]
        status = seen.status.get(message_id, "not stored")
        why = f"{status}; unmatched: {', '.join(unmatched) or '-'}"
        unit = unit_of.get(message_id, f"{label.thread}/<{message_id}>")
        items.append(
            Item(
                "contacts",
                unit,
                label.language,
                frozenset(label.contacts),
                seen.contacts(message_id),
                _clip(why),
            )
        )
    order = [
        (f.unit, f.slug, labels.messages[f.message_id].language, seen.thread_of.get(f.message_id))
        for f in files
        if f.message_id in labels.messages
    ]
    return items + pair_items(order)


def thread_items(
    slug: str,
    label: ThreadLabel,
    language: str,
    thread_id: int | None,
    seen: Observed,
    *,
    fragment: bool = False,
) -> list[Item]:
    """The link, new-opportunity, won, lost and stage items of one labelled thread on one product thread."""
    unit = f"{slug} (split-off part)" if fragment else slug
    context = seen.summary(thread_id)
    links = seen.links(thread_id)
    link_why = (
        "; ".join(
            f"{s.opportunity} of [{s.payload.get('candidates', '')}]"
            for s in seen.of_kind(thread_id, "link_thread")
        )
        or context
    )
    new_opps = seen.of_kind(thread_id, "new_opportunity")
    new_gold = frozenset({"new"}) if label.new_opportunity and not fragment else frozenset()
    new_why = f"“{new_opps[0].quote}”" if new_opps else context
    outcomes, stages = seen.outcomes(thread_id), seen.stages(thread_id)
    items = [
        Item(
            "links",
            unit,
            language,
            _set(label.opportunity),
            links,
            _clip(f"{label.kind}; {link_why}"),
            fragment,
        ),
        Item(
            "new_opportunities",
            unit,
            language,
            new_gold,
            frozenset({"new"} if new_opps else ()),
            _clip(f"{label.kind}; {new_why}"),
            fragment,
        ),
    ]
    for outcome in ("won", "lost"):
        gold = _set(outcome if label.signal == outcome else None)
        why = outcomes.get(outcome) or "; ".join(outcomes.values()) or context
        items.append(
            Item(outcome, unit, language, gold, frozenset(outcomes) & {outcome}, _clip(why), fragment)
        )
    stage_why = "; ".join(stages.values()) or context
    items.append(
        Item(
            "stage_advances", unit, language, _set(label.stage), frozenset(stages), _clip(stage_why), fragment
        )
    )
    items.append(
        Item(
            "moved_contacts",
            unit,
            language,
            frozenset(label.moved_contacts),
            seen.moved(thread_id),
            _clip(context),
            fragment,
        )
    )
    auto = seen.links(thread_id, automatic=True)
    items.append(
        Item(
            "auto_links",
            unit,
            language,
            _set(label.opportunity),
            auto,
            _clip(f"{label.kind}; {link_why}"),
            fragment,
        )
    )
    return items


def field_accuracy(labels: Labels, mapping: Mapping[str, int | None], seen: Observed) -> dict[str, Accuracy]:
    """first-seen date, amount+currency and account of each correctly proposed new opportunity."""
    fields = {"first_seen": Accuracy(), "amount_currency": Accuracy(), "account": Accuracy()}
    for slug, label in labels.threads.items():
        gold = label.new_opportunity
        proposals = seen.of_kind(mapping.get(slug), "new_opportunity")
        if gold is None or not proposals:
            continue
        payload, account = proposals[0].payload, proposals[0].account
        got = payload.get("first_seen_at")
        fields["first_seen"].add(
            slug, right=got == gold.first_seen.isoformat(), detail=f"{got} (gold {gold.first_seen})"
        )
        if gold.amount is not None:
            amount = _decimal(payload.get("amount"))
            right = amount == gold.amount and payload.get("currency") == gold.currency
            fields["amount_currency"].add(
                slug,
                right=right,
                detail=f"{payload.get('amount')} "
                f"{payload.get('currency')} (gold {gold.amount} {gold.currency})",
            )
        domain = payload.get("new_account_domain")
        want = gold.account or (f"new {gold.company_domain}" if gold.company_domain else "free-mail person")
        have = account or (f"new {domain}" if domain else "free-mail person")
        fields["account"].add(slug, right=have == want, detail=f"{have} (gold {want})")
    return fields


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if value is not None else None
    except InvalidOperation:
        return None


def check_labels(labels: Labels, files: Sequence[MailFile], seen: Observed) -> list[str]:
    """Label/harness mismatches: files and labels that do not pair up, things the product cannot hold."""
    problems = []
    ids = Counter(f.message_id for f in files)
    problems += [f"Message-ID {i} is in {n} files" for i, n in ids.items() if n > 1]
    for f in files:
        label = labels.messages.get(f.message_id)
        if label is None:
            problems.append(f"{f.unit}: Message-ID {f.message_id or '(none)'} has no label")
        elif label.thread != f.slug:
            problems.append(f"{f.unit}: labelled as thread {label.thread}")
        elif f.message_id not in seen.status:
            problems.append(f"{f.unit}: not stored by the product")
        elif seen.status[f.message_id] != "parsed":
            problems.append(f"{f.unit}: {seen.status[f.message_id]} by the product")
    problems += [f"label {i} has no file" for i in labels.messages.keys() - ids.keys()]
    problems += [
        f"message label points at unknown thread {lb.thread}"
        for lb in labels.messages.values()
        if lb.thread not in labels.threads
    ]
    problems += [f"thread label {s} has no messages" for s in labels.threads.keys() - {f.slug for f in files}]
    for slug, thread in labels.threads.items():
        refs = [thread.opportunity, thread.new_opportunity.account if thread.new_opportunity else None]
        problems += [
            f"{slug}: {r} is not in the product's CRM" for r in refs if r and r not in seen.known_ids
        ]
        if thread.opportunity and thread.opportunity in seen.known_ids - seen.open_opportunities:
            problems.append(f"{slug}: {thread.opportunity} is closed in the CRM, so it cannot be linked")
    for slug, thread in labels.threads.items():
        problems += [
            f"{slug}: moved contact {c} is not in the product's CRM"
            for c in thread.moved_contacts
            if c not in seen.known_ids
        ]
    for message_id, message in labels.messages.items():
        problems += [
            f"{message_id}: {c} is not in the product's CRM"
            for c in message.contacts
            if c not in seen.known_ids
        ]
    return problems


def _parts(ids: Sequence[int | None], main: int | None, seen: Observed) -> list[str]:
    """How the product split one labelled thread: each part's size and suggestions, the scored one first."""
    sizes = Counter(ids)
    order = sorted(sizes, key=lambda i: (i != main, i is None, ids.index(i)))
    return [
        f"{sizes[i]} not threaded"
        if i is None
        else f"{'scored' if i == main else 'part'}: {sizes[i]} msg, "
        f"{seen.summary(i).removeprefix('product: ')}"
        for i in order
    ]


def evaluate_observed(labels: Labels, files: Sequence[MailFile], seen: Observed) -> Evaluation:
    """Score what the product stored against the labels (no I/O)."""
    by_slug: dict[str, list[MailFile]] = defaultdict(list)
    for f in files:
        if f.message_id in labels.messages:
            by_slug[labels.messages[f.message_id].thread].append(f)
    groups = {
        slug: [seen.thread_of.get(f.message_id) for f in by_slug.get(slug, [])] for slug in labels.threads
    }
    mapping = map_threads(groups)
    language = {
        slug: labels.messages[fs[0].message_id].language if (fs := by_slug.get(slug)) else "en"
        for slug in labels.threads
    }
    items = message_items(labels, files, seen, labels.internal_domains)
    for slug, label in labels.threads.items():
        items += thread_items(slug, label, language[slug], mapping[slug], seen)
    for thread_id, slug in sorted(fragments(groups, mapping).items()):
        items += thread_items(slug, labels.threads[slug], language[slug], thread_id, seen, fragment=True)
    slugs_in: dict[int, set[str]] = defaultdict(set)
    for slug, ids in groups.items():
        for i in ids:
            if i is not None:
                slugs_in[i].add(slug)
    threading = {
        "product_threads": len(slugs_in),
        "split": {
            slug: _parts(ids, mapping[slug], seen) for slug, ids in groups.items() if len(set(ids)) > 1
        },
        "merged": sorted(" + ".join(sorted(s)) for s in slugs_in.values() if len(s) > 1),
    }
    coverage = {
        "files": len(files),
        "messages_labelled": len(labels.messages),
        "messages_scored": sum(1 for i in items if i.metric == "contacts"),
        "messages_stored": sum(1 for i in labels.messages if i in seen.status),
        "threads_labelled": len(labels.threads),
        "threads_scored": sum(1 for i in items if i.metric == "links" and not i.fp_only),
    }
    return Evaluation(
        items, field_accuracy(labels, mapping, seen), threading, coverage, check_labels(labels, files, seen)
    )


# --- the run (I/O) -----------------------------------------------------------------------------------


def _write_config(directory: Path, labels: Labels) -> Path:
    path = directory / "mailsync.toml"
    path.write_text(
        'database_url = "sqlite:///var/eval.db"\narchive_dir = "var/archive"\nevents_dir = "var/events"\n'
        f"internal_domains = {json.dumps(list(labels.internal_domains))}\n\n"
        f'[[mailboxes]]\nname = "{MAILBOX}"\nowner = {json.dumps(labels.mailbox_owner)}\n',
        encoding="utf-8",
    )
    return path


def run_evaluation(set_dir: Path, order: Literal["slug", "date"] = "slug") -> Evaluation:
    """Import the labelled set into a throwaway workspace through the real pipeline, then score it."""
    started = time.monotonic()
    labels = load_labels(set_dir / "labels.json")
    files = read_mail_files(set_dir / "mail")
    if order == "date":
        files = sorted(files, key=lambda f: (f.sent_at, f.slug, f.path.name))
    with tempfile.TemporaryDirectory(prefix="mailsync-eval-") as tmp:
        workspace = Path(tmp)
        settings = load_settings(_write_config(workspace, labels))
        for name in ("database_url", "archive_dir", "events_dir"):
            if tmp not in str(getattr(settings, name)):
                raise ConfigError(
                    f"{name} is overridden by the environment, away from the eval workspace",
                    fix=f"unset MAILSYNC_{name.upper()} for the evaluation",
                )
        repo = Repo(settings.database_url)
        try:
            repo.upgrade()
            crm = import_crm(settings, repo, [set_dir / "crm"], {})
            ingest: Counter[str] = Counter()
            with ParseWorker(settings.limits) as parser:
                pipeline = Pipeline(settings, repo, Archive(settings.archive_dir), parser)
                pipeline.refresh_crm()
                for f in files:
                    ingest += import_source(pipeline, FileSource(f.path, MAILBOX), labels.mailbox_owner)
                now = max((f.sent_at for f in files if f.sent_at.year < date.max.year), default=None)
                if now is not None:
                    flag_unanswered(repo, pipeline.crm, settings.matching, now + NOW_AFTER_LAST)
            seen = observe(repo, {str(f.path): f.message_id for f in files})
        finally:
            repo.dispose()
    evaluation = evaluate_observed(labels, files, seen)
    evaluation.problems[:0] = [f"CRM import: {e}" for e in crm.files.errors]
    evaluation.ingest = dict(ingest)
    evaluation.seconds = time.monotonic() - started
    return evaluation


# --- output ------------------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _target_cell(result: Score, precision: float | None, recall: float | None) -> Text:
    ok = meets(result, precision, recall)
    if ok is None:
        return Text("—")
    cell = Text(f"P≥{precision:.2f} R≥{recall:.2f} ".replace("0.", "."))
    cell.append("✓" if ok else "✗", "green" if ok else "red")
    return cell


def render(evaluation: Evaluation, console: Console) -> None:
    """The score table, the per-language rows for de and es, field accuracies, then every miss."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"mailsync matching quality ({evaluation.coverage['messages_scored']} messages, "
        f"{evaluation.coverage['threads_scored']} threads)",
    )
    for column in ("metric", "lang", "P", "R", "F1", "tp/fp/fn", "target"):
        left = column in {"metric", "target"}
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for language, style in ((None, ""), ("de", "dim"), ("es", "dim")):
        for metric, (label, precision, recall) in METRICS.items():
            result = evaluation.score(metric, language)
            table.add_row(
                label,
                language or "all",
                _pct(result.precision),
                _pct(result.recall),
                _pct(result.f1),
                f"{result.tp}/{result.fp}/{result.fn}",
                _target_cell(result, precision, recall),
                style=style,
            )
        table.add_section()
    console.print(table)
    fields = Table(box=box.SIMPLE_HEAD, title="new-opportunity fields (over true positives)")
    for column in ("field", "correct", "share"):
        fields.add_column(column)
    for name, acc in evaluation.fields.items():
        fields.add_row(name, f"{acc.correct}/{acc.total}", _pct(acc.share))
    console.print(fields)
    threading = evaluation.threading
    console.print(
        Text(
            f"threading: {evaluation.coverage['threads_labelled']} labelled threads -> "
            f"{threading['product_threads']} product threads; merged: {', '.join(threading['merged']) or '-'}"
        )
    )
    for slug, parts in threading["split"].items():
        console.print(Text(f"  split {slug}: " + " | ".join(parts)))
    _render_misses(evaluation, console)
    for problem in evaluation.problems:
        console.print(Text(f"label/harness mismatch: {problem}", "yellow"))
    ingest = ", ".join(f"{k} {v}" for k, v in sorted(evaluation.ingest.items()))
    console.print(Text(f"ingest: {ingest}; {evaluation.seconds:.1f} s"))


def misses(evaluation: Evaluation) -> list[dict[str, str]]:
    """Every false positive and negative, as (metric, unit, FP/FN, what, product's side)."""
    found = []
    for item in evaluation.items:
        if item.metric == "threading":
            continue
        for kind, values in (
            ("FN", [] if item.fp_only else item.gold - item.predicted),
            ("FP", item.predicted - item.gold),
        ):
            found += [
                {"metric": item.metric, "unit": item.unit, "miss": kind, "what": v, "why": item.why}
                for v in sorted(values)
            ]
    rank = {metric: index for index, metric in enumerate(METRICS)}
    found.sort(key=lambda f: (rank[f["metric"]], f["miss"], f["unit"]))
    for name, acc in evaluation.fields.items():
        found += [
            {"metric": f"field:{name}", "unit": u, "miss": "wrong", "what": d, "why": ""}
            for u, d in acc.misses
        ]
    return found


def _render_misses(evaluation: Evaluation, console: Console) -> None:
    found = misses(evaluation)
    console.print(
        Text(f"misses: {len(found)} (FN: labelled, not predicted; FP: predicted, not labelled)", "bold")
    )
    for miss in found:
        line = Text(f"  {miss['metric']:<17} {miss['miss']:<5} {miss['unit']}: ")
        line.append(miss["what"], "bold")
        if miss["why"]:
            line.append(f"  ({miss['why']})", "dim")
        console.print(line)


def as_json(evaluation: Evaluation) -> dict[str, Any]:
    """All numbers: every metric overall and per language, field accuracies, coverage, misses."""
    metrics = {}
    for metric, (_, precision, recall) in METRICS.items():
        overall = evaluation.score(metric)
        metrics[metric] = {
            **overall.as_dict(),
            "target": None if precision is None else {"precision": precision, "recall": recall},
            "meets_target": meets(overall, precision, recall),
            "by_language": {lang: evaluation.score(metric, lang).as_dict() for lang in LANGUAGES},
        }
    return {
        "metrics": metrics,
        "new_opportunity_fields": {
            name: {"correct": a.correct, "total": a.total, "share": None if math.isnan(a.share) else a.share}
            for name, a in evaluation.fields.items()
        },
        "threading": evaluation.threading,
        "coverage": evaluation.coverage,
        "ingest": evaluation.ingest,
        "runtime_seconds": round(evaluation.seconds, 2),
        "problems": evaluation.problems,
        "misses": misses(evaluation),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: run, print, optionally write JSON. 0 when the run completes, 2 on an error."""
    parser = argparse.ArgumentParser(prog="python -m mailsync.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="labelled set directory")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--order", choices=("slug", "date"), default="slug", help="import order")
    args = parser.parse_args(argv)
    console = Console()
    configure_logging(json=False, level="warning")
    try:
        evaluation = run_evaluation(args.set, args.order)
    except CaptureError as exc:
        Console(stderr=True).print(Text(f"evaluation failed: {exc}\nfix: {exc.fix or '-'}", "red"))
        return 2
    render(evaluation, console)
    if args.json is not None:
        args.json.write_text(
            json.dumps(as_json(evaluation), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
