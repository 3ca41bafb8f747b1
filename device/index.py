"""Nearest-neighbour search over a bundle's item embeddings.

:class:`ExactIndex` scores every item with one matrix-vector product (the
embeddings are memory-mapped, so only the pages a search touches are read).
Scores are cosine similarities because every row and every query is unit length.
"""

from __future__ import annotations

import numpy as np


class ExactIndex:
    """Exhaustive maximum-inner-product search.

    Args:
        embeddings: (items, dim) float32, unit rows (a memory map is fine).
    """

    def __init__(self, embeddings: np.ndarray):
        self._embeddings = embeddings

    def __len__(self) -> int:
        return int(self._embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self._embeddings.shape[1])

    def scores(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``query`` with every item, float32 (items,)."""
        return self._embeddings @ np.asarray(query, dtype=np.float32)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for ``query``.

        Returns:
            (rows, scores): int64 and float32 arrays of length ``min(k, items)``,
            best first; ties broken by row so results are repeatable.
        """
        scores = self.scores(query)
        return top_k(scores, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and values of the ``k`` largest ``scores``, best first (stable on ties)."""
    n = scores.shape[0]
    k = max(0, min(int(k), n))
    if k == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if k < n:
        # Everything above the k-th score, then the rows tied with it in row
        # order: paging with a growing k then never shows one twin twice.
        kth = -np.partition(-scores, k - 1)[k - 1]
        above = np.flatnonzero(scores > kth)
        tied = np.flatnonzero(scores == kth)[: k - above.size]
        candidates = np.concatenate([above, tied])
    else:
        candidates = np.arange(n)
    order = np.lexsort((candidates, -scores[candidates]))
    rows = candidates[order].astype(np.int64)
    return rows, scores[rows].astype(np.float32)
