"""The shape of the code: device never imports provisioning, nothing heavy at import."""

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
