"""The partitioned (ivfpq) index: recall, exact scores, choice by size, mmap,
manifest record, and refusal of index kinds a device does not know."""

from __future__ import annotations

import json
import shutil

import faiss
import numpy as np
import pytest

from conftest import run_cli
from device.bundle import INDEX_FILE, MANIFEST, Bundle
from device.errors import BundleInvalid
from device.index import (AUTO_EXACT_MAX_ITEMS, ExactIndex, PartitionedIndex, PartitionedParams, choose_kind,
                          open_index)
from device.search import Searcher
from provisioning.bundles.index import IndexOptions, build_index

# 128 dimensions in 16 sub-quantizers: the production ratio (8 dimensions per
# code) at a third of the training time of 384.
DIM = 128
M = 16


def _clustered(rng, n, centres):
    """Unit rows around ``centres``: structure like real embeddings (classes)."""
    rows = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, DIM)).astype(np.float32) * 0.06
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """5000 clustered items, an ivfpq index calibrated for recall 0.95 on 60
    queries (30 kept), and 100 fresh queries from the same distribution."""
    rng = np.random.default_rng(42)
    centres = rng.normal(size=(40, DIM)).astype(np.float32) / np.sqrt(DIM)
    items = _clustered(rng, 5000, centres)
    calibration = _clustered(rng, 60, centres)
    queries = _clustered(rng, 100, centres)
    folder = tmp_path_factory.mktemp("ivfpq")
    np.save(folder / "embeddings.npy", items)
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
    record = build_index(folder, embeddings, IndexOptions(kind="ivfpq", target_recall=0.95, m=M),
                         queries=calibration)
    files = {record["file"]: {}}
    return folder, embeddings, queries, record, open_index(folder, record, embeddings, files)


def _recall(index, embeddings, queries, k=10):
    exact = ExactIndex(embeddings)
    hits = [len(set(index.search(q, k)[0].tolist()) & set(exact.search(q, k)[0].tolist())) for q in queries]
    return sum(hits) / (k * len(queries))


def test_recall_against_exact_on_fresh_queries(synthetic):
    _, embeddings, queries, record, index = synthetic
    assert isinstance(index, PartitionedIndex) and index.kind == "ivfpq"
    assert record["recall_at_10"] >= 0.95  # what calibration measured on its own queries
    # Fresh queries from the same distribution: 1000 neighbour slots, so the
    # sampling error of a 0.95 recall is about 0.007 (plus the calibration
    # set's own, 600 slots: about 0.009); 0.9 leaves a wide margin
    # yet fails if routing, quantization or re-scoring breaks (a random short
    # list of 100 out of 5000 would score about 0.02).
    assert _recall(index, embeddings, queries) >= 0.90


def test_fewer_partitions_visited_means_fewer_candidates(synthetic):
    _, _, queries, record, index = synthetic
    assert 1 < record["nprobe"] < record["nlist"]
    # One partition of a 5000-item set in ~140 cannot fill the short list;
    # the built-for nprobe visits more, and all partitions fill it.
    one = len(index.candidates(queries[0], record["rerank"], nprobe=1))
    assert one < len(index.candidates(queries[0], record["rerank"])) <= record["rerank"]
    assert len(index.candidates(queries[0], record["rerank"], nprobe=record["nlist"])) == record["rerank"]


def test_scores_are_exact_cosines_not_quantized(synthetic):
    _, embeddings, queries, _, index = synthetic
    for query in queries[:10]:
        rows, scores = index.search(query, 10)
        assert rows.dtype == np.int64 and scores.dtype == np.float32
        assert (np.diff(scores) <= 0).all()
        exact = np.asarray(embeddings[rows], dtype=np.float64) @ query.astype(np.float64)
        np.testing.assert_allclose(scores, exact, rtol=0, atol=1e-6)
        # The quantized estimate differs: the re-scoring is what makes scores exact.
        distances, labels = index._ann.search(query[None, :], 10)
        assert not np.allclose(distances[0], exact, atol=1e-6)


def test_deep_pages_fall_back_to_exact(synthetic):
    _, embeddings, queries, record, index = synthetic
    k = record["rerank"] + 50
    rows, scores = index.search(queries[0], k)
    expected_rows, expected_scores = ExactIndex(embeddings).search(queries[0], k)
    assert rows.tolist() == expected_rows.tolist()
    np.testing.assert_array_equal(scores, expected_scores)


def test_manifest_records_parameters_and_recall(synthetic):
    folder, _, _, record, _ = synthetic
    assert record["kind"] == "ivfpq" and record["file"] == INDEX_FILE
    assert record["factory"] == f"IVF{record['nlist']},PQ{record['m']}x{record['nbits']}"
    assert record["nlist"] == round(2 * np.sqrt(5000)) and record["m"] == M and record["nbits"] == 8
    assert record["target_recall_at_10"] == 0.95 and 0.95 <= record["recall_at_10"] <= 1
    # The better-matching half of the 60 text queries.
    assert record["calibration"] == {"queries": 30, "kind": "text, best-matching half", "seed": 0}
    # M code bytes + 8 id bytes per item, plus centroids and codebooks.
    size = (folder / INDEX_FILE).stat().st_size
    assert record["bytes_per_item"] == round(size / 5000, 2)
    assert (M + 8) * 5000 < size < (M + 8) * 5000 + (record["nlist"] + 256) * DIM * 4 + 100_000


def test_kind_chosen_by_size_and_overridable(tmp_path):
    assert choose_kind("auto", AUTO_EXACT_MAX_ITEMS) == "exact"
    assert choose_kind("auto", AUTO_EXACT_MAX_ITEMS + 1) == "ivfpq"
    assert choose_kind("exact", 10**7) == "exact"
    assert choose_kind("ivfpq", 300) == "ivfpq"
    with pytest.raises(ValueError, match="index kind"):
        choose_kind("hnsw", 10)
    rng = np.random.default_rng(0)
    small = _clustered(rng, 300, rng.normal(size=(5, DIM)).astype(np.float32) / np.sqrt(DIM))
    assert build_index(tmp_path, small, IndexOptions(m=M)) == {"kind": "exact"}
    assert not (tmp_path / INDEX_FILE).exists()
    forced = build_index(tmp_path, small, IndexOptions(kind="ivfpq", m=M))
    assert forced["kind"] == "ivfpq" and (tmp_path / INDEX_FILE).is_file()


def test_auto_falls_back_to_exact_when_the_target_is_out_of_reach(tmp_path):
    # Random vectors have no neighbourhood structure, and a 10-item short list
    # ranked by 4-byte codes cannot find their true top 10.
    rng = np.random.default_rng(3)
    items = rng.normal(size=(AUTO_EXACT_MAX_ITEMS + 1, 32)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    options = dict(m=4, rerank=(10,), calibration_queries=50)
    forced = build_index(tmp_path, items, IndexOptions(kind="ivfpq", **options))
    assert forced["kind"] == "ivfpq" and forced["recall_at_10"] < 0.9
    auto = build_index(tmp_path, items, IndexOptions(kind="auto", **options))
    assert auto["kind"] == "exact" and "exact instead" in auto["note"]
    assert not (tmp_path / INDEX_FILE).exists()


def test_index_is_memory_mapped_not_read(tmp_path):
    # A million 32-d items: 16 MB of codes and ids. Opening maps them; RSS must
    # not grow by anything like the file size.
    n, dim = 1_000_000, 32
    rng = np.random.default_rng(1)
    quantizer = faiss.IndexFlatIP(dim)
    ann = faiss.IndexIVFPQ(quantizer, dim, 16, 8, 8, faiss.METRIC_INNER_PRODUCT)
    train = rng.normal(size=(5000, dim)).astype(np.float32)
    ann.train(train)
    for _ in range(0, n, 250_000):
        ann.add(rng.normal(size=(250_000, dim)).astype(np.float32))
    faiss.write_index(ann, str(tmp_path / INDEX_FILE))
    del ann
    size_mb = (tmp_path / INDEX_FILE).stat().st_size / 2**20
    assert size_mb > 15
    # Sparse: the embeddings file is never written, only mapped.
    embeddings = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    before = _rss_mb()
    index = PartitionedIndex.open(tmp_path / INDEX_FILE, embeddings, PartitionedParams(nprobe=1, rerank=10))
    grown = _rss_mb() - before
    assert grown < size_mb / 4, f"opening grew RSS by {grown:.1f} MB for a {size_mb:.1f} MB index"
    assert type(faiss.downcast_InvertedLists(index._ann.invlists)).__name__ == "OnDiskInvertedLists"
    assert len(index.search(rng.normal(size=dim).astype(np.float32), 5)[0]) == 5


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def ivfpq_bundle(tmp_path_factory, library):
    """The test library built with the partitioned index forced, by the real CLI."""
    out = tmp_path_factory.mktemp("bundles") / "ivfpq-bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--quiet", "--index", "ivfpq")
    return out


def test_forced_ivfpq_bundle_still_finds_the_coffee(ivfpq_bundle):
    manifest = json.loads((ivfpq_bundle / MANIFEST).read_text())
    record = manifest["index"]
    assert record["kind"] == "ivfpq" and record["file"] == INDEX_FILE
    assert INDEX_FILE in manifest["files"]  # hashed like every other file
    for key in ("nlist", "m", "nbits", "nprobe", "rerank", "recall_at_10", "target_recall_at_10", "library"):
        assert key in record
    with Searcher.from_bundle(ivfpq_bundle) as searcher:
        assert isinstance(searcher.index, PartitionedIndex)
        results = searcher.search("a cup of coffee", k=3)
        assert results[0].item.path == "kitchen/coffee.png"
        vector = searcher.encoder.embed("a cup of coffee")
        assert results[0].score == pytest.approx(float(searcher.bundle.embeddings[
            searcher.bundle.row(results[0].item.id)] @ vector), abs=1e-6)


def test_default_build_of_a_small_library_is_exact(bundle_dir):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["index"] == {"kind": "exact"}
    assert isinstance(Bundle.open(bundle_dir, verify="quick").index, ExactIndex)


def _edit_manifest(path, change):
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_unknown_index_kind_is_refused(copy_bundle):
    path = copy_bundle()
    _edit_manifest(path, lambda m: m.update(index={"kind": "hnsw", "file": "index.hnsw"}))
    with pytest.raises(BundleInvalid, match="unknown index kind 'hnsw'"):
        Bundle.open(path)


def test_ivfpq_index_file_must_be_listed(ivfpq_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(ivfpq_bundle, path)
    _edit_manifest(path, lambda m: m["index"].update(file="elsewhere.faiss"))
    with pytest.raises(BundleInvalid, match="not listed"):
        Bundle.open(path, verify="quick")


def test_altered_index_file_is_refused(ivfpq_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(ivfpq_bundle, path)
    data = bytearray((path / INDEX_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(BundleInvalid, match="altered"):
        Bundle.open(path)


def test_missing_bundle_index_object_means_exact(copy_bundle):
    path = copy_bundle()
    _edit_manifest(path, lambda m: m.pop("index"))
    assert isinstance(Bundle.open(path).index, ExactIndex)
