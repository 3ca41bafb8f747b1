"""Build a bundle's search index on the host (see :mod:`device.index`).

For a large library: a faiss IVF-PQ index (k-means partitions, product
quantization of the residuals, inner product), written next to the embeddings
and described in the manifest's ``index`` object. The number of partitions to
visit (``nprobe``) is calibrated here, against exact search, so that the bundle
meets a recall target, and the recall measured is recorded with it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from device import bundle as bundle_format
from device.index import PartitionedIndex, PartitionedParams, choose_kind, import_faiss


@dataclasses.dataclass
class IndexOptions:
    """How to index a bundle.

    Attributes:
        kind: ``auto`` (by item count, see :func:`device.index.choose_kind`),
            ``exact`` or ``ivfpq``.
        target_recall: recall@10 against exact search that the calibrated
            ``nprobe`` must reach on the calibration queries.
        nlist: partitions (default: about 2 sqrt(items)).
        m: PQ sub-quantizers; must divide the dimension. 48 for 384 dimensions
            gives 48 code bytes + 8 id bytes = 56 bytes per item.
        nbits: bits per sub-quantizer code (8, fewer for tiny collections).
        rerank: approximate candidates re-scored exactly per query.
        calibration_queries: queries used to calibrate ``nprobe``.
        max_train: items sampled to train k-means and PQ.
        seed: sampling seed (builds are repeatable).
    """

    kind: str = "auto"
    target_recall: float = 0.95
    nlist: int | None = None
    m: int = 48
    nbits: int = 8
    rerank: int = 100
    calibration_queries: int = 200
    max_train: int = 100_000
    seed: int = 0


def build_index(bundle_dir: Path, embeddings: np.ndarray, options: IndexOptions | None = None) -> dict:
    """Write the index for ``embeddings`` into ``bundle_dir``.

    Call before :func:`device.bundle.write_manifest` so the manifest hashes the
    index file, and pass the returned object as the manifest's ``index``.

    Args:
        bundle_dir: the bundle being written.
        embeddings: (items, dim) float32 unit rows, in bundle row order.
        options: see :class:`IndexOptions`.

    Returns:
        The manifest's ``index`` object.

    Raises:
        ValueError: unknown kind, or ``m`` does not divide the dimension.
    """
    options = options or IndexOptions()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    items, dim = embeddings.shape
    kind = choose_kind(options.kind, items)
    if kind == "exact":
        return {"kind": "exact"}
    if items < 2:
        return {"kind": "exact", "note": "one item: nothing to partition"}
    if dim % options.m:
        raise ValueError(f"m={options.m} does not divide the dimension {dim}")
    faiss = import_faiss()
    started = time.monotonic()
    rng = np.random.default_rng(options.seed)
    nlist = options.nlist or max(1, round(2 * math.sqrt(items)))
    nlist = min(nlist, items)
    # Tiny collections cannot train 256 centroids per sub-quantizer.
    nbits = min(options.nbits, max(1, int(math.log2(items))))
    train = embeddings
    if items > options.max_train:
        train = embeddings[np.sort(rng.choice(items, options.max_train, replace=False))]
    quantizer = faiss.IndexFlatIP(dim)
    ann = faiss.IndexIVFPQ(quantizer, dim, nlist, options.m, nbits, faiss.METRIC_INNER_PRODUCT)
    for clustering in (ann.cp, ann.pq.cp):
        clustering.seed = options.seed
        # Small collections train on few points per centroid on purpose; the
        # manifest records train_items, so faiss's stderr warning adds nothing.
        clustering.min_points_per_centroid = 1
    ann.train(train)
    ann.add(embeddings)  # ids are 0..items-1: the embedding rows
    path = Path(bundle_dir) / bundle_format.INDEX_FILE
    faiss.write_index(ann, str(path))
    train_s = time.monotonic() - started

    # Calibrate on what the device will search: the file, memory-mapped.
    rerank = min(options.rerank, items)
    queries = calibration_queries(embeddings, options.calibration_queries, rng)
    truth = [set(_exact_top(embeddings, q, 10).tolist()) for q in queries]
    index = PartitionedIndex.open(path, embeddings, PartitionedParams(nprobe=1, rerank=rerank))
    k = min(10, items)
    nprobe, recall = nlist, 0.0
    for probe in _probes(nlist):
        found = [index.search(q, k, nprobe=probe)[0] for q in queries]
        recall = float(np.mean([len(truth[i].intersection(f.tolist())) / len(truth[i])
                                for i, f in enumerate(found)]))
        if recall >= options.target_recall:
            nprobe = probe
            break
    size = path.stat().st_size
    return {
        "kind": "ivfpq",
        "file": bundle_format.INDEX_FILE,
        "library": f"faiss-cpu {faiss.__version__}",
        "factory": f"IVF{nlist},PQ{options.m}x{nbits}",
        "metric": "inner_product",
        "nlist": int(nlist),
        "m": int(options.m),
        "nbits": int(nbits),
        "nprobe": int(nprobe),
        "rerank": int(rerank),
        "target_recall_at_10": float(options.target_recall),
        "recall_at_10": round(recall, 4),
        "calibration": {"queries": len(queries), "kind": "perturbed items", "seed": options.seed},
        "train_items": int(train.shape[0]),
        "bytes_per_item": round(size / items, 2),
        "build_s": round(train_s, 2),
    }


def calibration_queries(embeddings: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Queries like the text tower's: items pushed off the image manifold.

    A text query is not an image embedding: it lies between items, at cosine
    0.2 to 0.5 from its best matches. Each calibration query is a random item
    plus as much isotropic noise again (cosine about 0.7 to that item),
    renormalised; recall measured with the items themselves would be optimistic.
    """
    items, dim = embeddings.shape
    picks = embeddings[rng.integers(0, items, count)]
    noise = rng.standard_normal(picks.shape).astype(np.float32) / np.float32(math.sqrt(dim))
    queries = picks + noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def _exact_top(embeddings: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    scores = embeddings @ query
    k = min(k, len(scores))
    return np.argpartition(-scores, k - 1)[:k]


def _probes(nlist: int):
    """1, 2, 3, 4, 6, 8, 12, 16, ... up to nlist: about 40% steps."""
    probe = 1
    while probe < nlist:
        yield probe
        probe = max(probe + 1, int(probe * 1.4))
    yield nlist
