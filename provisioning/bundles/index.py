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


#: Everyday photo subjects: calibration queries are "a photo of a ..." each,
#: embedded with the bundle's own text tower, so nprobe is calibrated on the
#: kind of vector the device will search with (text, not image, embeddings).
CALIBRATION_SUBJECTS = (
    "person", "man", "woman", "child", "baby", "family", "crowd", "face", "dog", "cat", "bird", "horse", "cow",
    "sheep", "fish", "insect", "butterfly", "flower", "tree", "forest", "garden", "grass", "leaf", "mountain",
    "beach", "sea", "lake", "river", "waterfall", "sky", "sunset", "cloud", "snow", "rain", "desert", "field",
    "city", "street", "building", "house", "church", "bridge", "tower", "road", "car", "bus", "truck", "bicycle",
    "motorcycle", "train", "boat", "airplane", "rocket", "kitchen", "bedroom", "living room", "office", "table",
    "chair", "sofa", "bed", "window", "door", "lamp", "clock", "book", "computer", "phone", "camera", "television",
    "guitar", "piano", "ball", "toy", "cake", "bread", "pizza", "fruit", "apple", "banana", "vegetable",
    "cup of coffee", "bottle", "glass of wine", "plate of food", "shirt", "t-shirt", "dress", "coat", "trousers",
    "shoe", "sneaker", "boot", "sandal", "bag", "hat", "jewellery", "watch", "painting", "statue", "coin",
    "brick wall", "moon", "star", "galaxy", "fire", "party", "wedding", "birthday", "sport", "football match",
    "swimming pool", "playground", "market", "shop", "museum", "concert", "tool", "machine", "document",
)


#: With kind ``auto``, an ivfpq index whose calibrated recall falls more than
#: this below the target is discarded for an exact one.
AUTO_RECALL_SLACK = 0.05


@dataclasses.dataclass
class IndexOptions:
    """How to index a bundle.

    Attributes:
        kind: ``auto`` (by item count, see :func:`device.index.choose_kind`,
            and exact after all if the ivfpq index cannot come within
            :data:`AUTO_RECALL_SLACK` of ``target_recall``), ``exact`` or ``ivfpq``.
        target_recall: recall@10 against exact search that the calibrated
            ``nprobe`` must reach on the calibration queries.
        nlist: partitions (default: about 2 sqrt(items)).
        m: PQ sub-quantizers; must divide the dimension. 48 for 384 dimensions
            gives 48 code bytes + 8 id bytes = 56 bytes per item.
        nbits: bits per sub-quantizer code (8, fewer for tiny collections).
        rerank: candidate short-list lengths tried at calibration: the one
            reaching ``target_recall`` at the lowest cost is recorded.
        calibration_queries: perturbed-item queries used to calibrate ``nprobe``
            when no text queries are given.
        max_train: items sampled to train k-means and PQ.
        seed: sampling seed (builds are repeatable).
    """

    kind: str = "auto"
    target_recall: float = 0.95
    nlist: int | None = None
    m: int = 48
    nbits: int = 8
    rerank: tuple[int, ...] = (100, 200, 400)
    calibration_queries: int = 200
    max_train: int = 100_000
    seed: int = 0


def build_index(bundle_dir: Path, embeddings: np.ndarray, options: IndexOptions | None = None,
                queries: np.ndarray | None = None) -> dict:
    """Write the index for ``embeddings`` into ``bundle_dir``.

    Call before :func:`device.bundle.write_manifest` so the manifest hashes the
    index file, and pass the returned object as the manifest's ``index``.

    Args:
        bundle_dir: the bundle being written.
        embeddings: (items, dim) float32 unit rows, in bundle row order.
        options: see :class:`IndexOptions`.
        queries: (count, dim) unit query vectors to calibrate ``nprobe`` and
            ``rerank`` on, ideally the text tower's (see :func:`text_queries`);
            default: perturbed items (see :func:`calibration_queries`).

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
    if queries is None:
        queries, query_kind = calibration_queries(embeddings, options.calibration_queries, rng), "perturbed items"
    else:
        queries, query_kind = np.asarray(queries, dtype=np.float32), "text"
    k = min(10, items)
    tops = [_exact_top(embeddings, q, k) for q in queries]
    if query_kind == "text" and len(queries) >= 20:
        # Keep the half of the captions that match this library best. An
        # off-topic caption ("a galaxy" over a clothes catalogue) sits almost
        # equally far from every item: its exact top 10 is a near-tie that no
        # partitioned search reproduces, and no user would notice the order.
        best_scores = np.array([float(np.max(embeddings[top] @ q)) for top, q in zip(tops, queries)])
        keep = np.flatnonzero(best_scores >= np.median(best_scores))
        queries, tops, query_kind = queries[keep], [tops[i] for i in keep], "text, best-matching half"
    truth = [set(top.tolist()) for top in tops]
    best = None  # (cost, nprobe, rerank, recall): cheapest setting reaching the target
    measured = []  # every (cost, nprobe, rerank, recall) tried
    for rerank in sorted({min(r, items) for r in options.rerank}):
        index = PartitionedIndex.open(path, embeddings, PartitionedParams(nprobe=1, rerank=rerank))
        for probe in _probes(nlist):
            cost = _cost(probe, rerank, items / nlist)
            if best is not None and cost >= best[0]:
                break  # dearer than a setting that already reaches the target
            found = [index.search(q, k, nprobe=probe)[0] for q in queries]
            recall = float(np.mean([len(truth[i].intersection(f.tolist())) / len(truth[i])
                                    for i, f in enumerate(found)]))
            measured.append((cost, probe, rerank, recall))
            if recall >= options.target_recall:
                best = (cost, probe, rerank, recall)
                break
    if best is None:
        # The target is out of reach: settle for the cheapest setting within
        # 0.01 of the best recall seen. Past that knee, doubling nprobe buys
        # almost nothing (Fashion-MNIST, 1M: 0.958 at nprobe 42, 0.969 at 432).
        top = max(m[3] for m in measured)
        best = min(m for m in measured if m[3] >= top - 0.01)
    _, nprobe, rerank, recall = best
    if options.kind == "auto" and recall < options.target_recall - AUTO_RECALL_SLACK:
        # Data without neighbourhood structure (random-like vectors): no nprobe
        # gets near the target, and scanning most partitions is slower than
        # exact search. Auto never trades away recall it cannot deliver.
        path.unlink()
        return {"kind": "exact",
                "note": f"ivfpq reached recall@10 {recall:.3f} < target {options.target_recall}: exact instead"}
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
        "calibration": {"queries": len(queries), "kind": query_kind, "seed": options.seed},
        "train_items": int(train.shape[0]),
        "bytes_per_item": round(size / items, 2),
        "build_s": round(train_s, 2),
    }


def text_queries(model_dir: Path) -> np.ndarray:
    """The text tower's embeddings of "a photo of a <subject>" for every
    :data:`CALIBRATION_SUBJECTS`, unit rows.

    Raises:
        ModelInvalid: the model directory is unusable.
    """
    from device.encoders import EncoderOptions, TextEncoder

    with TextEncoder.create_from_options(EncoderOptions(model_dir=Path(model_dir), verify=False)) as encoder:
        return np.stack([encoder.embed(f"a photo of a {subject}") for subject in CALIBRATION_SUBJECTS])


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


def _cost(nprobe: int, rerank: int, list_size: float) -> float:
    """Relative search cost, a model rather than a timing so builds are repeatable.

    Measured on one x86 core (faiss 1.15.1, 384 dimensions, PQ48x8): scanning
    one code costs about 30 ns, re-scoring one float32 row about 60 ns.
    """
    return nprobe * list_size + 2.0 * rerank


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
