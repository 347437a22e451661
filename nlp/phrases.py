"""CRM phrases: a spaCy PhraseMatcher over opportunity and product names, built from the CRM itself.

A blank pipeline (tokeniser only: no model download, any language's names) and one matcher whose
labels are opportunity ids. Each open opportunity contributes its name without the account prefix
("Acme - FleetSense rollout (40 vans)" -> "FleetSense rollout (40 vans)", "FleetSense rollout") and
its product terms: CamelCase or upper-case words ("FleetSense", "RouteIQ", "SCADA") are product names
in practice. Matching is case-insensitive on tokens, so "fleetsense" and "FLEETSENSE" hit too.
The index is rebuilt whenever the CRM snapshot changes (a new import or an approval).

With a statistical pipeline configured (`matching.spacy_model`, see nlp/pipeline.py) the same index
tokenises with that pipeline and its NER finds ORG, MONEY and DATE entities; `new_account_names`
keeps the organisations the CRM does not know. `build_index` loads the pipeline (a ConfigError when it
is missing) and is called once per CRM snapshot; `index_for` returns the index of a snapshot.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import spacy
from spacy.lang import lex_attrs
from spacy.matcher import PhraseMatcher

from nlp.pipeline import NO_ENTITIES, Entities, entities_of, load_pipeline, recognises_entities

if TYPE_CHECKING:
    from storage.records import CrmSnapshot, OpportunityRef

_SEPARATORS = re.compile(r"\s+[-–—:|/]\s+")
_PRODUCT = re.compile(
    r"^(?:[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+|[A-Z]{3,}[0-9]*|[A-Za-z]+[0-9]+[A-Za-z0-9]*)$"
)
_MIN_PHRASE = 4
_MAX_TEXT = 20_000  # characters of a text that are tokenised; quoted history is already stripped
_ENTITY_CACHE = 512  # texts whose entities are kept: a thread re-reads its earlier messages per arrival
_MENTION_CACHE = 8192  # messages whose phrase mentions are kept, for the same reason


@dataclass
class PhraseIndex:
    """Which open opportunities' phrases a text mentions; build with `index_for(crm)`."""

    crm: CrmSnapshot
    nlp: spacy.language.Language = field(default_factory=lambda: spacy.blank("en"))
    products: dict[int, frozenset[str]] = field(default_factory=dict)  # opportunity id -> product terms
    phrases_of: dict[int, frozenset[str]] = field(default_factory=dict)  # opportunity id -> its phrases

    def __post_init__(self) -> None:
        self.ner = recognises_entities(self.nlp)
        self._entities: OrderedDict[str, Entities] = OrderedDict()
        self._mentions: OrderedDict[bytes, frozenset[str]] = OrderedDict()  # by the text's digest
        self._cache_lock = threading.Lock()  # guards the caches; the model runs outside it
        self.matcher = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        # One label per distinct phrase, however many opportunities share it ("FleetSense" names many):
        # a mention then costs one match, not one per opportunity.
        # A match is read as its phrase; which opportunities own it is asked only of a thread's own
        # candidates (a product term can name thousands of deals in a big CRM).
        for opportunities in self.crm.open_opportunities.values():
            for opp in opportunities:
                self.phrases_of[opp.id] = frozenset(phrase.lower() for phrase in self._phrases(opp))
        known = frozenset().union(*self.phrases_of.values())
        self._phrase_of: dict[int, str] = {}
        patterns = []
        for phrase in sorted(known):
            self._phrase_of[self.nlp.vocab.strings.add(f"phrase:{phrase}")] = phrase
            patterns.append(self.nlp.make_doc(phrase))
            self.matcher.add(f"phrase:{phrase}", [patterns[-1]])
        # Names that are not a new account: the CRM's accounts, and its opportunity and product phrases.
        self._known_orgs = {a.name.lower() for a in self.crm.accounts.values()} | known
        self._keys = _Keys.of(self.nlp, patterns)
        # Tokens never span a line break, and a match spans one only through a token that holds one: a
        # pattern's (none has) or a special case's of the tokeniser (a blank one's: none but "\n" itself).
        rules = getattr(self.nlp.tokenizer, "rules", None)
        self._line_local = (
            isinstance(rules, dict)
            and all(rule == "\n" or "\n" not in rule for rule in rules)
            and not any("\n" in token.text for pattern in patterns for token in pattern)
        )

    def _phrases(self, opp: OpportunityRef) -> set[str]:
        account = self.crm.accounts.get(opp.account_id)
        parts = [p for p in _SEPARATORS.split(opp.name) if p.strip()]
        descriptive = [p for p in parts if not account or p.strip().lower() != account.name.lower()]
        phrases = {p.strip() for p in descriptive if len(p.strip()) >= _MIN_PHRASE}
        phrases |= {re.sub(r"\s*\(.*?\)\s*", " ", p).strip() for p in phrases}  # without "(40 vans)"
        terms = {w.strip("(),.") for w in opp.name.split() if _PRODUCT.match(w.strip("(),."))}
        self.products[opp.id] = frozenset(t.lower() for t in terms)
        return {p for p in phrases | terms if p}

    def mentions(self, text: str) -> frozenset[str]:
        """The distinct opportunity and product phrases found in `text` (lower-cased); which deals they
        name is `phrases_of[opp_id] & mentions`. Cached: a thread's messages are read again on every
        arrival, and tokenising is the cost of this stage."""
        text = text[:_MAX_TEXT]
        reading = self._reading(text)
        if reading is None:
            return frozenset()  # no phrase's key is in the text: no phrase can match, nothing to tokenise
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()  # not the text
        with self._cache_lock:
            found = self._mentions.get(key)
            if found is not None:
                self._mentions.move_to_end(key)
                return found
        doc = self.nlp.make_doc(reading)
        found = frozenset(self._phrase_of[label] for label, _, _ in self.matcher(doc))
        with self._cache_lock:
            self._mentions[key] = found
            if len(self._mentions) > _MENTION_CACHE:
                self._mentions.popitem(last=False)
        return found

    def _reading(self, text: str) -> str | None:
        """What of `text` is tokenised: None when it holds no phrase's key; else, where a match lies within
        one line, the lines that hold a key (the matcher finds the same phrases in them as in the text)."""
        if self._keys is None:
            return text
        keys = self._keys.found_in(text)
        if not keys:
            return None
        if not self._line_local or "\n" not in text:
            return text
        return "\n".join(line for line in text.split("\n") if any(key in _folded(line) for key in keys))

    def forget(self) -> None:
        """Drop the cached readings (a benchmark times cold reading)."""
        with self._cache_lock:
            self._mentions.clear()
            self._entities.clear()

    def hits(self, opp_id: int, mentions: frozenset[str]) -> frozenset[str]:
        """The phrases of this opportunity among `mentions`."""
        return mentions & self.phrases_of.get(opp_id, frozenset())

    def score(self, opp_id: int, hits: frozenset[str]) -> float:
        """0..1: how strongly `hits`, this opportunity's phrases in the text, point at it (its name beats
        its products)."""
        if not hits:
            return 0.0
        products = self.products.get(opp_id, frozenset())
        named = any(h not in products for h in hits)
        product_share = len(hits & products) / len(products) if products else 0.0
        return min(1.0, (0.6 if named else 0.0) + 0.4 * product_share)

    def entities(self, text: str) -> Entities:
        """ORG, MONEY and DATE entities in `text` by the statistical pipeline; none with the blank one."""
        if not self.ner:
            return NO_ENTITIES
        text = text[:_MAX_TEXT]  # the cache never holds more of a (possibly huge, hostile) body than that
        with self._cache_lock:
            found = self._entities.get(text)
            if found is not None:
                self._entities.move_to_end(text)
                return found
        found = entities_of(self.nlp(text))
        with self._cache_lock:
            self._entities[text] = found
            if len(self._entities) > _ENTITY_CACHE:
                self._entities.popitem(last=False)
        return found

    def new_account_names(self, text: str) -> tuple[str, ...]:
        """Organisations named in `text` that are neither CRM accounts nor opportunity or product phrases."""
        return tuple(org for org in self.entities(text).orgs if org.lower() not in self._known_orgs)


_GRAM = 4  # characters of a key word that index it when there are many
_FEW_KEYS = 32  # up to this many key words are looked for one by one


def _folded(text: str) -> str:
    """Lower-cased as spaCy's LOWER attribute is, but the same for a string and any part of it: str.lower()
    maps every character on its own except capital sigma (final or not by context), so sigma is one letter."""
    return text.lower().replace("ς", "σ")


@dataclass(frozen=True, slots=True)
class _Keys:
    """A cheap test that rules a text out before it is tokenised: one token of each phrase (its longest),
    folded. A PhraseMatcher on LOWER matches a phrase only where the text has a token whose text, lower-cased,
    is each of the phrase's tokens; a token is a piece of the text, so the text folded contains the key."""

    few: tuple[str, ...]  # looked for one by one: all keys when there are few, else the short ones
    by_gram: dict[str, tuple[str, ...]]  # the other keys by their first _GRAM characters

    @classmethod
    def of(cls, nlp: spacy.language.Language, patterns: list[spacy.tokens.Doc]) -> _Keys | None:
        """None (tokenise every text) when the pipeline lower-cases tokens other than by str.lower()."""
        getters = getattr(nlp.vocab, "lex_attr_getters", {})  # Cython attributes: no type stubs
        if getters.get(importlib.import_module("spacy.attrs").LOWER) is not lex_attrs.lower:
            return None
        keys = set()
        for pattern in patterns:
            tokens = [token.lower_ for token in pattern]
            if not tokens:
                return None
            keys.add(_folded(max(tokens, key=len)))
        ordered = sorted(keys)
        if len(ordered) <= _FEW_KEYS:
            return cls(tuple(ordered), {})
        by_gram: dict[str, list[str]] = {}
        for key in ordered:
            if len(key) >= _GRAM:
                by_gram.setdefault(key[:_GRAM], []).append(key)
        few = tuple(key for key in ordered if len(key) < _GRAM)
        return cls(few, {gram: tuple(found) for gram, found in by_gram.items()})

    def found_in(self, text: str) -> list[str]:
        """The keys in `text` (none: no phrase is)."""
        folded = _folded(text)
        found = [key for key in self.few if key in folded]
        if self.by_gram:
            grams = {folded[i : i + _GRAM] for i in range(len(folded) - _GRAM + 1)}
            found += [
                key for gram in grams & self.by_gram.keys() for key in self.by_gram[gram] if key in folded
            ]
        return found


_lock = threading.Lock()
_current: PhraseIndex | None = None
_model: str | None = None  # matching.spacy_model, as last passed to build_index


def build_index(crm: CrmSnapshot, spacy_model: str | None) -> PhraseIndex:
    """Build the pipeline and phrase index for a new CRM snapshot and make it current.

    Called when the daemon starts and whenever the CRM changes; raises ConfigError when `spacy_model`
    names a pipeline that is not installed.
    """
    global _current, _model  # one index per live snapshot, swapped when the CRM changes
    index = PhraseIndex(crm, nlp=load_pipeline(spacy_model))
    with _lock:
        _current, _model = index, spacy_model
    return index


def forget() -> None:
    """Drop the current index's cached readings (a benchmark times cold reading)."""
    with _lock:
        index = _current
    if index is not None:
        index.forget()


def index_for(crm: CrmSnapshot) -> PhraseIndex:
    """The phrase index of this CRM snapshot, built once per snapshot (with the last configured pipeline)."""
    global _current  # noqa: PLW0603 - one index per live snapshot, swapped when the CRM changes
    with _lock:
        if _current is None or _current.crm is not crm:
            _current = PhraseIndex(crm, nlp=load_pipeline(_model))
        return _current
