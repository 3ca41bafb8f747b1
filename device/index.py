"""Nearest-neighbour search over a bundle's item embeddings.

Two kinds of index, both answering with exact cosine scores:

- :class:`ExactIndex` (kind ``exact``) scores every item with one
  matrix-vector product. Best below a few tens of thousands of photos, where
  the text tower, not the scan, dominates a query.
- :class:`PartitionedIndex` (kind ``ivfpq``) is a faiss IVF-PQ index built on
  the host: k-means partitions of the items, each item stored as a product
  quantization code. A query visits the ``nprobe`` partitions nearest to it,
  ranks their codes approximately, and re-scores the best ``rerank`` exactly
  against the float32 embeddings, so the scores returned are exact cosines and
  only the order can differ from exhaustive search (recall below 1).

Both read memory-mapped files: opening an index reads its header, and a search
pages in only what it touches, so a million-photo bundle starts at once and its
resident memory stays small. Scores are cosine similarities because every row
and every query is unit length.

Use :func:`open_index` to open the index a bundle manifest describes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath

import numpy as np

from device.errors import BundleInvalid

#: Index kinds this device can search (the manifest's ``index.kind``).
INDEX_KINDS = ("exact", "ivfpq")
#: Bundles with more items than this get a partitioned index when the kind is
#: ``auto``. An exhaustive scan of 20k x 384 floats is about 2 ms on one x86
#: core and about 15 ms on a Pi 4: below that the text tower dominates anyway.
AUTO_EXACT_MAX_ITEMS = 20_000


def choose_kind(kind: str, items: int) -> str:
    """The index kind to build for ``items`` items.

    Args:
        kind: ``auto`` (exact up to :data:`AUTO_EXACT_MAX_ITEMS` items, ``ivfpq``
            above), or a kind from :data:`INDEX_KINDS` to force it.
        items: number of items in the bundle.

    Raises:
        ValueError: unknown kind.
    """
    if kind == "auto":
        return "exact" if items <= AUTO_EXACT_MAX_ITEMS else "ivfpq"
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be auto or one of {', '.join(INDEX_KINDS)}, not {kind!r}")
    return kind


class ExactIndex:
    """Exhaustive maximum-inner-product search.

    Args:
        embeddings: (items, dim) float32, unit rows (a memory map is fine).
    """

    kind = "exact"

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


@dataclasses.dataclass(frozen=True)
class PartitionedParams:
    """Search-time parameters of a :class:`PartitionedIndex` (from the manifest).

    Attributes:
        nprobe: partitions visited per query.
        rerank: approximate candidates re-scored exactly per query (at least ``k``).
    """

    nprobe: int
    rerank: int


class PartitionedIndex:
    """Partitioned, product-quantized search with exact re-scoring (kind ``ivfpq``).

    Use :meth:`open`. Thread-safe for concurrent searches: faiss searches
    do not modify the index.

    Args:
        ann: a faiss ``IndexIVFPQ`` whose ids are embedding rows.
        embeddings: (items, dim) float32 unit rows, used to re-score exactly.
        params: search-time parameters.
    """

    kind = "ivfpq"

    def __init__(self, ann, embeddings: np.ndarray, params: PartitionedParams):
        self._ann = ann
        self._embeddings = embeddings
        self.params = params
        self._exact = ExactIndex(embeddings)
        if ann.ntotal != embeddings.shape[0] or ann.d != embeddings.shape[1]:
            raise BundleInvalid(
                f"index holds {ann.ntotal} x {ann.d} items, embeddings are {embeddings.shape}"
            )

    @classmethod
    def open(cls, path: Path, embeddings: np.ndarray, params: PartitionedParams) -> "PartitionedIndex":
        """Memory-map the faiss index file at ``path``.

        Raises:
            BundleInvalid: faiss is not installed, or the file is not a faiss
                IVF-PQ index matching ``embeddings``.
        """
        faiss = import_faiss()
        try:
            # IO_FLAG_MMAP maps the inverted lists (codes and ids) instead of
            # reading them: start-up touches only the header and centroids.
            ann = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        except RuntimeError as exc:
            raise BundleInvalid(f"{path}: unreadable index: {str(exc).splitlines()[0]}") from None
        if not isinstance(ann, faiss.IndexIVFPQ):
            raise BundleInvalid(f"{path}: not a faiss IVF-PQ index ({type(ann).__name__})")
        if params.nprobe < 1 or params.rerank < 1:
            raise BundleInvalid(f"{path}: nprobe and rerank must be positive")
        ann.nprobe = min(params.nprobe, ann.nlist)
        # The mapped lists are OnDiskInvertedLists, which by default start 32
        # prefetch threads per query: 20-40x slower than the scan itself on a
        # warm page cache (measured). The kernel's readahead is enough.
        faiss.downcast_InvertedLists(ann.invlists).prefetch_nthread = 0
        return cls(ann, embeddings, params)

    def __len__(self) -> int:
        return int(self._embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self._embeddings.shape[1])

    @property
    def nlist(self) -> int:
        """Number of partitions."""
        return int(self._ann.nlist)

    def candidates(self, query: np.ndarray, count: int, nprobe: int | None = None) -> np.ndarray:
        """Rows of the ``count`` best items by quantized score, sorted by row.

        Args:
            nprobe: partitions to visit (default: the built-for value).
        """
        faiss = import_faiss()
        query = np.ascontiguousarray(np.asarray(query, dtype=np.float32).reshape(1, -1))
        search_params = faiss.SearchParametersIVF(nprobe=int(nprobe or self._ann.nprobe))
        _, labels = self._ann.search(query, int(count), params=search_params)
        rows = labels[0]
        return np.sort(rows[rows >= 0])

    def search(self, query: np.ndarray, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for ``query``: approximate short list, exact scores.

        When ``k`` exceeds the short list (deep paging), the whole collection is
        scanned exactly instead, so every page exists.

        Args:
            nprobe: partitions to visit (default: the built-for value).

        Returns:
            (rows, scores): as :meth:`ExactIndex.search`; scores are exact cosines.
        """
        k = max(0, min(int(k), len(self)))
        if k > self.params.rerank:
            return self._exact.search(query, k)
        query = np.asarray(query, dtype=np.float32)
        rows = self.candidates(query, self.params.rerank, nprobe)
        # Rows are sorted, so top_k's tie-break by position is a tie-break by row.
        scores = self._embeddings[rows] @ query
        best, values = top_k(scores, k)
        return rows[best].astype(np.int64), values


def import_faiss():
    """The ``faiss`` module.

    Raises:
        BundleInvalid: faiss-cpu is not installed (only ``ivfpq`` bundles need it).
    """
    try:
        import faiss
    except ImportError:
        raise BundleInvalid(
            "this bundle has a partitioned (ivfpq) index, which needs faiss-cpu: "
            "pip install 'glimpse[device]'"
        ) from None
    return faiss


def open_index(bundle_dir: Path, spec: dict, embeddings: np.ndarray, files: dict):
    """Open the index a bundle manifest's ``index`` object describes.

    Args:
        bundle_dir: the bundle directory.
        spec: the manifest's ``index`` object (``{"kind": "exact"}`` when absent).
        embeddings: the bundle's (memory-mapped) embeddings.
        files: the manifest's ``files`` table; an index file must be listed there
            so the manifest vouches for it.

    Returns:
        An :class:`ExactIndex` or :class:`PartitionedIndex`.

    Raises:
        BundleInvalid: unknown kind, malformed parameters, or an unlisted or
            unreadable index file.
    """
    if not isinstance(spec, dict):
        raise BundleInvalid(f"{bundle_dir}: manifest index is not an object")
    kind = spec.get("kind")
    if kind == "exact":
        return ExactIndex(embeddings)
    if kind == "ivfpq":
        relative = spec.get("file")
        if not isinstance(relative, str) or relative not in files:
            raise BundleInvalid(f"{bundle_dir}: ivfpq index file {relative!r} is not listed in the manifest")
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts:
            raise BundleInvalid(f"{bundle_dir}: unsafe index path {relative!r}")
        try:
            params = PartitionedParams(nprobe=int(spec["nprobe"]), rerank=int(spec["rerank"]))
        except (KeyError, TypeError, ValueError):
            raise BundleInvalid(f"{bundle_dir}: ivfpq index lacks integer nprobe and rerank") from None
        return PartitionedIndex.open(Path(bundle_dir) / relative, embeddings, params)
    raise BundleInvalid(
        f"{bundle_dir}: unknown index kind {kind!r} (this Glimpse searches {', '.join(INDEX_KINDS)}); "
        "rebuild the bundle with a matching glimpse-provision"
    )


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
