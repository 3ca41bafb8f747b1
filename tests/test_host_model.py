"""The default model rebuilt from its PyPI packages (needs PyTorch: ``.venv-host``).

Checks that ``make models`` reproduces the committed files, and the parity of
both towers, float32 and int8, against PyTorch on texts and photos that are
not in the reference set the build itself checks.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from device import images
from device.encoders import ImageEncoder, TextEncoder
from provisioning import demo
from provisioning.models import convert
from provisioning.models import default as default_model

pytestmark = pytest.mark.host

EXTRA_TEXTS = ["a bowl of soup", "two dogs playing in the snow", "an old steam locomotive",
               "Sunset over the sea", "a red car parked outside", "ein Hund"]
EXTRA_PHOTOS = ["coins.png", "moon.png", "camera.png", "brick.png"]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    default_model.build(out / "int8", variant="int8", log=lambda *_: None)
    default_model.build(out / "float32", variant="float32", log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def pytorch_reference():
    tower = default_model.load_text_tower()
    tokenizer = default_model.load_tokenizer(default_model.RECIPE["max_tokens"])
    texts = default_model.embed_texts(tower, tokenizer, EXTRA_TEXTS)
    matrix = default_model.class_embeddings(tower, tokenizer, default_model.RECIPE["prompts"])
    image_tower = default_model.load_image_tower(matrix, default_model.RECIPE["conse_top_k"],
                                                 default_model.RECIPE["conse_temperature"])
    import torch

    inputs = [images.tower_input(images.open_photo(demo.demo_photo(n)).image, 224) for n in EXTRA_PHOTOS]
    with torch.no_grad():
        photos = np.concatenate([image_tower(torch.from_numpy(x)).numpy() for x in inputs])
    return texts, inputs, photos


def _lite(model_dir, inputs):
    with TextEncoder.create_from_model_dir(model_dir) as text, ImageEncoder.create_from_model_dir(model_dir) as image:
        return (np.stack([text.embed(t) for t in EXTRA_TEXTS]),
                np.stack([image.embed_pixels(x[0]) for x in inputs]))


#: The sha256 of a ``.tflite`` file as model.json (``"NAME.tflite": "HEX"``) and the model
#: card's file table (``| `NAME.tflite` | ... | `HEX16…` |``) record it.
_TFLITE_DIGEST = re.compile(rb'("[^"/]+\.tflite": "|`[^`/]+\.tflite` \|[^|\n]*\| `)[0-9a-f]+')


def _without_tflite_digests(data: bytes) -> bytes:
    """``data`` with the sha256 of every ``.tflite`` file blanked, all else byte for byte."""
    return _TFLITE_DIGEST.sub(rb"\1", data)


def test_rebuild_matches_the_committed_model(rebuilt, model_dir, pytorch_reference):
    for name in ["model.json", "tokenizer.json", "MODEL_CARD.md", "text_int8.tflite", "image_int8.tflite"]:
        committed, again = (model_dir / name).read_bytes(), (rebuilt / "int8" / name).read_bytes()
        if name in ("model.json", "MODEL_CARD.md"):
            # They record the .tflite files' sha256, which follows the bytes the converter wrote
            # (the towers' Python module names are in them): those are left out on both sides,
            # the towers are compared by embeddings below, and everything else must be identical.
            committed, again = _without_tflite_digests(committed), _without_tflite_digests(again)
        same = again == committed
        if not same and name.endswith(".tflite"):
            continue  # a different converter build may reorder bytes: compared by embeddings below
        assert same, f"{name} differs from the committed file: run `make models` and commit"
    _, inputs, _ = pytorch_reference
    committed_text, committed_image = _lite(model_dir, inputs)
    rebuilt_text, rebuilt_image = _lite(rebuilt / "int8", inputs)
    assert convert.cosine_rows(committed_text, rebuilt_text).min() >= 0.9999
    assert convert.cosine_rows(committed_image, rebuilt_image).min() >= 0.9999


@pytest.mark.parametrize("variant, floor", [("float32", 0.9999), ("int8", 0.99)])
def test_towers_match_pytorch(rebuilt, pytorch_reference, variant, floor):
    texts, inputs, photos = pytorch_reference
    lite_text, lite_image = _lite(rebuilt / variant, inputs)
    text_cos = convert.cosine_rows(lite_text, texts)
    image_cos = convert.cosine_rows(lite_image, photos)
    print(f"{variant}: text min cosine {text_cos.min():.6f}, image min cosine {image_cos.min():.6f}")
    assert text_cos.min() >= floor
    assert image_cos.min() >= floor


def test_build_records_its_parity(rebuilt):
    from device.model import read_spec

    for variant, floor in [("float32", 0.9999), ("int8", 0.99)]:
        spec = read_spec(rebuilt / variant)
        assert spec.quantization == variant
        assert spec.extra["parity"]["text_min_cosine"] >= floor
        assert spec.extra["parity"]["image_min_cosine"] >= floor


def test_conse_keeps_the_top_k_classes():
    import torch

    matrix = np.eye(1000, 384, dtype=np.float32)  # class i -> axis i (i < 384)
    tower = default_model.load_image_tower(matrix, top_k=3, temperature=1.0)
    logits = torch.full((1, 1000), -20.0)
    logits[0, [5, 7, 9, 11]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    tower.classifier.forward = lambda x: logits  # only ConSE is under test here
    out = tower(torch.zeros(1, 224, 224, 3)).detach().numpy()[0]
    assert set(np.flatnonzero(out > 1e-6)) == {5, 7, 9}  # the 4th class is dropped
    assert out[5] > out[7] > out[9]
    assert abs(np.linalg.norm(out) - 1) < 1e-6
