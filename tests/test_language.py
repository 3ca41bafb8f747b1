"""device.language and the multilingual text route (model.json format 2), with the real small pieces.

The format-2 model here is made without PyTorch: its "multilingual" tower is the
default model's own text tower fed by a SentencePiece model trained on a few
sentences, so the vectors of the two routes differ and the test can tell which
route a query took. The real e5 route is tested on the host (tests/test_host_multilingual.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil

import numpy as np
import pytest

from device.encoders import MULTILINGUAL_ROUTE, PRIMARY_ROUTE, TextEncoder
from device.errors import ModelInvalid
from device.language import ROUTERS, VocabularyRouter, create_router
from device.model import SPEC_NAME, MultilingualRoute, read_spec, sha256_file, write_spec

#: One query per language of the evaluation set (not taken from it), and the route each must take.
QUERIES = {
    "en": ["a cat sleeping on a sofa", "something red", "two people at the beach", "black and white",
           "a motorbike", "sunflowers in a field", "painted houses"],
    "es": ["un gato durmiendo en el sofá", "algo rojo", "una manzana"],
    "de": ["eine Katze auf dem Sofa", "ein Apfel", "Straßenbahn im Schnee"],
    "fr": ["un chat qui dort", "une pomme", "les montagnes enneigées"],
    "pt": ["um cachorro na praia", "uma maçã", "pôr do sol sobre o mar"],
    "it": ["un gatto che dorme", "la torre di Pisa", "una mela"],
    "ru": ["кошка спит на диване", "красный мотоцикл"],
    "zh": ["一只猫在睡觉", "红色的汽车"],
    "ja": ["猫が寝ている", "赤いバイク"],
}


@pytest.fixture(scope="module")
def vocabulary(model_dir):
    from tokenizers import Tokenizer

    spec = read_spec(model_dir, verify=False)
    return Tokenizer.from_file(str(model_dir / spec.text.tokenizer)).get_vocab()


@pytest.mark.parametrize("lang", sorted(QUERIES))
def test_heuristic_router_keeps_english_and_sends_every_other_language_away(lang, vocabulary):
    router = create_router("heuristic", lambda: vocabulary)
    for text in QUERIES[lang]:
        assert router.is_english(text) is (lang == "en"), text


def test_heuristic_reads_the_vocabulary_once_and_only_when_needed():
    calls = []

    def vocabulary():
        calls.append(1)
        return ["a", "cat"]

    router = VocabularyRouter(vocabulary)
    assert router.is_english("кошка") is False  # decided by script alone
    assert calls == []
    assert router.is_english("a cat") is True
    assert router.is_english("a dog") is False  # "dog" is not in this vocabulary
    assert calls == [1]


def test_py3langid_router_names_languages_of_longer_queries():
    router = create_router("py3langid", lambda: [])
    assert router.is_english("a photo of two people walking on the beach at sunset") is True
    assert router.is_english("una foto de dos personas caminando por la playa") is False


def test_unknown_router_is_a_model_error():
    with pytest.raises(ModelInvalid, match="unknown language router"):
        create_router("guess", lambda: [])
    assert set(ROUTERS) == {"heuristic", "py3langid"}


def _sentencepiece_model() -> bytes:
    import sentencepiece

    model = io.BytesIO()
    lines = [t for texts in QUERIES.values() for t in texts] * 4
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=120, model_type="unigram",
        pad_id=1, unk_id=3, bos_id=0, eos_id=2, hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return model.getvalue()


@pytest.fixture(scope="module")
def v2_model(model_dir, tmp_path_factory):
    """A format-2 copy of the default model whose second route is its own tower behind SentencePiece."""
    dest = tmp_path_factory.mktemp("v2") / "model"
    shutil.copytree(model_dir, dest)
    spec = read_spec(dest)
    shutil.copyfile(dest / spec.text.file, dest / "text_multilingual.tflite")
    (dest / "tokenizer_multilingual.model").write_bytes(_sentencepiece_model())
    route = MultilingualRoute(file="text_multilingual.tflite", tokenizer="tokenizer_multilingual.model",
                              max_tokens=spec.text.max_tokens, query_prefix="query: ", router="heuristic")
    files = dict(spec.files, **{n: sha256_file(dest / n) for n in (route.file, route.tokenizer)})
    write_spec(dest, dataclasses.replace(spec, text=dataclasses.replace(spec.text, multilingual=route),
                                         files=files))
    return dest


def test_format_2_round_trips_and_format_1_is_written_without_the_route(v2_model, model_dir):
    doc = json.loads((v2_model / SPEC_NAME).read_text(encoding="utf-8"))
    assert doc["format_version"] == 2
    assert doc["text"]["multilingual"]["router"] == "heuristic"
    assert read_spec(v2_model).text.multilingual.query_prefix == "query: "
    v1 = read_spec(model_dir)
    assert v1.text.multilingual is None
    assert v1.to_json() == json.loads((model_dir / SPEC_NAME).read_text(encoding="utf-8"))


def test_format_1_with_a_route_and_a_route_file_without_sha256_are_refused(v2_model, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(v2_model, dest)
    doc = json.loads((dest / SPEC_NAME).read_text(encoding="utf-8"))
    (dest / SPEC_NAME).write_text(json.dumps(dict(doc, format_version=1)), encoding="utf-8")
    with pytest.raises(ModelInvalid, match="needs model format version 2"):
        read_spec(dest)
    del doc["files"]["tokenizer_multilingual.model"]
    (dest / SPEC_NAME).write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ModelInvalid, match="tokenizer_multilingual.model has no recorded sha256"):
        read_spec(dest)


def test_v1_model_takes_the_primary_route_for_every_language(model_dir):
    with TextEncoder.create_from_model_dir(model_dir) as encoder:
        assert not encoder.multilingual
        for text in QUERIES["es"] + QUERIES["ja"]:
            assert encoder.route_of(text) == PRIMARY_ROUTE
            np.testing.assert_array_equal(encoder.embed(text), encoder.embed(text, PRIMARY_ROUTE))
        with pytest.raises(ValueError, match="no multilingual text route"):
            encoder.embed("un gato", MULTILINGUAL_ROUTE)


def test_v2_model_routes_english_to_the_primary_tower_and_spanish_to_the_other(v2_model):
    with TextEncoder.create_from_model_dir(v2_model) as encoder:
        english = encoder.embed("a cat sleeping on a sofa")
        assert not encoder.multilingual_loaded  # English alone never loads the second tower
        np.testing.assert_array_equal(english, encoder.embed("a cat sleeping on a sofa", PRIMARY_ROUTE))
        spanish = encoder.embed("un gato durmiendo en el sofá")
        assert encoder.multilingual_loaded
        assert encoder.route_of("un gato durmiendo en el sofá") == MULTILINGUAL_ROUTE
        np.testing.assert_array_equal(spanish, encoder.embed("un gato durmiendo en el sofá", MULTILINGUAL_ROUTE))
        primary = encoder.embed("un gato durmiendo en el sofá", PRIMARY_ROUTE)
        assert float(spanish @ primary) < 0.999  # a different tokenizer fed the tower
        assert abs(float(np.linalg.norm(spanish)) - 1) < 1e-5


def test_multilingual_tokens_are_framed_prefixed_and_padded(v2_model):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(v2_model / "tokenizer_multilingual.model"))
    with TextEncoder.create_from_model_dir(v2_model) as encoder:
        encoder.embed("una manzana")
        ids, mask = encoder._multilingual.tokenize("una   manzana")
    want = [processor.bos_id(), *processor.encode("query: una manzana"), processor.eos_id()]
    assert ids.shape == mask.shape == (1, 64)
    assert ids[0, :len(want)].tolist() == want
    assert set(ids[0, len(want):].tolist()) == {processor.pad_id()}
    assert mask.sum() == len(want)
