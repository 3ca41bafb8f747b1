"""glimpse-provision export-tasklib: the bundle as a TFLite Task Library TextSearcher model.

Conformance: the exported file is loaded by tflite-support 0.4.4's own
``TextSearcher`` (in its own environment, ``.venv-tasklib``: it needs protobuf
< 4; tests/tasklib_probe.py runs there) and must return, for each query, the
same top 5 photos as Glimpse's runtime over the same bundle, with close
scores. Its metadata is read back with tflite-support's ``MetadataDisplayer``,
and its index (float32 or quantized) is compared byte for byte with
tflite-support's index builder.
The text tower is converted once, by the real CLI, for the whole module.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tasklib_probe as probe
from device.bundle import MANIFEST, Bundle
from device.errors import GlimpseError, ModelUnsupported
from device.model import sha256_file
from device.search import Searcher
from provisioning.tasklib import export as tasklib
from provisioning.tasklib import tflite_metadata
from provisioning.tasklib.scann_ondevice import IndexLayout, build_index, hash_levels

pytestmark = pytest.mark.host

QUERIES = ["a cat", "a cup of coffee", "a space launch", "a motorbike", "a man with a camera on a tripod",
           "coins on a table", "the moon at night", "a brick wall"]
#: The searcher's tower is float32, the bundle's int8 (text parity 0.998): their scores
#: differ by up to 0.016 on these queries, so two photos whose Glimpse scores are
#: closer than this may come out in either order.
SCORE_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tasklib") / "demo-bundle"
    run_cli("provisioning", "demo", "--out", str(out), "--quiet")
    return out


@pytest.fixture(scope="module")
def exported(demo_bundle, tmp_path_factory):
    """The demo bundle exported by the real CLI (exact index); (path, CLI output)."""
    out = tmp_path_factory.mktemp("tasklib") / "demo-searcher.tflite"
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(demo_bundle), "--out", str(out))
    return out, proc.stdout


def reindexed(exported_file: Path, bundle_dir: Path, layout: IndexLayout, out: Path):
    """The exported searcher with another index layout (the tower is reused, not converted again)."""
    bundle = Bundle.open(bundle_dir)
    index = build_index(np.asarray(bundle.embeddings), [item.path for item in bundle.items], layout)
    vocab = tasklib.wordpiece_vocab(bundle.model_dir / bundle.spec.text.tokenizer)
    out.write_bytes(tflite_metadata.populate(
        exported_file.read_bytes(), tasklib.model_info(bundle, index.describe()),
        {tasklib.VOCAB_FILE: ("\n".join(vocab) + "\n").encode(), tasklib.INDEX_FILE: index.data}))
    return index


def glimpse_ranking(bundle: Path, k: int = 10) -> list[list[tuple[str, float]]]:
    with Searcher.from_bundle(bundle) as searcher:
        return [[(r.item.path, r.score) for r in searcher.search(q, k=k)] for q in QUERIES]


@pytest.fixture(scope="module")
def glimpse_top10(demo_bundle) -> list[list[tuple[str, float]]]:
    return glimpse_ranking(demo_bundle)


@pytest.fixture(scope="module")
def float32_bundle(tmp_path_factory) -> Path:
    """The demo bundle built with glimpse-default's float32 variant: the same text tower
    precision as the Task Library searcher's, so the two searches can be compared exactly."""
    root = tmp_path_factory.mktemp("tasklib-float32")
    run_cli("provisioning", "model", "default", "--variant", "float32", "--out", str(root / "model"), timeout=900)
    run_cli("provisioning", "demo", "--out", str(root / "bundle"), "--model", str(root / "model"), "--quiet")
    return root / "bundle"


def same_ranking(query: str, ours: list[tuple[str, float]], theirs: list[dict], k: int = 5) -> bool:
    """Check the Task Library's top ``k`` against Glimpse's ranking (its top 10, scored).

    Every photo Glimpse ranks clearly inside its top ``k`` is there, and two photos
    may come out in the other order only if Glimpse scores them within
    ``SCORE_TOLERANCE`` (a near-tie the two towers' precision can swap). Returns
    whether the order is exactly Glimpse's.
    """
    score = dict(ours)
    found = [n["metadata"] for n in theirs]
    assert len(found) == k and all(path in score for path in found), (query, found)
    for path, value in ours[:k]:
        if value > ours[k][1] + SCORE_TOLERANCE:
            assert path in found, (query, path, found)
    for i, first in enumerate(found):
        for later in found[i + 1:]:
            assert score[later] - score[first] < SCORE_TOLERANCE, (query, first, later)
    for (path, value), hit in zip(ours, theirs):
        if path == hit["metadata"]:
            assert abs(-hit["distance"] - value) < SCORE_TOLERANCE, query
    return found == [path for path, _ in ours[:k]]


def conformance_table(glimpse, tasklib_results) -> str:
    lines = ["| query | rank | Glimpse runtime | score | Task Library TextSearcher | score |",
             "|---|---|---|---|---|---|"]
    for query, ours, theirs in zip(QUERIES, glimpse, tasklib_results):
        for rank, ((path, score), found) in enumerate(zip(ours, theirs), start=1):
            lines.append(f"| {query if rank == 1 else ''} | {rank} | {path} | {score:.3f} | "
                         f"{found['metadata']} | {-found['distance']:.3f} |")
    return "\n".join(lines)


def test_cli_reports_what_it_wrote(exported):
    out, stdout = exported
    assert f"wrote {out}: 16 photos, {out.stat().st_size} bytes" in stdout
    assert "index exact (one partition of 16 float32 vectors, dot product)" in stdout


def test_task_library_top5_equals_glimpse(float32_bundle, tmp_path):
    # Conformance: the same model, the same photos, the same tower precision on both sides;
    # what differs is the whole search path (tokenizer, graph inputs, index, search).
    searcher = tmp_path / "float32-searcher.tflite"
    run_cli("provisioning", "export-tasklib", "--bundle", str(float32_bundle), "--out", str(searcher))
    ours = glimpse_ranking(float32_bundle, k=5)
    answer = probe(do="search", model=str(searcher), queries=QUERIES, max_results=5)
    print("\n" + conformance_table(ours, answer["results"]))
    for query, top5, theirs in zip(QUERIES, ours, answer["results"]):
        assert [n["metadata"] for n in theirs] == [path for path, _ in top5], query
        assert np.allclose([-n["distance"] for n in theirs], [score for _, score in top5], atol=1e-3), query


def test_task_library_against_the_int8_bundle(exported, glimpse_top10, demo_bundle):
    # The usual case: the bundle's text tower is int8, the searcher's float32 (the Task
    # Library's runtime cannot run litert-torch's int8 towers). Scores move by up to 0.016,
    # so photos Glimpse scores within SCORE_TOLERANCE of each other may swap; nothing else may.
    answer = probe(do="search", model=str(exported[0]), queries=QUERIES, max_results=5)
    print("\n" + conformance_table([top[:5] for top in glimpse_top10], answer["results"]))
    identical = [same_ranking(q, ours, theirs) for q, ours, theirs in zip(QUERIES, glimpse_top10, answer["results"])]
    print(f"same top 5 in the same order for {sum(identical)} of {len(QUERIES)} queries; "
          "the others differ by near-ties swapped")
    assert [r[0]["metadata"] for r in answer["results"]] == [top[0][0] for top in glimpse_top10]
    assert answer["user_info"] == f"glimpse bundle {Bundle.open(demo_bundle).id}, model glimpse-default@1.1.0"


def test_metadata_as_tflite_support_reads_it(exported):
    answer = probe(do="metadata", model=str(exported[0]))
    assert answer["packed_files"] == ["index.ldb", "vocab.txt"]
    meta = answer["metadata"]
    assert meta["min_parser_version"] == "1.4.0"
    graph, = meta["subgraph_metadata"]
    assert [t["name"] for t in graph["input_tensor_metadata"]] == ["ids", "mask", "segment_ids"]
    unit, = graph["input_process_units"]
    assert unit["options_type"] == "BertTokenizerOptions"
    assert [(f["name"], f["type"]) for f in unit["options"]["vocab_file"]] == [("vocab.txt", "VOCABULARY")]
    output, = graph["output_tensor_metadata"]
    assert [(f["name"], f["type"]) for f in output["associated_files"]] == [("index.ldb", "SCANN_INDEX_FILE")]


def test_file_is_a_litert_model_and_a_zip(exported, demo_bundle):
    import zipfile

    assert zipfile.ZipFile(exported[0]).namelist() == ["vocab.txt", "index.ldb"]
    # LiteRT runs the same file (the zip is past the flatbuffer's end) as the bundle's tower does.
    assert tasklib.tower_parity(exported[0], Bundle.open(demo_bundle), QUERIES) > 0.99


def test_partitioned_index_searched_by_the_task_library(exported, demo_bundle, tmp_path):
    # Every leaf searched: the same answers as the exact index, scores and all.
    full = tmp_path / "all-leaves.tflite"
    reindexed(exported[0], demo_bundle, IndexLayout("partitioned", leaves=4, search_fraction=1.0), full)
    answer = probe(do="search", model=str(full), queries=QUERIES, max_results=5)
    exact = probe(do="search", model=str(exported[0]), queries=QUERIES, max_results=5)
    for ours, theirs in zip(exact["results"], answer["results"]):
        assert [n["metadata"] for n in theirs] == [n["metadata"] for n in ours]
        assert np.allclose([n["distance"] for n in theirs], [n["distance"] for n in ours], atol=1e-5)
    # One leaf of four searched: every answer comes from one leaf, all of its photos.
    one = tmp_path / "one-leaf.tflite"
    index = reindexed(exported[0], demo_bundle, IndexLayout("partitioned", leaves=4, search_fraction=0.25), one)
    assert index.leaves_searched == 1
    paths = [item.path for item in Bundle.open(demo_bundle).items]
    leaves = [{p for p, leaf in zip(paths, index.assignment) if leaf == n} for n in range(4)]
    answer = probe(do="search", model=str(one), queries=QUERIES, max_results=16)
    for query, found in zip(QUERIES, answer["results"]):
        assert {n["metadata"] for n in found} in leaves, query


def test_quantized_index_scores_as_the_exact_one(exported, demo_bundle, tmp_path):
    exact = probe(do="search", model=str(exported[0]), queries=QUERIES, max_results=16)["results"]
    for layout in (IndexLayout(quantized=True),
                   IndexLayout("partitioned", leaves=4, search_fraction=1.0, quantized=True)):
        model = tmp_path / "quantized.tflite"
        index = reindexed(exported[0], demo_bundle, layout, model)
        assert "uint8 codes (asymmetric hashing, 1 dimension per block)" in index.describe()
        hashed = probe(do="search", model=str(model), queries=QUERIES, max_results=16)["results"]
        for query, ours, theirs in zip(QUERIES, exact, hashed):
            distances = {n["metadata"]: n["distance"] for n in theirs}
            assert len(distances) == 16, query
            # Measured: 0.0034 at most here; 0.009 on random 384-d unit vectors.
            assert all(abs(distances[n["metadata"]] - n["distance"]) < 0.01 for n in ours), query


def test_hash_levels_keep_scores_close():
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(2000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:50] + 0.1 * rng.normal(size=(50, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    levels, codes = hash_levels(vectors)
    assert levels.shape == (256, 384) and codes.dtype == np.uint8
    rebuilt = np.take_along_axis(levels, codes.astype(np.int64), axis=0)
    assert np.abs(queries @ vectors.T - queries @ rebuilt.T).max() < 0.02


@pytest.mark.parametrize("quantized", [False, True], ids=["float32", "quantized"])
def test_index_is_byte_identical_to_tflite_supports_builder(demo_bundle, tmp_path, quantized):
    bundle = Bundle.open(demo_bundle)
    embeddings = np.asarray(bundle.embeddings)
    metadata = [item.path for item in bundle.items]
    layout = IndexLayout("partitioned", search_fraction=0.5, quantized=quantized)
    index = build_index(embeddings, metadata, layout, userinfo="glimpse")
    np.save(tmp_path / "vectors.npy", hash_levels(embeddings)[1] if quantized else embeddings)
    probe(do="reference_index", embeddings=str(tmp_path / "vectors.npy"), metadata=metadata,
          scann_config=index.scann_config.hex(), assignment=list(index.assignment), userinfo="glimpse",
          out=str(tmp_path / "reference.ldb"))
    assert (tmp_path / "reference.ldb").read_bytes() == index.data


def _with_tokenizer(bundle_dir: Path, dest: Path, edit) -> Path:
    """A copy of the bundle whose tokenizer.json ``edit`` changed, hashes recorded anew."""
    shutil.copytree(bundle_dir, dest)
    model = dest / "model"
    tokenizer = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    edit(tokenizer)
    (model / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    spec = json.loads((model / "model.json").read_text(encoding="utf-8"))
    spec["files"]["tokenizer.json"] = sha256_file(model / "tokenizer.json")
    (model / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    manifest = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    for name in ("tokenizer.json", "model.json"):
        manifest["files"][f"model/{name}"] = {"sha256": sha256_file(model / name),
                                              "size": (model / name).stat().st_size}
    (dest / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    return dest


def test_refuses_a_model_the_task_library_cannot_tokenize(demo_bundle, tmp_path):
    def to_bpe(tokenizer):
        tokenizer["model"]["type"] = "BPE"
        tokenizer["normalizer"] = {"type": "NFC"}

    bundle = _with_tokenizer(demo_bundle, tmp_path / "bpe-bundle", to_bpe)
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(bundle), "--out", str(tmp_path / "x.tflite"),
                   check=False)
    assert proc.returncode == 2
    assert "glimpse-provision: error: the Task Library's BertTokenizer cannot feed this model: " \
           "its tokenizer is 'BPE', not BERT WordPiece; its normaliser is not BERT's lower-casing one" in proc.stderr
    assert not (tmp_path / "x.tflite").exists()


def test_refuses_a_tower_it_cannot_rebuild(demo_bundle):
    spec = dataclasses.replace(Bundle.open(demo_bundle).spec, id="my-clip")
    with pytest.raises(ModelUnsupported, match="provisioning rebuilds only glimpse-default and models made by"):
        tasklib.export_tower(spec, Path("unused"), "float32", Path("unused.tflite"))


@pytest.mark.parametrize("args, message", [
    (["--search-fraction", "0"], "--search-fraction must be above 0 and at most 1"),
    (["--leaves", "-1"], "--leaves must be 0 (automatic) or more"),
    (["--index", "ivfpq"], "invalid choice: 'ivfpq'"),
])
def test_bad_options(demo_bundle, tmp_path, args, message):
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(demo_bundle), "--out",
                   str(tmp_path / "x.tflite"), *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_refuses_to_overwrite_without_force(exported, demo_bundle):
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(demo_bundle), "--out", str(exported[0]),
                   check=False)
    assert proc.returncode == 2
    assert "exists; pass --force to replace it" in proc.stderr


def test_says_which_host_packages_are_missing(demo_bundle, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "google_crc32c") else real(name, *a))
    with pytest.raises(GlimpseError, match=r"needs the host extra \(missing: torch, google-crc32c\): "
                                           r"pip install 'glimpse\[host\]'"):
        tasklib.export(tasklib.ExportOptions(bundle=demo_bundle, out=tmp_path / "x.tflite"))


def test_refuses_what_is_not_a_bundle(tmp_path):
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(tmp_path), "--out", str(tmp_path / "x.tflite"),
                   check=False)
    assert proc.returncode == 2
    assert "glimpse-provision: error:" in proc.stderr and "Traceback" not in proc.stderr
