"""CRM phrases: a spaCy PhraseMatcher over opportunity and product names, built from the CRM itself.

A blank pipeline (tokeniser only: no model download, any language's names) and one matcher whose
labels are opportunity ids. Each open opportunity contributes its name without the account prefix
("Acme - FleetSense rollout (40 vans)" -> "FleetSense rollout (40 vans)", "FleetSense rollout") and
its product terms: CamelCase or upper-case words ("FleetSense", "RouteIQ", "SCADA") are product names
in practice. Matching is case-insensitive on tokens, so "fleetsense" and "FLEETSENSE" hit too.
The index is rebuilt whenever the CRM snapshot changes (a new import or an approval).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import spacy
from spacy.matcher import PhraseMatcher

if TYPE_CHECKING:
    from storage.records import CrmSnapshot, OpportunityRef

_SEPARATORS = re.compile(r"\s+[-–—:|/]\s+")
_PRODUCT = re.compile(
    r"^(?:[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+|[A-Z]{3,}[0-9]*|[A-Za-z]+[0-9]+[A-Za-z0-9]*)$"
)
_MIN_PHRASE = 4


@dataclass
class PhraseIndex:
    """Which open opportunities' phrases a text mentions; build with `index_for(crm)`."""

    crm: CrmSnapshot
    nlp: spacy.language.Language = field(default_factory=lambda: spacy.blank("en"))
    products: dict[int, frozenset[str]] = field(default_factory=dict)  # opportunity id -> product terms

    def __post_init__(self) -> None:
        self.matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        # One label per distinct phrase, however many opportunities share it ("FleetSense" names many):
        # a mention then costs one match, not one per opportunity.
        owners: dict[str, set[int]] = {}
        for opportunities in self.crm.open_opportunities.values():
            for opp in opportunities:
                for phrase in self._phrases(opp):
                    owners.setdefault(phrase.lower(), set()).add(opp.id)
        self.owners: dict[int, tuple[str, frozenset[int]]] = {}
        for phrase, ids in owners.items():
            key = self.nlp.vocab.strings.add(f"phrase:{phrase}")
            self.owners[key] = (phrase, frozenset(ids))
            self.matcher.add(f"phrase:{phrase}", [self.nlp.make_doc(phrase)])

    def _phrases(self, opp: OpportunityRef) -> set[str]:
        account = self.crm.accounts.get(opp.account_id)
        parts = [p for p in _SEPARATORS.split(opp.name) if p.strip()]
        descriptive = [p for p in parts if not account or p.strip().lower() != account.name.lower()]
        phrases = {p.strip() for p in descriptive if len(p.strip()) >= _MIN_PHRASE}
        phrases |= {re.sub(r"\s*\(.*?\)\s*", " ", p).strip() for p in phrases}  # without "(40 vans)"
        terms = {w.strip("(),.") for w in opp.name.split() if _PRODUCT.match(w.strip("(),."))}
        self.products[opp.id] = frozenset(t.lower() for t in terms)
        return {p for p in phrases | terms if p}

    def mentions(self, text: str) -> dict[int, set[str]]:
        """Opportunity id -> the distinct phrases of it found in `text` (lower-cased)."""
        doc = self.nlp.make_doc(text[:20_000])
        found: dict[int, set[str]] = {}
        for label in {label for label, _, _ in self.matcher(doc)}:
            phrase, ids = self.owners[label]
            for opp_id in ids:
                found.setdefault(opp_id, set()).add(phrase)
        return found

    def score(self, opp_id: int, mentions: dict[int, set[str]]) -> float:
        """0..1: how strongly the mentions point at this opportunity (its name beats its products)."""
        hits = mentions.get(opp_id, set())
        if not hits:
            return 0.0
        products = self.products.get(opp_id, frozenset())
        named = any(h not in products for h in hits)
        product_share = len(hits & products) / len(products) if products else 0.0
        return min(1.0, (0.6 if named else 0.0) + 0.4 * product_share)


_lock = threading.Lock()
_current: PhraseIndex | None = None


def index_for(crm: CrmSnapshot) -> PhraseIndex:
    """The phrase index of this CRM snapshot, built once per snapshot."""
    global _current  # noqa: PLW0603 - one index per live snapshot, swapped when the CRM changes
    with _lock:
        if _current is None or _current.crm is not crm:
            _current = PhraseIndex(crm)
        return _current
