"""PyTorch to ``.tflite`` with litert-torch, float32 or int8.

int8 here is dynamic-range quantisation: weights are stored as int8 per
channel and activations are quantised on the fly, so no calibration set is
needed and accuracy stays within a fraction of a percent of float32.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

#: The variants a model can be exported in.
VARIANTS = ("int8", "float32")


def export_tflite(module, sample_args: tuple, path: Path, variant: str,
                  int8_ops: tuple[str, ...] | None = None) -> Path:
    """Convert ``module`` traced with ``sample_args`` and write it to ``path``.

    Args:
        module: a ``torch.nn.Module`` in eval mode.
        sample_args: example inputs (their shapes become the model's fixed shapes).
        path: the ``.tflite`` file to write.
        variant: ``int8`` or ``float32``.
        int8_ops: with ``int8``, give int8 weights to these TFLite ops only
            (as ``ai_edge_quantizer`` names them, e.g. ``("CONV_2D",
            "FULLY_CONNECTED")``) and leave the others float32; ``None``: every
            op the dynamic-range recipe covers.

    Raises:
        ValueError: unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import litert_torch

    quant_config = None
    if variant == "int8" and int8_ops is None:
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_dynamic_recipe()
    with warnings.catch_warnings():
        # The converter trips deprecations inside torch.export and its own
        # dependencies; they are not ours to act on and would drown real ones.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        edge_model = litert_torch.convert(module.eval(), sample_args, quant_config=quant_config)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    edge_model.export(str(path))
    if variant == "int8" and int8_ops is not None:
        _quantize_ops(path, int8_ops)
    return path


def _quantize_ops(path: Path, ops: tuple[str, ...]) -> None:
    """Rewrite the float32 model at ``path`` with dynamic-range int8 weights
    (per channel, as the full recipe does) on ``ops`` only."""
    from ai_edge_quantizer import qtyping, quantizer

    model = quantizer.Quantizer(str(path))
    for op in ops:
        model.add_dynamic_config(".*", qtyping.TFLOperationName(op), 8)
    model.quantize(enable_progress_report=False).export_model(str(path), overwrite=True)


def cosine_rows(a, b):
    """Row-wise cosine similarity of two 2-D arrays (numpy)."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)
