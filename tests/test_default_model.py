"""Golden tests of the committed default model on the device runtime (LiteRT).

``reference.npz`` holds PyTorch float32 embeddings of reference texts and
photos, written by ``make models``; the int8 towers must stay close to them.
"""

from __future__ import annotations

import numpy as np
import pytest

from device.encoders import ImageEncoder, TextEncoder
from device.errors import ModelInvalid, QueryInvalid
from device.model import read_spec


def test_committed_model_spec_is_intact(model_dir):
    spec = read_spec(model_dir)  # checks every sha256
    assert spec.full_id == "glimpse-default@1.1.0"
    assert spec.dim == 384 and spec.quantization == "int8"
    assert spec.extra["parity"]["text_min_cosine"] >= 0.99
    assert spec.extra["parity"]["image_min_cosine"] >= 0.99
    assert (model_dir / "MODEL_CARD.md").is_file()


def test_text_tower_matches_pytorch_reference(model_dir):
    with np.load(model_dir / "reference.npz") as ref:
        texts, expected = list(ref["texts"]), ref["text_embeddings"]
    with TextEncoder.create_from_model_dir(model_dir) as encoder:
        got = np.stack([encoder.embed(str(t)) for t in texts])
    cosines = (got * expected).sum(1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99, cosines


def test_image_tower_matches_pytorch_reference(model_dir):
    with np.load(model_dir / "reference.npz") as ref:
        inputs, expected = ref["photo_inputs"], ref["photo_embeddings"]
    with ImageEncoder.create_from_model_dir(model_dir) as encoder:
        got = np.stack([encoder.embed_pixels(p) for p in inputs])
    cosines = (got * expected).sum(1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99, cosines


def test_embeddings_are_unit_length_and_repeatable(model_dir):
    with TextEncoder.create_from_model_dir(model_dir) as encoder:
        a, b = encoder.embed("a dog on a chair"), encoder.embed("a dog on a chair")
        other = encoder.embed("the surface of the moon")
    assert np.allclose(a, b)
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    assert float(a @ other) < 0.5  # unrelated texts are not near-duplicates


def test_text_encoder_refuses_empty_text(model_dir):
    with TextEncoder.create_from_model_dir(model_dir) as encoder:
        with pytest.raises(QueryInvalid):
            encoder.embed("  ")


def test_closed_encoder_refuses_work(model_dir):
    encoder = TextEncoder.create_from_model_dir(model_dir)
    encoder.close()
    with pytest.raises(ValueError, match="closed"):
        encoder.embed("a cat")


def test_image_tower_cannot_be_loaded_as_text_tower(model_dir, tmp_path):
    import json
    import shutil

    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    spec = json.loads((broken / "model.json").read_text())
    spec["text"]["file"] = spec["image"]["file"]
    (broken / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ModelInvalid, match="text tower inputs"):
        TextEncoder.create_from_model_dir(broken)


def _with_tokenizer_padding(model_dir, tmp_path, padding):
    """A copy of the committed model whose tokenizer.json pads as ``padding`` says (None: no padding)."""
    import json
    import shutil

    from device.model import sha256_file

    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    doc = json.loads((copy / "tokenizer.json").read_text(encoding="utf-8"))
    doc["padding"] = padding
    (copy / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    spec = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    spec["files"]["tokenizer.json"] = sha256_file(copy / "tokenizer.json")
    (copy / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    return copy


def test_text_encoder_pads_with_the_tokenizers_own_pad_id(model_dir, tmp_path):
    # CLIP tokenizers from Hugging Face pad with the end-of-text id, not 0.
    padding = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
               "pad_id": 102, "pad_type_id": 0, "pad_token": "[SEP]"}
    with TextEncoder.create_from_model_dir(_with_tokenizer_padding(model_dir, tmp_path, padding)) as encoder:
        ids, mask = encoder.tokenize("a cat")
    length = int(mask.sum())
    assert ids.shape == (1, encoder.spec.text.max_tokens)
    assert set(ids[0, length:].tolist()) == {102}
    assert mask[0, length:].sum() == 0


def test_text_encoder_pads_with_0_when_the_tokenizer_names_no_padding(model_dir, tmp_path):
    with TextEncoder.create_from_model_dir(_with_tokenizer_padding(model_dir, tmp_path, None)) as encoder:
        ids, mask = encoder.tokenize("a cat")
    assert ids.shape == (1, encoder.spec.text.max_tokens)
    assert set(ids[0, int(mask.sum()):].tolist()) == {0}
