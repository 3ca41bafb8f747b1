"""device.model: reading and checking a model directory's model.json."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest

from device.errors import ModelInvalid
from device.model import (MODEL_FORMAT_VERSION, SPEC_NAME, ModelSpec, read_spec, sha256_file,
                          write_spec)


@pytest.fixture
def model_copy(model_dir, tmp_path):
    """A private copy of the committed model directory, safe to alter."""
    dest = tmp_path / "model"
    shutil.copytree(model_dir, dest)
    return dest


def _load(model_copy):
    return json.loads((model_copy / SPEC_NAME).read_text(encoding="utf-8"))


def _save(model_copy, doc):
    (model_copy / SPEC_NAME).write_text(json.dumps(doc), encoding="utf-8")


def _flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_read_spec_of_the_committed_model(model_copy):
    spec = read_spec(model_copy)

    assert isinstance(spec, ModelSpec)
    assert spec.id == "glimpse-default"
    assert spec.full_id == f"{spec.id}@{spec.version}"
    assert spec.distance == "cosine"
    assert spec.dim > 0
    assert spec.text.max_tokens > 0 and spec.image.size > 0
    # Every file the spec names is there and hashes as recorded.
    for name in (spec.text.file, spec.text.tokenizer, spec.image.file):
        assert name in spec.files
    for name, digest in spec.files.items():
        assert sha256_file(model_copy / name) == digest
    # Unknown keys are kept, not dropped.
    assert spec.extra.get("reference") == "reference.npz"
    assert "format" not in spec.extra and "files" not in spec.extra


def test_embedding_key_names_the_image_tower_not_only_the_version(model_copy):
    spec = read_spec(model_copy)
    assert spec.embedding_key == f"{spec.full_id}#{spec.files[spec.image.file][:16]}"
    other_text = dataclasses.replace(spec, files={**spec.files, spec.text.file: "0" * 64})
    other_image = dataclasses.replace(spec, files={**spec.files, spec.image.file: "0" * 64})
    # Photo vectors come from the image tower alone: a new text tower keeps them, a new image tower does not.
    assert other_text.embedding_key == spec.embedding_key
    assert other_image.embedding_key != spec.embedding_key and other_image.full_id == spec.full_id


def test_the_committed_model_itself_verifies(model_dir):
    assert read_spec(model_dir).id == "glimpse-default"


@pytest.mark.parametrize("name", ["tokenizer.json", "text_int8.tflite", "image_int8.tflite", "reference.npz"])
def test_altered_file_is_named(model_copy, name):
    assert name in read_spec(model_copy).files
    size = (model_copy / name).stat().st_size
    _flip_byte(model_copy / name)
    assert (model_copy / name).stat().st_size == size

    with pytest.raises(ModelInvalid, match=rf"model file {name} was altered"):
        read_spec(model_copy)


def test_verify_false_skips_the_hashes(model_copy):
    _flip_byte(model_copy / "tokenizer.json")
    assert read_spec(model_copy, verify=False).id == "glimpse-default"


def test_missing_file_is_named(model_copy):
    (model_copy / "text_int8.tflite").unlink()
    with pytest.raises(ModelInvalid, match=r"missing model file text_int8\.tflite"):
        read_spec(model_copy)


def test_missing_spec_says_it_is_not_a_model_directory(model_copy):
    (model_copy / SPEC_NAME).unlink()
    with pytest.raises(ModelInvalid, match=r"no model spec"):
        read_spec(model_copy)


def test_not_a_directory_at_all(tmp_path):
    with pytest.raises(ModelInvalid, match=r"no model spec"):
        read_spec(tmp_path / "nowhere")


@pytest.mark.parametrize("version", [MODEL_FORMAT_VERSION + 1, 0, "1", None])
def test_wrong_format_version(model_copy, version):
    doc = _load(model_copy)
    doc["format_version"] = version
    _save(model_copy, doc)
    with pytest.raises(ModelInvalid, match=rf"model format version {re.escape(repr(version))} is not supported"):
        read_spec(model_copy)


def test_wrong_format_name(model_copy):
    doc = _load(model_copy)
    doc["format"] = "some-other-model"
    _save(model_copy, doc)
    with pytest.raises(ModelInvalid, match=r"not a glimpse-model spec"):
        read_spec(model_copy)


@pytest.mark.parametrize("text", ["{ this is not json", "", "[1, 2, 3]", '"glimpse-model"'])
def test_spec_that_is_not_a_json_object(model_copy, text):
    (model_copy / SPEC_NAME).write_text(text, encoding="utf-8")
    with pytest.raises(ModelInvalid, match=r"model\.json"):
        read_spec(model_copy)


def test_spec_that_is_not_utf8(model_copy):
    (model_copy / SPEC_NAME).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelInvalid, match=r"unreadable model spec"):
        read_spec(model_copy)


@pytest.mark.parametrize(
    "change",
    [
        lambda doc: doc.pop("dim"),
        lambda doc: doc.update(dim="wide"),
        lambda doc: doc["text"].pop("max_tokens"),
        lambda doc: doc["image"].update(colour="rgb"),
    ],
    ids=["no-dim", "dim-not-a-number", "text-without-max-tokens", "image-unknown-key"],
)
def test_malformed_spec(model_copy, change):
    doc = _load(model_copy)
    change(doc)
    _save(model_copy, doc)
    with pytest.raises(ModelInvalid, match=r"malformed model spec"):
        read_spec(model_copy)


def test_distance_other_than_cosine_is_refused(model_copy):
    doc = _load(model_copy)
    doc["distance"] = "euclidean"
    _save(model_copy, doc)
    with pytest.raises(ModelInvalid, match=r"distance 'euclidean' is not supported"):
        read_spec(model_copy)


def test_tower_file_without_a_recorded_hash_is_refused(model_copy):
    doc = _load(model_copy)
    del doc["files"]["image_int8.tflite"]
    _save(model_copy, doc)
    with pytest.raises(ModelInvalid, match=r"image_int8\.tflite has no recorded sha256"):
        read_spec(model_copy)


def test_to_json_reproduces_the_committed_document(model_copy):
    spec = read_spec(model_copy)
    assert spec.to_json() == _load(model_copy)


def test_write_spec_read_spec_round_trip(model_copy):
    spec = read_spec(model_copy)
    (model_copy / SPEC_NAME).unlink()

    path = write_spec(model_copy, spec)

    assert path == model_copy / SPEC_NAME
    again = read_spec(model_copy)
    assert again == spec
    assert again.to_json() == spec.to_json()


def test_round_trip_of_a_changed_spec(model_copy):
    spec = read_spec(model_copy)
    changed = dataclasses.replace(spec, version="9.9.9", extra={**spec.extra, "note": "rebuilt"})

    write_spec(model_copy, changed)
    again = read_spec(model_copy)

    assert again.full_id == "glimpse-default@9.9.9"
    assert again.extra["note"] == "rebuilt"
    assert again == changed


def test_the_committed_model_records_what_a_strong_match_is(model_copy):
    relevance = read_spec(model_copy).relevance
    assert relevance is not None and -1 <= relevance.text_strong <= 1 and -1 <= relevance.image_strong <= 1
    assert relevance.strength(relevance.text_strong) == "strong"
    assert relevance.strength(relevance.text_strong - 0.001) == "weak"
    assert relevance.strength(relevance.image_strong - 0.001, kind="image") == "weak"


@pytest.mark.parametrize("bad", [{"text_strong": 0.5}, {"text_strong": "high", "image_strong": 0.9},
                                 {"text_strong": 1.5, "image_strong": 0.9}, [0.5, 0.9]])
def test_a_malformed_relevance_is_refused(model_copy, bad):
    doc = _load(model_copy)
    doc["relevance"] = bad
    _save(model_copy, doc)
    with pytest.raises(ModelInvalid, match="malformed relevance"):
        read_spec(model_copy)


def test_a_model_without_relevance_still_reads(model_copy):
    doc = _load(model_copy)
    del doc["relevance"]
    _save(model_copy, doc)
    assert read_spec(model_copy).relevance is None
