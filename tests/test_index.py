"""device.index: exact top-k search against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from device.index import ExactIndex, top_k


def _unit_rows(rng, n, dim):
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _brute_force(scores, k):
    """Best first; on equal scores the lower row first."""
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n, dim", [(1, 8), (10, 16), (257, 32), (2000, 64)])
def test_exact_index_matches_brute_force(seed, n, dim):
    rng = np.random.default_rng(seed)
    embeddings = _unit_rows(rng, n, dim)
    query = _unit_rows(rng, 1, dim)[0]
    index = ExactIndex(embeddings)
    assert len(index) == n and index.dim == dim
    brute = embeddings @ query
    exact = embeddings.astype(np.float64) @ query.astype(np.float64)

    for k in sorted({1, 2, 5, n // 2, n - 1, n} - {0}):
        rows, scores = index.search(query, k)
        expected_rows, _ = _brute_force(brute, k)
        assert rows.dtype == np.int64 and scores.dtype == np.float32
        assert rows.tolist() == expected_rows.tolist()
        np.testing.assert_allclose(scores, exact[rows], atol=1e-5)
        assert (np.diff(scores) <= 0).all()


def test_scores_are_cosine_similarities():
    rng = np.random.default_rng(7)
    embeddings = _unit_rows(rng, 50, 24)
    query = _unit_rows(rng, 1, 24)[0]
    scores = ExactIndex(embeddings).scores(query)
    assert scores.shape == (50,)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, embeddings @ query, atol=1e-6)
    assert (np.abs(scores) <= 1.0 + 1e-6).all()
    # A row searched with itself is its own best match, at cosine 1.
    rows, best = ExactIndex(embeddings).search(embeddings[17], 1)
    assert rows.tolist() == [17]
    assert best[0] == pytest.approx(1.0, abs=1e-5)


def test_exact_index_on_a_memory_map(tmp_path):
    rng = np.random.default_rng(3)
    embeddings = _unit_rows(rng, 100, 16)
    np.save(tmp_path / "e.npy", embeddings)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    query = _unit_rows(rng, 1, 16)[0]

    rows, _ = ExactIndex(mapped).search(query, 10)

    assert rows.tolist() == _brute_force(embeddings @ query, 10)[0].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_top_k_matches_argsort(seed):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-1, 1, size=500).astype(np.float32)
    for k in (1, 3, 50, 499, 500):
        rows, values = top_k(scores, k)
        expected = np.argsort(-scores, kind="stable")[:k]
        assert rows.tolist() == expected.tolist()
        assert values.tolist() == scores[expected].tolist()


@pytest.mark.parametrize("k", [6, 7, 1000])
def test_k_larger_than_n_gives_everything_ranked(k):
    scores = np.array([0.1, 0.9, -0.3, 0.5, 0.7, 0.0], dtype=np.float32)
    rows, values = top_k(scores, k)
    assert rows.tolist() == [1, 4, 3, 0, 5, 2]
    assert values.tolist() == scores[[1, 4, 3, 0, 5, 2]].tolist()


@pytest.mark.parametrize("k", [0, -1, -100])
def test_k_zero_or_negative_gives_nothing(k):
    scores = np.array([0.1, 0.9, 0.5], dtype=np.float32)
    rows, values = top_k(scores, k)
    assert rows.shape == (0,) and values.shape == (0,)
    assert rows.dtype == np.int64 and values.dtype == np.float32


def test_empty_index():
    index = ExactIndex(np.zeros((0, 8), dtype=np.float32))
    rows, values = index.search(np.ones(8, dtype=np.float32) / np.sqrt(8), 5)
    assert len(index) == 0
    assert rows.shape == (0,) and values.shape == (0,)


def test_ties_broken_by_lower_row_when_all_are_returned():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5], dtype=np.float32)
    rows, _ = top_k(scores, 6)
    assert rows.tolist() == [1, 3, 0, 2, 5, 4]


def test_ties_broken_by_lower_row_inside_the_top_k():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5], dtype=np.float32)
    rows, _ = top_k(scores, 2)
    assert rows.tolist() == [1, 3]


def test_all_equal_scores_give_the_first_rows():
    rows, _ = top_k(np.zeros(20, dtype=np.float32), 5)
    assert rows.tolist() == [0, 1, 2, 3, 4]


def test_ties_at_the_cut_off_broken_by_lower_row():
    scores = np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32)
    rows, _ = top_k(scores, 1)
    assert rows.tolist() == [2]


def test_ties_at_the_cut_off_match_brute_force_on_coarse_scores():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        scores = rng.integers(0, 4, n).astype(np.float32)  # many ties
        k = int(rng.integers(1, n + 1))
        rows, _ = top_k(scores, k)
        assert rows.tolist() == np.argsort(-scores, kind="stable")[:k].tolist()


def test_top_k_prefix_is_consistent_without_ties():
    # The first k of top_k(n) are top_k(k): what paging relies on.
    rng = np.random.default_rng(11)
    scores = rng.normal(size=300).astype(np.float32)
    full, _ = top_k(scores, 300)
    for k in (1, 7, 64, 299):
        assert top_k(scores, k)[0].tolist() == full[:k].tolist()
