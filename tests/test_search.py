"""device.search: query checking, ranking, scores and paging over a real bundle."""

from __future__ import annotations

import numpy as np
import pytest

from device.bundle import Bundle
from device.errors import QueryInvalid
from device.search import MAX_K, MAX_QUERY_CHARS, Searcher, SearcherOptions, check_query


@pytest.fixture(scope="module")
def searcher(bundle_dir):
    with Searcher.from_bundle(bundle_dir) as opened:
        yield opened


# --- check_query -----------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a red car", "a red car"),
        ("  a cat on a sofa \n", "a cat on a sofa"),
        ("\tbeach\r\n", "beach"),
        ("café", "café"),
        ("Katze", "Katze"),
        ("猫", "猫"),
        ("2021", "2021"),
        ("dogs\tand\ncats", "dogs\tand\ncats"),  # tab and newline are plain text
        ("x" * MAX_QUERY_CHARS, "x" * MAX_QUERY_CHARS),
        ("   " + "y" * MAX_QUERY_CHARS + "   ", "y" * MAX_QUERY_CHARS),  # length counted after strip
    ],
)
def test_check_query_accepts_and_strips(raw, expected):
    assert check_query(raw) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        (None, "must be text"),
        (42, "must be text"),
        (b"a cat", "must be text"),
        (["a cat"], "must be text"),
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("x" * (MAX_QUERY_CHARS + 1), f"{MAX_QUERY_CHARS + 1} characters long; the limit is {MAX_QUERY_CHARS}"),
        ("a cat\x00", "control characters"),
        ("\x1b[31mred", "control characters"),
        ("cat\x7f", "control characters"),
        ("!!!", "no letters or digits"),
        ("... ?! --", "no letters or digits"),
    ],
)
def test_check_query_refuses(raw, message):
    with pytest.raises(QueryInvalid, match=message.replace("[", r"\[")):
        check_query(raw)


def test_check_query_custom_limit():
    assert check_query("abcde", max_chars=5) == "abcde"
    with pytest.raises(QueryInvalid, match="the limit is 5"):
        check_query("abcdef", max_chars=5)


def test_query_invalid_is_a_value_error():
    with pytest.raises(ValueError):
        check_query("")


# --- ranking ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "query, expected",
    [("a cup of coffee", "kitchen/coffee.png"), ("a cat", "pets/cat.png"),
     ("a rocket", "space/rocket.jpg"), ("a motorcycle", "garage/motorcycle.png")],
)
def test_query_ranks_the_matching_photo_first(searcher, query, expected):
    results = searcher.search(query, k=3)
    assert len(results) == 3
    assert results[0].item.path == expected
    assert [r.rank for r in results] == [1, 2, 3]
    assert len({r.item.id for r in results}) == 3


def test_query_is_stripped_before_search(searcher):
    plain = searcher.search("a cat", k=8)
    padded = searcher.search("   a cat \n", k=8)
    assert [(r.item.id, r.score) for r in padded] == [(r.item.id, r.score) for r in plain]


def test_scores_are_descending_cosines(searcher):
    query = "a cup of coffee"
    results = searcher.search(query, k=8)
    assert len(results) == 8  # the whole bundle
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)

    vector = searcher.encoder.embed(query)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    embeddings = np.asarray(searcher.bundle.embeddings)
    for result in results:
        row = searcher.bundle.row(result.item.id)
        assert result.score == pytest.approx(float(embeddings[row] @ vector), abs=1e-5)
        assert -1.0 <= result.score <= 1.0


def test_k_larger_than_the_bundle_gives_every_photo(searcher):
    results = searcher.search("a photo", k=MAX_K)
    assert sorted(r.item.path for r in results) == sorted(item.path for item in searcher.bundle.items)
    assert [r.rank for r in results] == list(range(1, 9))


def test_offset_pages_continue_the_same_ranking(searcher):
    query = "a cup of coffee"
    full = searcher.search(query, k=8)
    pages = [searcher.search(query, k=3, offset=offset) for offset in (0, 3, 6)]

    assert [len(page) for page in pages] == [3, 3, 2]
    joined = [r for page in pages for r in page]
    assert [(r.rank, r.item.id) for r in joined] == [(r.rank, r.item.id) for r in full]
    assert [r.rank for r in pages[1]] == [4, 5, 6]
    assert [r.score for r in joined] == pytest.approx([r.score for r in full], abs=1e-6)


def test_offset_past_the_end_gives_no_results(searcher):
    assert searcher.search("a cat", k=5, offset=8) == []
    assert searcher.search("a cat", k=5, offset=100_000) == []


@pytest.mark.parametrize("k", [0, -1, "abc", None, 1.5j, MAX_K + 1, 100_000])
def test_bad_k_is_refused(searcher, k):
    with pytest.raises(QueryInvalid, match="k"):
        searcher.search("a cat", k=k)


@pytest.mark.parametrize("offset", [-1, "later", None, 100_001])
def test_bad_offset_is_refused(searcher, offset):
    with pytest.raises(QueryInvalid, match="offset"):
        searcher.search("a cat", k=3, offset=offset)


@pytest.mark.parametrize("query", ["", "   ", "!!!", "x" * (MAX_QUERY_CHARS + 1), "cat\x00", 7])
def test_bad_query_is_refused_by_search(searcher, query):
    with pytest.raises(QueryInvalid):
        searcher.search(query)


def test_max_query_chars_option(bundle_dir):
    with Searcher.create_from_options(SearcherOptions(bundle_dir=bundle_dir, verify="quick",
                                                      max_query_chars=10)) as short:
        assert short.search("a cat", k=1)[0].item.path == "pets/cat.png"
        with pytest.raises(QueryInvalid, match="the limit is 10"):
            short.search("a cat on a sofa", k=1)


def test_search_vector_with_an_items_own_embedding(searcher):
    bundle = searcher.bundle
    for row, item in enumerate(bundle.items):
        results = searcher.search_vector(np.asarray(bundle.embeddings[row]), k=3)
        assert results[0].item.id == item.id
        assert results[0].rank == 1
        assert results[0].score == pytest.approx(1.0, abs=1e-4)
        assert results[1].score < results[0].score


def test_result_to_json(searcher):
    result = searcher.search("a cat", k=1)[0]
    doc = result.to_json()
    assert doc["rank"] == 1
    assert doc["path"] == "pets/cat.png"
    assert doc["id"] == result.item.id
    assert doc["thumb"] == result.item.thumb
    assert (doc["width"], doc["height"]) == (result.item.width, result.item.height)
    assert doc["taken"] is None
    assert isinstance(doc["score"], float)
    assert doc["score"] == pytest.approx(result.score, abs=1e-6)


def test_search_after_close_fails(bundle_dir):
    opened = Searcher.from_bundle(bundle_dir, verify="quick")
    opened.close()
    with pytest.raises(ValueError, match="closed"):
        opened.search("a cat")


def test_paging_shows_every_photo_once_even_with_twin_photos(searcher):
    original = searcher.bundle
    base = np.array(original.embeddings)
    n = len(original.items)
    for twin_of in range(n):
        for twin in range(n):
            if twin == twin_of:
                continue
            embeddings = base.copy()
            embeddings[twin] = embeddings[twin_of]
            twins = Searcher(Bundle(original.path, original.manifest, original.spec, original.items, embeddings),
                             searcher.encoder, searcher.options)
            for query_row in range(n):
                query = embeddings[query_row]
                shown = [r.item.id for offset in range(n)
                         for r in twins.search_vector(query, k=1, offset=offset)]
                assert sorted(shown) == sorted(item.id for item in original.items), (twin_of, twin, query_row)
