"""``glimpse-provision import-model`` on small CLIP models the tests make (needs ``.venv-host``).

Each source is a real architecture of its kind shrunk to a few layers, with
random weights, saved in the file format users download: an OpenCLIP ViT as a
bare checkpoint and as a hub-style directory, a MobileCLIP-style OpenCLIP model
(timm FastViT image tower, non-causal text tower) as a safetensors directory, and a
Hugging Face ``CLIPModel`` directory with its tokenizer. The tokenizers are
CLIP's real BPE vocabulary (it ships inside open_clip). Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from device import images
from device.encoders import ImageEncoder, TextEncoder
from device.model import default_model_dir, read_spec
from provisioning import cli
from provisioning.models import clip as clip_import
from provisioning.models import convert
from tests.conftest import LIBRARY_PHOTOS, run_cli

pytestmark = pytest.mark.host

os.environ["HF_HUB_OFFLINE"] = "1"

TINY_VIT = "GlimpseTest-ViT"
TINY_MOBILECLIP = "GlimpseTest-MobileCLIP"
#: A shrunk ViT-B-32: same structure (pre-norm ViT, causal text transformer, CLIP BPE, 77 tokens).
VIT_CFG = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
#: A shrunk MobileCLIP-S1: a timm FastViT image tower (fastvit_t8, the smallest, for
#: MobileCLIP's fastvit_mci1) and a text transformer without causal mask.
MOBILECLIP_CFG = {"embed_dim": 32,
                  "vision_cfg": {"timm_model_name": "fastvit_t8", "timm_model_pretrained": False,
                                 "timm_pool": "avg", "timm_proj": None, "image_size": 64},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                               "no_causal_mask": True},
                  "custom_text": True}

#: Texts that are not in the import's own reference set.
TEXTS = ["a bowl of soup", "Two DOGS playing in the snow!", "naïve café façade", "Ωμέγα and 東京 at night",
         "don't stop; it's 5 o'clock", "“quoted” text", "emoji 🐱 cat",
         "word " * 100]
PHOTOS = ["coins.png", "moon.png", "camera.png", "brick.png"]


@pytest.fixture(scope="module")
def open_clip(tmp_path_factory):
    """open_clip, with the tests' two tiny architectures registered."""
    module = clip_import.import_open_clip()
    configs = tmp_path_factory.mktemp("open_clip_configs")
    (configs / f"{TINY_VIT}.json").write_text(json.dumps(VIT_CFG))
    (configs / f"{TINY_MOBILECLIP}.json").write_text(json.dumps(MOBILECLIP_CFG))
    module.add_model_config(configs)
    return module


def _random_model(open_clip, arch):
    import torch

    torch.manual_seed(1)
    return open_clip.create_model(arch).eval()


@pytest.fixture(scope="module")
def sources(open_clip, tmp_path_factory):
    """source name -> (path, --arch or None), each saved in its real file format."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("sources")
    vit = _random_model(open_clip, TINY_VIT)
    torch.save(vit.state_dict(), root / "vit.pt")  # as open_clip's training saves weights
    hub = root / "vit-hub"
    hub.mkdir()
    torch.save(vit.state_dict(), hub / "open_clip_pytorch_model.bin")
    (hub / "open_clip_config.json").write_text(json.dumps({"model_cfg": VIT_CFG, "preprocess_cfg": {
        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}}))
    mobile = root / "mobileclip-hub"
    mobile.mkdir()
    save_file({k: v.contiguous() for k, v in _random_model(open_clip, TINY_MOBILECLIP).state_dict().items()},
              str(mobile / "open_clip_model.safetensors"))
    # MobileCLIP's published preprocess: no mean/std (pixels in 0..1).
    (mobile / "open_clip_config.json").write_text(json.dumps({"model_cfg": MOBILECLIP_CFG, "preprocess_cfg": {
        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}))
    return {"openclip-file": (root / "vit.pt", TINY_VIT), "openclip-dir": (hub, None),
            "mobileclip-dir": (mobile, None), "hf-clip": (_hf_clip_dir(open_clip, root / "hf-clip"), None),
            "hf-clip-eos": (_hf_clip_dir(open_clip, root / "hf-clip-eos", legacy=False), None)}


def _hf_clip_dir(open_clip, path, legacy=True):
    """A tiny Hugging Face CLIPModel saved with save_pretrained, with a CLIP tokenizer
    made from open_clip's BPE file (the vocabulary every CLIP checkpoint uses). The
    tokenizer pads with end-of-text. ``legacy``: the config openai/clip-vit-base-patch32
    has (eos_token_id 2, so HF pools at the argmax id); else today's (eos_token_id
    49407: HF pools at the first end-of-text id)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path.mkdir()
    vocab, merges = clip_import.clip_bpe(open_clip.tokenizer.SimpleTokenizer())
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")  # Hugging Face's names for the same ids
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                     encoding="utf-8")
    CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt")).save_pretrained(path)
    torch.manual_seed(2)
    config = CLIPConfig(
        text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 77, "vocab_size": 49408,
                     **({"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1} if legacy else
                        {"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407})},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=32)
    CLIPModel(config).eval().save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "crop_size": {"height": 32, "width": 32}}))
    return path


IMPORTS = [("openclip-file", "float32"), ("openclip-file", "int8"), ("openclip-dir", "int8"),
           ("hf-clip", "float32"), ("hf-clip", "int8"), ("hf-clip-eos", "float32"),
           ("mobileclip-dir", "float32"), ("mobileclip-dir", "int8")]


@pytest.fixture(scope="module")
def imported(sources, tmp_path_factory):
    """(source, variant) -> imported model directory, made on first use."""
    made = {}
    root = tmp_path_factory.mktemp("imported")

    def _get(name, variant):
        if (name, variant) not in made:
            path, arch = sources[name]
            out = root / f"{name}-{variant}"
            clip_import.import_model(clip_import.ImportOptions(
                source=path, out=out, arch=arch, variant=variant, licence="MIT",
                source_url=f"https://example.org/{name}"), log=lambda *_: None)
            made[name, variant] = out
        return made[name, variant]
    return _get


@pytest.fixture(scope="module")
def loaded(sources):
    """source name -> the source model in PyTorch (the parity reference)."""
    cache = {}

    def _get(name):
        if name not in cache:
            cache[name] = clip_import.load_source(*sources[name])
        return cache[name]
    return _get


@pytest.mark.parametrize("name, variant", IMPORTS)
def test_imported_model_meets_the_parity_floor(imported, name, variant):
    model = imported(name, variant)
    spec = read_spec(model)  # every file present with its sha256
    parity = spec.extra["parity"]
    print(f"{name} {variant}: text {parity['text_min_cosine']:.6f}, image {parity['image_min_cosine']:.6f}")
    floor = {"float32": 0.9999, "int8": 0.99}[variant]
    assert parity["text_min_cosine"] >= floor and parity["image_min_cosine"] >= floor
    assert spec.quantization == variant and spec.dim == 32 and spec.text.max_tokens == 77
    assert spec.extra["imported"]["licence"] == "MIT"
    assert len(spec.extra["imported"]["checkpoint_sha256"]) == 64


@pytest.mark.parametrize("name, variant", IMPORTS)
def test_device_encoders_reproduce_the_source_model(imported, loaded, name, variant):
    source = loaded(name)
    model = imported(name, variant)
    ids, mask = source.source_tokenize(TEXTS)
    expected_text = source.source_embed_text(ids, mask)
    inputs = [images.tower_input(images.open_photo(images_path(p)).image, source.image_size)[0] for p in PHOTOS]
    expected_image = source.source_embed_image(np.stack(inputs).astype(np.float32))
    with TextEncoder.create_from_model_dir(model) as text, ImageEncoder.create_from_model_dir(model) as image:
        got_text = np.stack([text.embed(t) for t in TEXTS])
        got_image = np.stack([image.embed_pixels(x) for x in inputs])
    floor = {"float32": 0.9999, "int8": 0.99}[variant]
    assert convert.cosine_rows(got_text, expected_text).min() >= floor
    assert convert.cosine_rows(got_image, expected_image).min() >= floor
    # Different texts stay apart: the tower does not collapse every input to one vector.
    assert convert.cosine_rows(got_text[:1], got_text[1:2])[0] < 0.999


def images_path(name):
    from provisioning import demo

    return demo.demo_photo(name)


@pytest.mark.parametrize("name", ["openclip-file", "hf-clip"])
def test_device_tokenizer_gives_the_source_tokenizers_ids(imported, loaded, name):
    source = loaded(name)
    texts = TEXTS + ["A photo of a CAT.", "it's", "12345 apples", "tab\tand\nnewline  spaces ",
                     "ĉu vi parolas esperanton?", "Привет, мир", "a-b_c/d\\e", "x" * 300,
                     # what open_clip's ftfy and HTML clean-up change before tokenizing
                     "ﬁsh &amp; chips", "ＡＢＣ！", "„low“ ‚single‘", "a &lt;b&gt;", "ctrl\x07char"]
    expected_ids, expected_mask = source.source_tokenize(texts)
    with TextEncoder.create_from_model_dir(imported(name, "int8")) as encoder:
        for text, want_ids, want_mask in zip(texts, expected_ids, expected_mask):
            ids, mask = encoder.tokenize(text)
            assert ids[0].tolist() == want_ids.tolist(), text
            assert mask[0].tolist() == want_mask.tolist(), text
    long_ids, _ = source.source_tokenize(["word " * 100])
    assert long_ids[0][0] == 49406 and long_ids[0][-1] == 49407  # truncated, end-of-text kept


def test_pixels_are_normalised_with_the_models_own_mean_and_std(imported, loaded):
    # The hub directory says mean (0.5, 0.4, 0.3), std (0.2, 0.25, 0.3), not CLIP's defaults.
    spec = read_spec(imported("openclip-dir", "int8"))
    assert spec.extra["imported"]["image_mean"] == [0.5, 0.4, 0.3]
    assert loaded("openclip-dir").std == (0.2, 0.25, 0.3)
    assert read_spec(imported("mobileclip-dir", "int8")).extra["imported"]["image_std"] == [1.0, 1.0, 1.0]


def test_model_card_records_licence_and_provenance(imported, sources):
    model = imported("openclip-file", "int8")
    card = (model / "MODEL_CARD.md").read_text(encoding="utf-8")
    spec = read_spec(model)
    assert "| licence of the weights | MIT |" in card
    assert "https://example.org/openclip-file" in card
    assert spec.extra["imported"]["checkpoint_sha256"] in card
    assert spec.extra["imported"]["architecture"] == TINY_VIT


def test_build_eval_and_selftest_work_with_an_imported_model(imported, library, tmp_path):
    model = imported("hf-clip", "int8")
    bundle = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(bundle), "--model", str(model),
            "--quiet", "--no-cache", "--workers", "1")
    found = run_cli("device", "search", "a cat", "--bundle", str(bundle), "-k", "20", "--json")
    results = json.loads(found.stdout)
    assert sorted(r["path"] for r in results) == sorted(LIBRARY_PHOTOS.values())
    assert all(-1 <= r["score"] <= 1 for r in results)
    captions = tmp_path / "captions.csv"
    captions.write_text("image,caption\npets/cat.png,a cat\nkitchen/coffee.png,a cup of coffee\n")
    report = run_cli("provisioning", "eval", "--captions", str(captions), "--images", str(library),
                     "--model", str(model), "--json")
    figures = json.loads(report.stdout)
    assert figures["images"] == 2 and figures["captions"] == 2 and figures["model"].startswith("hf-clip@")
    checked = run_cli("device", "selftest", "--model", str(model))  # what a new Pi runs
    assert "text: min cosine" in checked.stdout and "image: min cosine" in checked.stdout


def test_import_without_licence_says_it_is_unknown(sources, tmp_path):
    lines = []
    path, arch = sources["openclip-file"]
    spec = clip_import.import_model(clip_import.ImportOptions(source=path, out=tmp_path / "m", arch=arch,
                                                              variant="float32"), log=lines.append)
    assert any("no --licence" in line for line in lines)
    assert spec.extra["licence"].startswith("unknown")
    assert str(path.resolve()) in spec.extra["imported"]["source"]


def _cli_error(capsys, *argv):
    status = cli.main(["import-model", *argv])
    return status, capsys.readouterr().err


def test_missing_source_is_a_clear_error(capsys, tmp_path):
    status, err = _cli_error(capsys, str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m"))
    assert status == 2 and "nope.pt: no such file or directory" in err and "Traceback" not in err


def test_bare_checkpoint_needs_an_architecture(capsys, sources, tmp_path):
    status, err = _cli_error(capsys, str(sources["openclip-file"][0]), "--out", str(tmp_path / "m"))
    assert status == 2 and "--arch" in err


def test_unknown_architecture_is_a_clear_error(capsys, sources, tmp_path):
    status, err = _cli_error(capsys, str(sources["openclip-file"][0]), "--arch", "ViT-Q-99",
                             "--out", str(tmp_path / "m"))
    assert status == 2 and "'ViT-Q-99' is not an open_clip architecture" in err


def test_weights_of_another_architecture_are_refused(capsys, sources, tmp_path):
    status, err = _cli_error(capsys, str(sources["openclip-file"][0]), "--arch", "ViT-B-32",
                             "--out", str(tmp_path / "m"))
    assert status == 2 and "cannot load these weights as ViT-B-32" in err


@pytest.mark.parametrize("name", ["vit.pt", "open_clip_model.safetensors"])
def test_truncated_checkpoint_is_refused(capsys, sources, tmp_path, name):
    whole = (sources["openclip-file"][0] if name == "vit.pt"
             else sources["mobileclip-dir"][0] / name)
    broken = tmp_path / name
    broken.write_bytes(whole.read_bytes()[:4096])
    status, err = _cli_error(capsys, str(broken), "--arch", TINY_VIT, "--out", str(tmp_path / "m"))
    assert status == 2 and "not a readable checkpoint" in err and "download" in err


def test_a_directory_of_another_model_is_not_a_clip_model(capsys, tmp_path):
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    status, err = _cli_error(capsys, str(other), "--out", str(tmp_path / "m"))
    assert status == 2 and "not a CLIP model" in err
    (other / "config.json").unlink()
    status, err = _cli_error(capsys, str(other), "--out", str(tmp_path / "m"))
    assert status == 2 and "not a CLIP model directory" in err


def test_hf_directory_without_weights_is_a_clear_error(capsys, sources, tmp_path):
    copy = tmp_path / "hf"
    shutil.copytree(sources["hf-clip"][0], copy)
    (copy / "model.safetensors").unlink()
    status, err = _cli_error(capsys, str(copy), "--out", str(tmp_path / "m"))
    assert status == 2 and "cannot load the CLIP weights" in err


def test_parity_below_the_floor_is_refused(capsys, sources, tmp_path, monkeypatch):
    # A floor no conversion reaches stands in for a tower that converts badly.
    monkeypatch.setitem(clip_import.PARITY_FLOOR, "float32", 1.01)
    path, arch = sources["openclip-file"]
    out = tmp_path / "m"
    shutil.copytree(default_model_dir(), out)  # an earlier model, replaced only by a complete one
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    status, err = _cli_error(capsys, str(path), "--arch", arch, "--variant", "float32", "--out", str(out),
                             "--force")
    assert status == 2 and "below the float32 floor 1.01" in err and "nothing was written" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old model is left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # and nothing half-written beside it


@pytest.mark.parametrize("name", ["openclip-file", "hf-clip"])
def test_end_of_text_is_found_by_the_mask_whatever_the_pad_id(imported, loaded, name):
    # A causal CLIP text tower's end-of-text feature cannot depend on what follows it:
    # padded with 0 (open_clip) or with end-of-text (HF), the converted tower agrees.
    from provisioning.models import modeldir

    model = imported(name, "float32")
    ids, mask = loaded(name).source_tokenize(["a dog on a beach", "Two DOGS playing in the snow!"])
    runs = []
    for pad in (0, 49407, 320):
        padded = np.where(mask == 1, ids, pad).astype(np.int32)
        runs.append(modeldir.run_tflite(model / read_spec(model).text.file,
                                        [(i[None], m[None].astype(np.int32)) for i, m in zip(padded, mask)]))
    assert convert.cosine_rows(runs[0], runs[1]).min() >= 0.99999
    assert convert.cosine_rows(runs[0], runs[2]).min() >= 0.99999
    assert convert.cosine_rows(runs[0][:1], runs[0][1:])[0] < 0.999  # and the two texts differ
