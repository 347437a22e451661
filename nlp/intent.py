"""The learned intent of one message: what a customer's own words say about a deal.

The phrase families in nlp/signals.py are precise, but they only know the wordings somebody wrote down.
A small spaCy text classifier (bag of words and word pairs, four exclusive classes: neutral, intent,
won, lost) is trained sentence by sentence on the labelled dev corpus by `make train`
(mailsync/evaluation/train.py) and shipped in nlp/models/intent/ with per-class thresholds calibrated
on sellers it did not see. A message says what its strongest sentence says, and that sentence is the
evidence the rep is shown. The rules stay the evidence of record; the classifier adds recall where
they find nothing. It runs only on what people outside the company wrote, and a sentence is
classified once (a thread is re-read on every new message).

Nothing is downloaded: the model is a directory in the package. Without it (a checkout whose model was
removed) classification is off and matching runs on the rules alone.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import spacy
import structlog

from nlp.clean import sentences

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from spacy.pipeline import TrainablePipe

log = structlog.get_logger()
MODEL_DIR = Path(__file__).with_name("models") / "intent"
LABELS = ("neutral", "intent", "won", "lost")
_READ = ("won", "lost", "intent")  # what a sentence can be read as; neutral is the absence of the rest
CALIBRATION = "calibration.json"  # the thresholds `make train` chose, beside the model
_CACHE = 8192  # texts; a thread's messages are classified again on every arrival
_FOUND = 2048  # find()'s answers kept, by text: a thread's messages are read again per arrival
_READ_AHEAD = 2048  # sentences classified in one pass by read_ahead (at most _CACHE)


_MAX_CHARS = 5000  # the start of a long mail says what it is about


def model_text(text: str, attachments: Sequence[str]) -> str:
    """What the classifier reads of a message: its own text, then its attachments by name."""
    names = " ".join(attachments)
    return f"{text}\nattachments: {names}" if names else text


def prepared(text: str) -> str:
    """The form the model is trained on and applied to: case folded (its n-grams are case-sensitive)."""
    return text[:_MAX_CHARS].lower()


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str  # the most likely class
    probability: float
    scores: dict[str, float]


# find()'s reading of a text: its sentences, their verdicts, and its answer with the thresholds it is for.
_Found = tuple[list[str], list[Verdict], tuple[tuple[str, float], ...], tuple[str, str] | None]


class IntentModel:
    """The shipped classifier with its calibrated thresholds (label -> minimum probability).

    Verdicts are cached by what the model reads of a sentence: a thread is re-read on every arrival.
    A message's new sentences go through the model as one batch (one forward pass, not one per
    sentence). spaCy does not promise that one pipeline may run in several threads at once, and the
    daemon serves its web app from a thread pool, so the model and its cache sit behind a lock.
    """

    def __init__(self, directory: Path) -> None:
        self.nlp = spacy.load(directory)
        self.thresholds: dict[str, float] = json.loads((directory / CALIBRATION).read_text())["thresholds"]
        self._textcat = cast("TrainablePipe", self.nlp.get_pipe("textcat"))
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Verdict] = OrderedDict()
        # find()'s sentences and verdicts by text, with its answer and the thresholds that answer is for
        self._found: dict[str, _Found] = {}

    def classify(self, text: str) -> Verdict:
        return self.classify_many([text])[0]

    def forget(self) -> None:
        """Drop the cached verdicts (a benchmark times cold reading)."""
        with self._lock:
            self._cache.clear()
            self._found.clear()

    def classify_many(self, texts: Sequence[str]) -> list[Verdict]:
        seen = [prepared(text) for text in texts]
        with self._lock:
            new = [text for text in dict.fromkeys(seen) if text not in self._cache]
            docs = [self.nlp.make_doc(text) for text in new]
            docs = list(self._textcat.pipe(docs, batch_size=max(1, len(docs))))  # one forward pass
            for text, doc in zip(new, docs, strict=True):
                label = max(doc.cats, key=doc.cats.__getitem__)
                self._cache[text] = Verdict(label, doc.cats[label], dict(doc.cats))
            for text in seen:
                self._cache.move_to_end(text)
            while len(self._cache) > _CACHE:
                self._cache.popitem(last=False)
            return [self._cache[text] for text in seen]

    def find(self, text: str) -> tuple[str, str] | None:
        """The strongest sentence of `text` whose probability of won, lost or intent reaches that class's
        calibrated threshold (likeliest class or not), as (class, sentence); outcomes before intent;
        None if none does."""
        now = tuple(self.thresholds.items())  # the answer is for the thresholds as they are now
        with self._lock:
            known = self._found.get(text)
        if known is not None and known[2] == now:
            return known[3]
        if known is None:  # a thread's earlier messages are read again on every arrival: split them once
            split = sentences(text[:_MAX_CHARS])
            verdicts = self.classify_many(split)
        else:
            split, verdicts = known[0], known[1]
        return self._keep(text, split, verdicts, now)

    def read_ahead(self, texts: Iterable[str]) -> None:
        """find() for each of `texts` later answers from what this reads now: the sentences of all those
        not read yet go through the model as one batch (a batch of mail at a time: a pass per message
        took 2.5 times as long)."""
        now = tuple(self.thresholds.items())
        with self._lock:
            new = [text for text in dict.fromkeys(texts) if text not in self._found]
        splits = [(text, sentences(text[:_MAX_CHARS])) for text in new]
        while splits:
            batch = [splits.pop()]  # up to _READ_AHEAD sentences a pass: the cache must hold one
            size = len(batch[0][1])
            while splits and size + len(splits[-1][1]) <= _READ_AHEAD:
                size += len(splits[-1][1])
                batch.append(splits.pop())
            verdicts = iter(self.classify_many([sentence for _, split in batch for sentence in split]))
            for text, split in batch:
                self._keep(text, split, [next(verdicts) for _ in split], now)

    def _keep(
        self, text: str, split: list[str], verdicts: list[Verdict], now: tuple[tuple[str, float], ...]
    ) -> tuple[str, str] | None:
        answer = self._strongest(split, verdicts)
        with self._lock:
            if text not in self._found and len(self._found) >= _FOUND:
                self._found.clear()
            self._found[text] = (split, verdicts, now, answer)
        return answer

    def _strongest(self, split: list[str], verdicts: list[Verdict]) -> tuple[str, str] | None:
        best: tuple[int, float, str, str] | None = None
        for sentence, verdict in zip(split, verdicts, strict=True):
            for label in _READ:
                probability = verdict.scores[label]
                if probability < self.thresholds.get(label, 1.01):
                    continue
                rank = (0 if label == "intent" else 1, probability, label, sentence)
                if best is None or rank[:2] > best[:2]:
                    best = rank
        return None if best is None else (best[2], best[3][:400])


_loaded: dict[Path, IntentModel | None] = {}
_loading = threading.Lock()
_active = [MODEL_DIR]  # the model in use; the evaluation swaps in one that never saw the set it scores


def shipped() -> IntentModel | None:
    """The model in use (nlp/models/intent), loaded once; None when it is not there or cannot load.

    A model that does not load (a spaCy version it was not trained with, a damaged directory) turns
    classification off with one warning: matching goes on with the rules alone.
    """
    directory = _active[-1]
    with _loading:
        if directory not in _loaded:
            _loaded[directory] = _load(directory)
        return _loaded[directory]


def _load(directory: Path) -> IntentModel | None:
    if not (directory / CALIBRATION).is_file():
        return None
    try:
        return IntentModel(directory)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        log.warning("intent_model_unusable", directory=str(directory), error=str(exc).splitlines()[0][:200])
        return None


@contextlib.contextmanager
def using(directory: Path) -> Iterator[None]:
    """Classify with the model in `directory` inside the block (cross-validated evaluation)."""
    _active.append(directory)
    try:
        yield
    finally:
        _active.pop()
        with _loading:
            _loaded.pop(directory, None)
