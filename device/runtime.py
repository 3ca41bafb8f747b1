"""The one place that imports a TFLite interpreter.

``ai_edge_litert`` (LiteRT) is the runtime Glimpse is tested with; the older
``tflite_runtime`` works for simple models and is accepted with a warning.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings

from device.errors import ModelInvalid, RuntimeMissing


#: Native log lines LiteRT prints on every interpreter creation: noise on a
#: script's stderr (``glimpse search --json | jq``), shown only when asked.
_ROUTINE = ("INFO: Created TensorFlow Lite XNNPACK delegate",)
_show_routine = False
_stderr_lock = threading.Lock()


def show_native_log(show: bool = True) -> None:
    """Let LiteRT's routine native log lines through to stderr (``--debug``)."""
    global _show_routine
    _show_routine = show


@contextlib.contextmanager
def _routine_native_log_hidden():
    """Catch what native code writes to fd 2 meanwhile, and pass on all but the routine lines.

    LiteRT has no setting that silences them (they come from TFLite's C++
    logger), so the file descriptor itself is redirected. Anything else written
    meanwhile (a real error, another thread's log line) is written back.
    """
    try:
        caught = None if _show_routine else tempfile.TemporaryFile()
    except OSError:  # no room for the catch (a full /tmp): let the lines through rather than fail
        caught = None
    if caught is None:
        yield
        return
    with _stderr_lock, caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not line.decode(errors="replace").startswith(_ROUTINE)]
            if kept:
                os.write(2, b"".join(kept))


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
        with _routine_native_log_hidden():
            interpreter = cls(model_path=path, num_threads=max(1, int(num_threads)))
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelInvalid(f"{path}: cannot load model: {exc}") from None
    return interpreter
