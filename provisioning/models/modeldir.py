"""Writing a model directory: the kit the three model makers share.

``glimpse-default`` (:mod:`provisioning.models.default`), an imported CLIP model
(:mod:`provisioning.models.clip`) and a trained one (:mod:`provisioning.models.train`)
are written the same way, so the device reads them alike::

    export_towers    both towers to .tflite (litert-torch), int8 or float32
    tower_parity     LiteRT against PyTorch on the reference inputs
    save_reference   reference.npz, what ``glimpse selftest`` checks on a Pi
    write_model      the file hashes, model.json and the model card

The file names are the device's (:mod:`device.model`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.model import (
    CARD_FILE,
    IMAGE_FILE,
    REFERENCE_FILE,
    REFERENCE_KEYS,
    TEXT_FILE,
    TOKENIZER_FILE,
    ImageTowerSpec,
    ModelSpec,
    TextTowerSpec,
    sha256_file,
    write_spec,
)
from provisioning import demo
from provisioning.models import convert

__all__ = ["CARD_FILE", "IMAGE_FILE", "REFERENCE_FILE", "REFERENCE_PHOTOS", "REFERENCE_TEXTS", "TEXT_FILE",
           "TOKENIZER_FILE", "check_parity", "embed_texts", "export_towers", "model_card", "parity_table",
           "reference_inputs", "run_tflite", "save_reference", "tower_parity", "write_model"]

#: Texts and demo photos whose embeddings are kept as a reference (``reference.npz``)
#: so any runtime, a Pi's included, can check itself against PyTorch.
REFERENCE_TEXTS = [
    "a cat", "a cup of coffee", "a space launch", "a motorbike",
    "a man with a camera on a tripod", "a woman in a space suit", "coins on a table",
    "the moon at night", "a brick wall", "a dog sitting on a chair",
    "galaxies in deep space", "a page of a book",
]
REFERENCE_PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png"]


def embed_texts(tower, tokenizer, texts: list[str], batch: int = 64) -> np.ndarray:
    """Embed ``texts`` with the PyTorch text tower; (len(texts), 384) float32."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            encodings = tokenizer.encode_batch(texts[start:start + batch])
            ids = torch.tensor([e.ids for e in encodings], dtype=torch.int32)
            mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int32)
            out.append(tower(ids, mask).numpy())
    return np.concatenate(out).astype(np.float32)


def reference_inputs(size: int) -> tuple[list[str], np.ndarray]:
    """The reference photos as tower inputs: names and uint8 (n, size, size, 3)."""
    from device import images

    arrays = [images.tower_input(images.open_photo(demo.demo_photo(n), min_side=size).image, size)[0]
              for n in REFERENCE_PHOTOS]
    return list(REFERENCE_PHOTOS), np.stack(arrays).astype(np.uint8)


def run_tflite(path: Path, batches) -> np.ndarray:
    """Run a ``.tflite`` tower on each tuple of input arrays; stacked outputs."""
    from device.runtime import load_interpreter

    interpreter = load_interpreter(path)
    inputs = sorted(interpreter.get_input_details(), key=lambda d: d["name"])
    output = interpreter.get_output_details()[0]
    out = []
    for arrays in batches:
        for detail, array in zip(inputs, arrays):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
        out.append(interpreter.get_tensor(output["index"])[0].copy())
    return np.stack(out)


def export_towers(text_tower, image_tower, out_dir: Path, variant: str, max_tokens: int, size: int,
                  log=print, image_int8_ops: tuple[str, ...] | None = None) -> tuple[str, str]:
    """Convert both towers to ``.tflite`` in ``out_dir`` (the tokenizer is the caller's to write).

    ``image_int8_ops`` limits int8 weights in the image tower to those ops
    (see :func:`provisioning.models.convert.export_tflite`).

    Returns:
        The text and image tower file names.
    """
    import torch

    text_file = TEXT_FILE.format(variant=variant)
    image_file = IMAGE_FILE.format(variant=variant)
    sample_ids = torch.zeros((1, max_tokens), dtype=torch.int32)
    sample_mask = torch.ones((1, max_tokens), dtype=torch.int32)
    log(f"converting the text tower ({variant})")
    convert.export_tflite(text_tower, (sample_ids, sample_mask), out_dir / text_file, variant)
    log(f"converting the image tower ({variant})")
    convert.export_tflite(image_tower, (torch.zeros((1, size, size, 3)),), out_dir / image_file, variant,
                          int8_ops=image_int8_ops)
    return text_file, image_file


def check_parity(out_dir: Path, text_file: str, image_file: str, text_tower, image_tower, tokenizer,
                 texts: list[str], photo_names: list[str], photo_inputs: np.ndarray) -> dict:
    """Compare the exported towers with their PyTorch modules and keep the reference.

    Runs both ``.tflite`` files in ``out_dir`` and the PyTorch towers on ``texts``
    and ``photo_inputs`` (uint8 (n, size, size, 3)), and writes them with the
    PyTorch embeddings to ``reference.npz`` (what ``glimpse selftest`` checks).

    Returns:
        ``{"text_min_cosine": ..., "image_min_cosine": ...}``.
    """
    import torch

    ids, masks = [], []
    for e in tokenizer.encode_batch(texts):
        ids.append(np.asarray([e.ids], np.int32))
        masks.append(np.asarray([e.attention_mask], np.int32))
    ref_text = embed_texts(text_tower, tokenizer, texts)
    with torch.no_grad():
        ref_image = np.concatenate(
            [image_tower(torch.from_numpy(p[None].astype(np.float32))).numpy() for p in photo_inputs]
        )
    save_reference(out_dir, texts, ref_text, photo_names, photo_inputs, ref_image)
    return tower_parity(out_dir / text_file, out_dir / image_file, ids, masks, ref_text, photo_inputs, ref_image)


def tower_parity(text_path: Path, image_path: Path, ids, masks, ref_text, photo_inputs, ref_image) -> dict:
    """Minimum cosine of each ``.tflite`` tower against PyTorch reference embeddings.

    Args:
        text_path, image_path: the converted towers.
        ids, masks: int32 token ids and masks, one (1, max_tokens) array per text.
        ref_text: PyTorch embeddings of those texts.
        photo_inputs: uint8 (n, size, size, 3) tower inputs; ref_image: their PyTorch embeddings.

    Returns:
        ``{"text_min_cosine": ..., "image_min_cosine": ...}``, rounded to 6 places.
    """
    lite_text = run_tflite(text_path, zip(ids, masks))
    lite_image = run_tflite(image_path, [(p[None].astype(np.float32),) for p in photo_inputs])
    return {
        "text_min_cosine": round(float(convert.cosine_rows(lite_text, ref_text).min()), 6),
        "image_min_cosine": round(float(convert.cosine_rows(lite_image, ref_image).min()), 6),
    }


def save_reference(out_dir: Path, texts, text_embeddings, photos, photo_inputs, photo_embeddings) -> Path:
    """Write ``reference.npz``: inputs and PyTorch float32 embeddings that any runtime
    (``glimpse selftest`` on a Pi) checks itself against."""
    path = Path(out_dir) / REFERENCE_FILE
    arrays = (np.asarray(texts), text_embeddings, np.asarray(photos), photo_inputs, photo_embeddings)
    np.savez(path, **dict(zip(REFERENCE_KEYS, arrays)))
    return path


def write_model(out_dir: Path, *, model_id: str, version: str, dim: int, variant: str, text_file: str,
                image_file: str, max_tokens: int, size: int, extra: dict, card,
                other_files: tuple[str, ...] = ()) -> ModelSpec:
    """Finish a model directory whose towers, tokenizer and reference are written.

    Hashes the files, writes ``model.json`` and the model card.

    Args:
        out_dir: the model directory.
        model_id, version, dim, variant: what ``model.json`` says the model is.
        text_file, image_file: the towers (from :func:`export_towers`).
        max_tokens, size: the text tower's sequence length, the image tower's input size.
        extra: the maker's own ``model.json`` fields (recipe, parity, provenance...).
        card: the maker's card, ``card(spec) -> str`` (written with :func:`model_card`).
        other_files: further files of the directory to hash, after the four every model has.

    Returns:
        The spec written.
    """
    files = {name: sha256_file(out_dir / name)
             for name in (text_file, image_file, TOKENIZER_FILE, REFERENCE_FILE, *other_files)}
    spec = ModelSpec(
        id=model_id, version=version, dim=dim, distance="cosine", quantization=variant,
        text=TextTowerSpec(file=text_file, tokenizer=TOKENIZER_FILE, max_tokens=max_tokens),
        image=ImageTowerSpec(file=image_file, size=size),
        files=files, extra=extra,
    )
    write_spec(out_dir, spec)
    (out_dir / CARD_FILE).write_text(card(spec), encoding="utf-8")
    return spec


def model_card(spec: ModelSpec, summary: str, sections: list[tuple[str, str]]) -> str:
    """The model card (Markdown) of any model directory: a title naming the model and its
    quantisation, what made it (``summary``), then ``(title, body)`` sections."""
    return (f"# Model card: {spec.id} {spec.version} ({spec.quantization})\n\n{summary}\n"
            + "".join(f"\n## {title}\n\n{body}\n" for title, body in sections))


def parity_table(parity: dict) -> str:
    """The minimum cosine of each tower against PyTorch, as a Markdown table."""
    return f"""| tower | min cosine |
|---|---|
| text | {parity['text_min_cosine']:.6f} |
| image | {parity['image_min_cosine']:.6f} |"""
