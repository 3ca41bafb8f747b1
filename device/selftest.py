"""Check this machine's runtime against the model's PyTorch reference.

A model directory may carry ``reference.npz``: reference texts and photo
inputs with their float32 PyTorch embeddings. Running both towers on them and
comparing tells whether the runtime on this CPU (a Pi's, say) computes what the
model's builder computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.encoders import ImageEncoder, TextEncoder
from device.errors import ModelInvalid
from device.model import REFERENCE_KEYS, default_model_dir, read_spec


def run_selftest(model_dir: Path | None = None) -> dict[str, float]:
    """Minimum cosine of each tower against the reference embeddings.

    Returns:
        ``{"text": ..., "image": ...}``.

    Raises:
        ModelInvalid: the model has no reference file, or cannot be loaded.
    """
    model_dir = Path(model_dir) if model_dir else default_model_dir()
    spec = read_spec(model_dir)
    name = spec.extra.get("reference")
    if not name or not (model_dir / name).is_file():
        raise ModelInvalid(f"{model_dir}: this model carries no reference embeddings")
    with np.load(model_dir / name, allow_pickle=False) as ref:
        texts, text_ref, _photos, photo_inputs, photo_ref = (ref[key] for key in REFERENCE_KEYS)
        texts = [str(t) for t in texts]
    with TextEncoder.create_from_model_dir(model_dir) as text, ImageEncoder.create_from_model_dir(model_dir) as image:
        text_out = np.stack([text.embed(t) for t in texts])
        # The reference is the tower's own output; recognisers are checked by their own tests.
        image_out = np.stack([image.tower_vector(p) for p in photo_inputs])
    return {"text": _min_cosine(text_out, text_ref), "image": _min_cosine(image_out, photo_ref)}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())
