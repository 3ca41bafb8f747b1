"""The shape of the code: device never imports provisioning, the host reaches the device
only through its formats, nothing heavy at import."""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import REPO


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def _imported_modules(path):
    """Every module a file imports, ``from device import daemon`` counting as ``device.daemon``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


#: The device's layers above its formats: the host learns names from the formats
#: (bundle, model, datadir, errors...), never from the daemon, web, CLI or hardware.
DEVICE_INTERNALS = ("device.daemon", "device.web", "device.cli", "device.hw")


def test_provisioning_never_imports_the_device_internals():
    offenders = [f"{path.relative_to(REPO)}: {name}"
                 for path in (REPO / "provisioning").rglob("*.py")
                 for name in _imported_modules(path)
                 if any(name == internal or name.startswith(internal + ".") for internal in DEVICE_INTERNALS)]
    assert offenders == []


def test_device_never_imports_provisioning():
    offenders = [f"{path.relative_to(REPO)}: {name}"
                 for path in (REPO / "device").rglob("*.py")
                 for name in _imports(path) if name.split(".")[0] == "provisioning"]
    assert offenders == []


def test_device_never_imports_pytorch():
    offenders = [f"{path.relative_to(REPO)}: {name}"
                 for path in (REPO / "device").rglob("*.py")
                 for name in _imports(path) if name.split(".")[0] in {"torch", "litert_torch", "transformers"}]
    assert offenders == []


def test_importing_the_packages_loads_no_model_or_runtime():
    code = ("import sys, device.cli, provisioning.cli, device.search, device.web; "
            "print(sorted(m for m in ('ai_edge_litert', 'tflite_runtime', 'torch', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # device.web imports Flask by design; no interpreter or PyTorch at import time.
    assert out.strip() == "['flask']"
