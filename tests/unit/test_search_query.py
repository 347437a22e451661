"""The search query language: what a query means, and the FTS5 text it becomes (no operator from the user)."""

from __future__ import annotations

import pytest

from config.errors import SearchError
from storage.search import _fts5, excerpt
from storage.search_query import Query, Term, parse_query


def test_words_phrases_prefixes_alternatives_and_exclusions():
    query = parse_query('pricing "price list" pric* quote OR offer -invoice')
    assert query == Query(
        required=(
            (Term("pricing"),),
            (Term("price list", phrase=True),),
            (Term("pric", prefix=True),),
            (Term("quote"), Term("offer")),
        ),
        excluded=(Term("invoice"),),
    )
    assert (
        _fts5(query, None) == '"pricing" AND "price list" AND "pric" * AND ("quote" OR "offer") NOT "invoice"'
    )


@pytest.mark.parametrize(
    ("text", "fts5"),
    [
        ("NEAR(a b)", '"NEAR(a" AND "b)"'),
        ("col:val ^x", '"col:val" AND "^x"'),
        ('say "he said ""x"""', '"say" AND "he said " AND "x"'),  # quotes pair up; none leaks out
        ('a"b"', '"a" AND "b"'),
        ("AND and", '"and"'),  # the operator AND is implied; the word and is a word
        ("( ) * : -", ""),
    ],
)
def test_backend_syntax_in_a_query_stays_quoted_text(text, fts5):
    assert _fts5(parse_query(text), None) == fts5


def test_a_subject_filter_is_a_phrase_in_the_subject_column():
    assert _fts5(parse_query("wombat"), 'col "x"') == '"wombat" AND subject : "col ""x"""'


@pytest.mark.parametrize(
    "text", ['"open', "OR a", "a OR", "a OR OR b", "-a OR b", "NOT a", "-a", '"a b"*', "a.b*"]
)
def test_syntax_errors_name_a_fix(text):
    with pytest.raises(SearchError) as raised:
        parse_query(text)
    assert str(raised.value).startswith("search query: ")
    assert raised.value.fix


def test_an_excerpt_shows_the_first_word_found_outside_quoted_replies():
    body = "> pricing was quoted here\nHello.\n" + "filler " * 40 + "Our PRICING is attached.\n"
    cut = excerpt(body, ["pricing"], width=40)
    assert cut.startswith("…")
    assert "PRICING is attached" in cut
    assert "quoted" not in cut
    assert excerpt("> only pricing in the quote", ["pricing"]) == "> only pricing in the quote"
    assert excerpt("Größe\r\n\tder Flotte", []) == "Größe der Flotte"
