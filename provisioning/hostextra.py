"""The ``host`` extra: the packages the PyTorch-side commands import, and the one
way to say that they are missing (before any work is done, not as a traceback
half-way through)."""

from __future__ import annotations

import importlib.util
from typing import Iterable

from device.errors import HostToolsMissing

#: Module a host command imports -> the PyPI package of the ``host`` extra that provides it.
PACKAGES = {
    "torch": "torch", "litert_torch": "litert-torch", "transformers": "transformers",
    "safetensors": "safetensors", "open_clip": "open_clip_torch", "ai_edge_litert": "ai-edge-litert",
    "flatbuffers": "flatbuffers", "google_crc32c": "google-crc32c", "google.protobuf": "protobuf",
}


def missing(command: str, packages: Iterable[str]) -> HostToolsMissing:
    """The error saying that ``command`` needs ``packages`` (PyPI names) from the host extra."""
    return HostToolsMissing(
        f"{command} needs the host tools: it needs the host extra (missing: {', '.join(packages)}): "
        "pip install 'glimpse[host]' (pip install -e '.[host]' from a checkout), "
        "or run it from .venv-host (make test creates it)")


def require(command: str, modules: Iterable[str]) -> None:
    """Check that ``modules`` (keys of :data:`PACKAGES`) can be imported, without importing them.

    Raises:
        HostToolsMissing: naming the missing packages, in the order given, and how to install them.
    """
    def absent(module):
        try:
            return importlib.util.find_spec(module) is None
        except ModuleNotFoundError:  # a dotted name whose parent is absent
            return True

    names = [PACKAGES[module] for module in modules if absent(module)]
    if names:
        raise missing(command, names)
