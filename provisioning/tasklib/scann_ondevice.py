"""A ScaNN on-device index, as the TFLite Task Library's searchers read it.

tflite-support's ``scann_ondevice`` stores an index as one LevelDB table
(:mod:`provisioning.tasklib.sstable`) with these keys:

* ``INDEX_CONFIG``: an ``IndexConfig`` protobuf (``scann_ondevice/proto/index_config.proto``):
  the ``ScannOnDeviceConfig`` (distance, partitioner), the embedding type and
  dimension, and where each partition's items start in the global numbering;
* ``E_<p>``: partition p's embeddings, one item after another: float32
  little-endian, or one uint8 code per dimension when hashed;
* ``M_<i>``: item i's metadata string, items numbered partition by partition;
* ``USER_INFO``: free text.

Items are scored by dot product, which for Glimpse's unit vectors is the
cosine the device reports. Two layouts:

* ``exact``: one partition, no partitioner; every query scans every item.
* ``partitioned``: ScaNN's k-means tree of one level: spherical k-means leaves
  (sqrt(N) of them by default, as Model Maker's searcher does), each item in its
  nearest leaf; a query scans the ``search_fraction`` of leaves nearest to it.

and, with either, the vectors stored as float32 (exact scores) or hashed:
ScaNN's asymmetric hashing as the seed's searcher uses it, one dimension per
block, each dimension's values replaced by the nearest of (up to) 256 levels
found by 1-D k-means, so an item costs one byte per dimension and a query adds
up looked-up products of its float values with the levels (asymmetric: the
query is not quantised). The levels minimise the reconstruction error; ScaNN's
anisotropic (score-aware) loss is not applied.

The protobuf messages are declared here from the ``.proto`` files' field
numbers and built with the ``protobuf`` package's descriptor pool; no
generated code is copied in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from provisioning.tasklib.sstable import write_table

LAYOUTS = ("exact", "partitioned")

_CORE = "tflite.scann_ondevice.core"
_INDEX = "tflite.scann_ondevice"
DOT_PRODUCT = 1  # core.DistanceMeasure
FLOAT, UINT8 = 1, 2  # IndexConfig.Type
#: Codebook size of a hashed index: one byte per code.
HASH_CODES = 256


@dataclasses.dataclass(frozen=True)
class IndexLayout:
    """How the index is partitioned and stored.

    Attributes:
        kind: ``exact`` or ``partitioned``.
        leaves: number of k-means leaves (partitioned only; 0: sqrt(items), rounded).
        search_fraction: share of leaves a query scans (partitioned only), 0 < f <= 1.
        quantized: store uint8 codes (asymmetric hashing) instead of float32 vectors.
        seed: k-means seed, so a rebuild writes the same file.
    """

    kind: str = "exact"
    leaves: int = 0
    search_fraction: float = 0.25
    quantized: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.kind not in LAYOUTS:
            raise ValueError(f"unknown index layout {self.kind!r}; choose from {', '.join(LAYOUTS)}")
        if not 0 < self.search_fraction <= 1:
            raise ValueError("search fraction must be above 0 and at most 1")
        if self.leaves < 0:
            raise ValueError("leaves must be 0 (automatic) or more")


def _message_classes() -> dict:
    """Message classes for ``IndexConfig`` and the parts of ``ScannOnDeviceConfig`` used here."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto

    def message(name, *fields, enums=()):
        msg = descriptor_pb2.DescriptorProto(name=name)
        for field_name, number, label, kind, type_name, packed, default in fields:
            field = msg.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                field.type_name = type_name
            if packed:
                field.options.packed = True
            if default is not None:
                field.default_value = default
        for enum_name, values in enums:
            enum = msg.enum_type.add(name=enum_name)
            for value_name, value in values:
                enum.value.add(name=value_name, number=value)
        return msg

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    core = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_lite_support/scann_ondevice/cc/core/serialized_searcher.proto",
        package=_CORE, syntax="proto2")
    distance = core.enum_type.add(name="DistanceMeasure")
    for value_name, value in (("SQUARED_L2_DISTANCE", 0), ("DOT_PRODUCT", 1), ("UNSPECIFIED", 2)):
        distance.value.add(name=value_name, number=value)
    partitioner = message(
        "PartitionerProto",
        ("leaf", 1, rep, F.TYPE_MESSAGE, f".{_CORE}.PartitionerProto.Leaf", False, None),
        ("search_fraction", 2, opt, F.TYPE_FLOAT, None, False, "1"),
        ("query_distance", 3, opt, F.TYPE_ENUM, f".{_CORE}.DistanceMeasure", False, "SQUARED_L2_DISTANCE"))
    partitioner.nested_type.append(
        message("Leaf", ("dimension", 1, rep, F.TYPE_FLOAT, None, True, None)))
    core.message_type.append(partitioner)
    hashing = message(
        "AsymmetricHashingProto",
        ("subspace", 1, rep, F.TYPE_MESSAGE, f".{_CORE}.AsymmetricHashingProto.SubspaceCodebook", False, None),
        ("query_distance", 2, opt, F.TYPE_ENUM, f".{_CORE}.DistanceMeasure", False, "SQUARED_L2_DISTANCE"),
        ("lookup_type", 3, opt, F.TYPE_ENUM, f".{_CORE}.AsymmetricHashingProto.LookupType", False, "FLOAT"),
        enums=[("LookupType", [("FLOAT", 0), ("INT16", 1), ("INT8", 2), ("INT8_LUT16", 3)])])
    hashing.nested_type.append(message("CodebookEntry", ("dimension", 1, rep, F.TYPE_FLOAT, None, True, None)))
    hashing.nested_type.append(message(
        "SubspaceCodebook",
        ("entry", 1, rep, F.TYPE_MESSAGE, f".{_CORE}.AsymmetricHashingProto.CodebookEntry", False, None)))
    core.message_type.append(hashing)
    # In the .proto, asymmetric_hashing is the one member of a oneof: the same on the wire.
    core.message_type.append(message(
        "IndexerProto",
        ("asymmetric_hashing", 1, opt, F.TYPE_MESSAGE, f".{_CORE}.AsymmetricHashingProto", False, None)))
    core.message_type.append(message(
        "ScannOnDeviceConfig",
        ("query_distance", 1, opt, F.TYPE_ENUM, f".{_CORE}.DistanceMeasure", False, "UNSPECIFIED"),
        ("indexer", 2, opt, F.TYPE_MESSAGE, f".{_CORE}.IndexerProto", False, None),
        ("partitioner", 3, opt, F.TYPE_MESSAGE, f".{_CORE}.PartitionerProto", False, None)))
    index = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_lite_support/scann_ondevice/proto/index_config.proto",
        package=_INDEX, syntax="proto2", dependency=[core.name])
    index.message_type.append(message(
        "IndexConfig",
        ("scann_config", 1, opt, F.TYPE_MESSAGE, f".{_CORE}.ScannOnDeviceConfig", False, None),
        ("embedding_type", 2, opt, F.TYPE_ENUM, f".{_INDEX}.IndexConfig.Type", False, None),
        ("embedding_dim", 3, opt, F.TYPE_UINT32, None, False, None),
        ("global_partition_offsets", 4, rep, F.TYPE_UINT32, None, True, None),
        enums=[("Type", [("UNSPECIFIED", 0), ("FLOAT", 1), ("UINT8", 2)])]))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(core)
    pool.Add(index)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
            for name in (f"{_INDEX}.IndexConfig", f"{_CORE}.ScannOnDeviceConfig")}


def kmeans_leaves(embeddings: np.ndarray, leaves: int, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """Spherical k-means: ``leaves`` unit centroids for unit-length ``embeddings``.

    Assignment is by dot product, as the on-device partitioner's DOT_PRODUCT
    distance ranks leaves. Seeded, so the same embeddings give the same leaves.
    """
    rng = np.random.default_rng(seed)
    data = np.asarray(embeddings, dtype=np.float32)
    centroids = data[rng.choice(len(data), size=leaves, replace=False)].copy()
    for _ in range(iterations):
        assignment = np.argmax(data @ centroids.T, axis=1)
        for leaf in range(leaves):
            members = data[assignment == leaf]
            if len(members):  # an emptied leaf keeps its centroid
                mean = members.sum(axis=0)
                centroids[leaf] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return centroids


def hash_levels(embeddings: np.ndarray, codes: int = HASH_CODES, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric hashing with one dimension per block: per dimension, ``codes``
    levels by 1-D k-means (Lloyd, started at the quantiles), and each value's level.

    Returns:
        (levels, assigned): levels (codes, dim) float32, sorted per dimension;
        assigned (N, dim) uint8, the index of each value's nearest level.
    """
    data = np.asarray(embeddings, dtype=np.float32)
    count, dim = data.shape
    codes = min(codes, count)
    levels = np.quantile(data, (np.arange(codes) + 0.5) / codes, axis=0).astype(np.float32)
    assigned = np.zeros((count, dim), dtype=np.uint8)
    for column in range(dim):
        values, centre = data[:, column], levels[:, column]
        for _ in range(iterations):
            centre = np.sort(centre)
            nearest = np.searchsorted((centre[1:] + centre[:-1]) / 2, values)
            totals = np.bincount(nearest, weights=values, minlength=codes)
            sizes = np.bincount(nearest, minlength=codes)
            updated = np.where(sizes > 0, totals / np.maximum(sizes, 1), centre)  # an empty level stays
            if np.allclose(updated, centre):
                break
            centre = updated.astype(np.float32)
        centre = np.sort(centre)
        levels[:, column] = centre
        assigned[:, column] = np.searchsorted((centre[1:] + centre[:-1]) / 2, values)
    return levels, assigned


@dataclasses.dataclass(frozen=True)
class ScannIndex:
    """A built index: the table's bytes and what went into it.

    Attributes:
        data: the LevelDB table.
        layout: the layout asked for.
        items, dim: how many vectors, of what length.
        partition_sizes: items per partition.
        scann_config: the serialized ``ScannOnDeviceConfig`` inside ``INDEX_CONFIG``.
        assignment: each item's partition, in the input order.
    """

    data: bytes
    layout: IndexLayout
    items: int
    dim: int
    partition_sizes: tuple[int, ...]
    scann_config: bytes
    assignment: tuple[int, ...]

    @property
    def leaves_searched(self) -> int:
        """How many partitions a query scans (the Task Library's rule: ceil(leaves * fraction))."""
        leaves = len(self.partition_sizes)
        return min(math.ceil(leaves * self.layout.search_fraction), leaves)

    def describe(self) -> str:
        """One line for a person: layout, leaves, scanned share, how vectors are stored."""
        stored = ("uint8 codes (asymmetric hashing, 1 dimension per block)" if self.layout.quantized
                  else "float32 vectors")
        if self.layout.kind == "exact":
            return f"exact (one partition of {self.items} {stored}, dot product)"
        return (f"partitioned ({len(self.partition_sizes)} k-means leaves, {self.leaves_searched} searched "
                f"per query, {stored}, dot product)")


def build_index(embeddings: np.ndarray, metadata: list[str], layout: IndexLayout = IndexLayout(),
                userinfo: str = "") -> ScannIndex:
    """Build a ScaNN on-device index over unit-length ``embeddings``.

    Args:
        embeddings: (N, dim) float32, unit rows, one per item.
        metadata: N strings, what a search returns for each item.
        layout: exact or partitioned.
        userinfo: free text stored under ``USER_INFO``.

    Raises:
        ValueError: no items, or counts that do not match.
    """
    embeddings = np.ascontiguousarray(embeddings, dtype="<f4")
    if embeddings.ndim != 2 or not len(embeddings):
        raise ValueError("an index needs at least one embedding")
    if len(metadata) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(metadata)} metadata strings")
    classes = _message_classes()
    config = classes[f"{_INDEX}.IndexConfig"]()
    # Hashed, the "dimension" is the number of codes per item: one per dimension here.
    config.embedding_dim = embeddings.shape[1]
    scann = config.scann_config
    stored = embeddings
    if layout.quantized:
        config.embedding_type = UINT8
        levels, stored = hash_levels(embeddings)
        hashing = scann.indexer.asymmetric_hashing
        hashing.query_distance = DOT_PRODUCT
        for column in levels.T:
            subspace = hashing.subspace.add()
            for level in column:
                subspace.entry.add().dimension.append(float(level))
    else:
        config.embedding_type = FLOAT
    if layout.kind == "exact":
        scann.query_distance = DOT_PRODUCT
        assignment = np.zeros(len(embeddings), dtype=np.int64)
        leaves = 1
    else:
        leaves = min(layout.leaves or max(1, round(math.sqrt(len(embeddings)))), len(embeddings))
        centroids = kmeans_leaves(embeddings, leaves, seed=layout.seed)
        assignment = np.argmax(embeddings @ centroids.T, axis=1)
        scann.partitioner.search_fraction = layout.search_fraction
        scann.partitioner.query_distance = DOT_PRODUCT
        for centroid in centroids:
            scann.partitioner.leaf.add().dimension.extend(centroid.tolist())
    entries = {}
    sizes = []
    numbered = 0
    for leaf in range(leaves):
        rows = np.flatnonzero(assignment == leaf)  # stable: items keep the bundle's order
        config.global_partition_offsets.append(numbered)
        entries[f"E_{leaf}".encode()] = stored[rows].tobytes()
        for row in rows:
            entries[f"M_{numbered}".encode()] = metadata[row].encode("utf-8")
            numbered += 1
        sizes.append(len(rows))
    entries[b"INDEX_CONFIG"] = config.SerializeToString()
    entries[b"USER_INFO"] = userinfo.encode("utf-8")
    return ScannIndex(data=write_table(entries), layout=layout, items=len(embeddings),
                      dim=embeddings.shape[1], partition_sizes=tuple(sizes),
                      scann_config=scann.SerializeToString(), assignment=tuple(int(a) for a in assignment))

