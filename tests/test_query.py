"""Query syntax: negative terms, weights, item references, quotes."""

from __future__ import annotations

import pytest

from device.errors import QueryInvalid
from device.query import Term, parse


@pytest.mark.parametrize("query, terms", [
    ("a cup of coffee", [Term(1.0, "a cup of coffee")]),
    ("beach -people", [Term(1.0, "beach"), Term(-1.0, "people")]),
    ("dog - cat", [Term(1.0, "dog"), Term(-1.0, "cat")]),
    ("2:dog + cat", [Term(2.0, "dog"), Term(1.0, "cat")]),
    ("sunset - 0.5:clouds", [Term(1.0, "sunset"), Term(-0.5, "clouds")]),
    ("a dog -people on bikes +2:cat", [Term(1.0, "a dog"), Term(-1.0, "people on bikes"), Term(2.0, "cat")]),
    ("@c2dd0de7c538df8d + night", [Term(1.0, item_id="c2dd0de7c538df8d"), Term(1.0, "night")]),
    ('"-5 degrees"', [Term(1.0, "-5 degrees")]),
    ('"2:1 ratio"', [Term(1.0, "2:1 ratio")]),  # found by test_query_properties: quotes keep weights literal
    ('cat - "0.5:1 scale"', [Term(1.0, "cat"), Term(-1.0, "0.5:1 scale")]),
    ("-5 degrees celsius", [Term(1.0, "-5 degrees celsius")]),
    ("t-shirt", [Term(1.0, "t-shirt")]),
    ("2: dog", [Term(2.0, "dog")]),
    ("@C2DD0DE7C538DF8D", [Term(1.0, item_id="c2dd0de7c538df8d")]),
    ("-@c2dd0de7c538df8d dog", [Term(-1.0, item_id="c2dd0de7c538df8d"), Term(1.0, "dog")]),
    ("dog 2:@c2dd0de7c538df8d", [Term(1.0, "dog"), Term(2.0, item_id="c2dd0de7c538df8d")]),
    ('"@home" party', [Term(1.0, "@home party")]),
    ("me@home", [Term(1.0, "me@home")]),
])
def test_parse(query, terms):
    assert parse(query) == terms


@pytest.mark.parametrize("query, message", [
    ("-people", "at least one term that is not excluded"),
    ("dog -", "ends with an operator"),
    ("+", "ends with an operator"),
    ("2:", "followed by a term"),
    ("0:dog", "weight must be above 0"),
    ("11:dog", "at most 10"),
    ("dog + !!!", "no letters or digits"),
    (" + ".join(f"w{i}" for i in range(9)), "the limit is 8"),
    ("@nonexistent", "no photo with id 'nonexistent'.*quote it: \"@nonexistent\""),
    ("dog + @c2dd0de7", "no photo with id 'c2dd0de7'"),
])
def test_parse_refuses(query, message):
    with pytest.raises(QueryInvalid, match=message):
        parse(query)


def test_negative_terms_push_results_away(bundle_dir):
    from device.search import Searcher

    with Searcher.from_bundle(bundle_dir) as searcher:
        plain = [r.item.path for r in searcher.search("space", k=8)]
        without = [r.item.path for r in searcher.search("space -rocket", k=8)]
        weighted = searcher.search("3:a cat + a cup of coffee", k=2)
        cancelled = "a cat - a cat"
        with pytest.raises(QueryInvalid, match="cancel"):
            searcher.search(cancelled)
    assert plain.index("space/rocket.jpg") < without.index("space/rocket.jpg")
    assert weighted[0].item.path == "pets/cat.png"


def test_item_reference_uses_the_stored_embedding(bundle_dir):
    from device.errors import ItemNotFound
    from device.search import Searcher

    with Searcher.from_bundle(bundle_dir) as searcher:
        cat = searcher.search("a cat", k=1)[0].item
        results = searcher.search(f"@{cat.id}", k=1)
        assert results[0].item.id == cat.id and results[0].score == pytest.approx(1.0, abs=1e-5)
        upper = searcher.search(f"@{cat.id.upper()}", k=1)
        assert upper[0].item.id == cat.id
        with pytest.raises(QueryInvalid, match="no photo with id '0000000000000000'"):
            searcher.search("@0000000000000000 + night")
        assert not issubclass(QueryInvalid, ItemNotFound)  # a 400 in the API, not a 404
