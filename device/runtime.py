"""The one place that imports a TFLite interpreter.

``ai_edge_litert`` (LiteRT) is the runtime Glimpse is tested with; the older
``tflite_runtime`` works for simple models and is accepted with a warning.
"""

from __future__ import annotations

import os
import warnings

from device.errors import ModelInvalid, RuntimeMissing


def interpreter_class():
    """Return the ``Interpreter`` class of the best installed runtime.

    Raises:
        RuntimeMissing: neither ``ai-edge-litert`` nor ``tflite-runtime`` is installed.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        pass
    else:
        return Interpreter
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        raise RuntimeMissing(
            "no TFLite runtime: install ai-edge-litert (pip install 'glimpse[device]')"
        ) from None
    warnings.warn("ai-edge-litert is not installed; falling back to tflite-runtime",
                  RuntimeWarning, stacklevel=2)
    return Interpreter


def load_interpreter(path, num_threads: int = 1):
    """Create and allocate an interpreter for the ``.tflite`` file at ``path``.

    LiteRT memory-maps the file itself, so a large tower costs address space, not
    resident memory, until its pages are touched.

    Raises:
        ModelInvalid: the file is missing or not a model this runtime can run.
    """
    cls = interpreter_class()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelInvalid(f"{path}: no such model file")
    try:
        interpreter = cls(model_path=path, num_threads=max(1, int(num_threads)))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelInvalid(f"{path}: cannot load model: {exc}") from None
    return interpreter
