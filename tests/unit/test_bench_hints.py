"""The benchmarks' hints are commands a user can paste (rich markup must not eat `[model]`)."""

from __future__ import annotations

from rich.console import Console

from bench import model_bench


def test_missing_model_hint_is_the_install_command_from_the_checkout():
    console = Console(record=True, width=300)
    assert model_bench.run(model="no_such_spacy_pipeline", console=console) == {}
    assert "pip install -e '.[model]' to run it" in console.export_text()
