"""Fixtures for the optional statistical-pipeline tests: no model package needed."""

from __future__ import annotations

import pytest
import spacy

from nlp.phrases import build_index
from storage.records import CrmSnapshot


@pytest.fixture
def blank_afterwards():
    yield
    build_index(CrmSnapshot(), None)  # other tests' index_for() must get the blank pipeline again


@pytest.fixture
def mini_pipeline(tmp_path):
    """A saved blank pipeline whose entity ruler sets ORG/MONEY/DATE/PERSON as a model's NER would."""
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")  # a component matching never reads: excluded when loaded
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "ORG", "pattern": "Acme Logistics"},
            {"label": "ORG", "pattern": "Brightwater Utilities"},
            {"label": "ORG", "pattern": "FleetSense"},
            {"label": "MONEY", "pattern": [{"LOWER": "usd"}, {"LIKE_NUM": True}]},
            {"label": "DATE", "pattern": [{"LOWER": "march"}, {"IS_DIGIT": True}]},
            {"label": "PERSON", "pattern": "Rachel Kim"},
        ]
    )
    path = tmp_path / "mini_pipeline"
    nlp.to_disk(path)
    return str(path)
