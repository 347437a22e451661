"""What a decision's edits may say, and the short forms people type for proposal keys."""

from __future__ import annotations

import pytest

from config.errors import DecisionError
from config.settings import load_settings
from mailsync.approval.decisions import DecisionRequest, clean_edits, short_id, short_length
from tests.conftest import write_config


@pytest.fixture
def stages(tmp_path):
    config = write_config(tmp_path, '[stage_map]\n"verbal yes" = "negotiation"\n')
    return load_settings(config).stage_for


def edits(stages, verdict="approve", **given):
    return clean_edits(DecisionRequest("k", verdict, "dana@northwind.example", "reply", given), stages)


def test_edits_are_normalised(stages):
    assert edits(stages, Amount="50000", currency=" eur ", stage="Verbal Yes", close_date="2026-03-31") == {
        "amount": "50000.00",
        "currency": "EUR",
        "stage": "negotiation",  # the config's [stage_map] applies
        "close_date": "2026-03-31",
    }
    assert edits(stages, amount="1234.5", stage="Closed Won") == {"amount": "1234.50", "stage": "closed_won"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", "50.000,00", "bad amount '50.000,00': not a plain number"),
        ("amount", "0", "bad amount '0': an amount is a number above 0"),
        ("amount", "NaN", "bad amount 'NaN': an amount is a number above 0"),
        ("amount", "1e20", "bad amount '1e20': an amount is a number above 0"),
        ("currency", "EURO", "bad currency 'EURO': not an ISO 4217 currency code"),
        ("stage", "almost", "bad stage 'almost': not a stage"),
        ("close_date", "tomorrow", "bad close_date 'tomorrow': not a date"),
        ("name", "two\nlines", "bad name 'two\\nlines': a name is one line of up to 300 characters"),
        ("owner", "sam", "cannot edit 'owner'"),
    ],
)
def test_a_bad_edit_names_the_field_and_the_fix_says_what_it_takes(stages, field, value, message):
    with pytest.raises(DecisionError) as caught:
        edits(stages, **{field: value})
    assert caught.value.reason == "bad_edit"
    assert str(caught.value) == message
    assert caught.value.fix


def test_the_fix_for_a_bad_stage_lists_the_stages(stages):
    with pytest.raises(DecisionError) as caught:
        edits(stages, stage="almost")
    assert (
        "qualification, discovery, demo, proposal, negotiation, closed_won, closed_lost" in caught.value.fix
    )


def test_edits_go_with_approve_only(stages):
    with pytest.raises(DecisionError) as caught:
        edits(stages, "reject", amount="5")
    assert caught.value.reason == "bad_edit"


def test_short_forms_are_stable_and_grow_until_unique():
    keys = [f"link:{n}@acme.example" for n in range(20_000)]
    length = short_length(keys)
    assert length == 8  # 20,000 keys share 6 and 7 hex digits somewhere (birthday odds); 8 tell them apart
    assert len({short_id(k, length) for k in keys}) == len(keys)
    assert short_id("link:1@acme.example") == short_id("link:1@acme.example", 6)
    assert short_length(["a", "b"]) == 6
