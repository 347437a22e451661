"""Scoring, pure: labels and the product's observed predictions in, items and scores out.

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

What counts as a prediction on a product thread is `Observed`'s (observe.py). Language is the labelled
one (the product does not detect language): a message's own, and for a thread its first message's.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from mailsync.evaluation.labels import Labels, MailFile, ThreadLabel
    from mailsync.evaluation.observe import Observed

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
    """Whether `result` reaches both targets; None when the metric has none or nothing was counted."""
    if precision is None or recall is None or result.tp + result.fp + result.fn == 0:
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


@dataclass
class Evaluation:
    """Every scored item and what the report shows beside them; the runner adds ingest counts and time."""

    items: list[Item]
    fields: dict[str, Accuracy]
    threading: dict[str, Any]
    coverage: dict[str, int]
    problems: list[str]
    ingest: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Per labelled thread with a link proposal: (best score, whether it names the labelled deal).
    link_scores: list[tuple[float, bool]] = field(default_factory=list)

    def score(self, metric: str, language: str | None = None) -> Score:
        return score(i for i in self.items if i.metric == metric and language in {None, i.language})


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
    parts: Sequence[int] = (),
    main: int | None = None,
) -> list[Item]:
    """The link, new-opportunity, won, lost and stage items of one labelled thread on one product thread.

    Outcomes, stage advances and a new opportunity are facts about the deal, not about where a message
    was filed: a tender notice or a PO sent as a new mail lands in a product thread of its own (`parts`,
    the labelled thread's other product threads; `main` is the labelled thread's own, for a fragment),
    and what it says counts for the labelled thread, right or wrong. A fragment counts its own links,
    and a new opportunity only when it is a second proposal of the same deal, so nothing counts twice.
    """
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
    proposed = bool(new_opps)
    if fragment:  # a fragment's proposal is a second one only when the deal was proposed already
        proposed = proposed and (bool(seen.of_kind(main, "new_opportunity")) or not label.new_opportunity)
    else:  # the deal is proposed once, wherever the product filed the mail that proposed it
        proposed = proposed or any(seen.of_kind(part, "new_opportunity") for part in parts)
    outcomes, stages = seen.outcomes(thread_id), seen.stages(thread_id)
    for part in parts:  # another product thread counts for this deal's outcome, not for any deal's
        outcomes = seen.outcomes(part, label.opportunity) | outcomes
        stages = seen.stages(part, label.opportunity) | stages
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
            frozenset({"new"} if proposed else ()),
            _clip(f"{label.kind}; {new_why}"),
            fragment,
        ),
    ]
    if not fragment:
        for outcome in ("won", "lost"):
            gold = _set(outcome if label.signal == outcome else None)
            why = outcomes.get(outcome) or "; ".join(outcomes.values()) or context
            items.append(Item(outcome, unit, language, gold, frozenset(outcomes) & {outcome}, _clip(why)))
        stage_why = "; ".join(stages.values()) or context
        items.append(
            Item("stage_advances", unit, language, _set(label.stage), frozenset(stages), _clip(stage_why))
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
    split_off = fragments(groups, mapping)
    for slug, label in labels.threads.items():
        parts = sorted(t for t, s in split_off.items() if s == slug)
        items += thread_items(slug, label, language[slug], mapping[slug], seen, parts=parts)
    for thread_id, slug in sorted(split_off.items()):
        items += thread_items(
            slug, labels.threads[slug], language[slug], thread_id, seen, fragment=True, main=mapping[slug]
        )
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
    link_scores = [
        (seen.link_scores[tid][1], seen.link_scores[tid][0] == label.opportunity)
        for slug, label in labels.threads.items()
        if (tid := mapping[slug]) is not None and tid in seen.link_scores
    ]
    return Evaluation(
        items,
        field_accuracy(labels, mapping, seen),
        threading,
        coverage,
        check_labels(labels, files, seen),
        link_scores=link_scores,
    )
