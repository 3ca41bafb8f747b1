"""torchvision beside the CPU-only PyTorch wheel, importable.

The host pins the CPU build of torch 2.13.0. PyPI's torchvision wheels are CUDA
builds: beside the CPU torch their C++ extension (``torchvision/_C.so``) cannot
load (it links ``libtorch_cuda.so``). torchvision still works in pure Python then
(transforms, ``ops.misc``: all open_clip, timm and transformers use), except that
``torchvision/_meta_registrations.py`` registers fake kernels for ``nms`` and
``qnms`` without checking that the extension defined them, so ``import
torchvision`` fails with "operator torchvision::nms does not exist". transformers
imports torchvision whenever it is installed, so this breaks the default model's
BERT tower as much as the CLIP import.

:func:`install` puts a finder on ``sys.meta_path`` that, the first time anything
imports torchvision, checks whether the extension loads and, only if it does not,
defines those two op schemas exactly as its C++ does. The ops get no kernel:
nothing Glimpse runs calls them. The finder costs nothing until torchvision is
imported, so commands that never touch PyTorch do not pay for importing it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

#: torch.library registrations last as long as their Library object.
_KEEP_ALIVE: list = []

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def define_missing_ops() -> bool:
    """Define torchvision's ``nms``/``qnms`` schemas if its extension cannot.

    Returns:
        True if the schemas were defined here (the extension is missing or does
        not load), False if there is nothing to work around.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False  # no torchvision at all: the import error is clearer than anything here
    # Importing torch may itself import torchvision (optional imports in torch's
    # own modules), which runs this function through the finder: check after it.
    import torch

    if _KEEP_ALIVE or "torchvision" in sys.modules:
        return False
    for location in spec.submodule_search_locations:
        for candidate in Path(location).glob("_C*.so"):
            try:
                torch.ops.load_library(str(candidate))
                return False  # a matching build: it defines its own ops
            except (OSError, RuntimeError):  # e.g. "libtorch_cuda.so: cannot open shared object file"
                break
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _KEEP_ALIVE.append(library)
    return True


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Runs :func:`define_missing_ops` just before torchvision's first import."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            define_missing_ops()
        return None  # the regular finders do the import itself


def install() -> None:
    """Arrange for :func:`define_missing_ops` to run before torchvision is imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TorchvisionFinder())
