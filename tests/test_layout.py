"""The shape of the code: device never imports provisioning, the host reaches the device
only through its formats, nothing heavy at import."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

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


def test_the_web_layer_reaches_the_daemon_only_through_its_protocol():
    """device/web depends on device.web.context.WebContext, never on the daemon or the hardware."""
    offenders = [f"{path.relative_to(REPO)}: {name}"
                 for path in (REPO / "device" / "web").rglob("*.py")
                 for name in _imports(path) if name in {"device.daemon", "device.cli"} or name.startswith("device.hw")]
    assert offenders == []


@pytest.mark.parametrize("seam", ["device.web.context.WebContext", "device.hw.panel.PanelContext"])
def test_the_daemon_is_what_the_web_layer_and_the_panel_need(tmp_path, seam):
    """Every member of the seam's Protocol exists on Daemon, methods with the same parameters."""
    import importlib
    import inspect

    from device import settings
    from device.daemon import Daemon

    module, _, name = seam.rpartition(".")
    protocol = getattr(importlib.import_module(module), name)
    daemon = Daemon(settings.load({"data_dir": str(tmp_path)}, env={}))
    members = vars(protocol).items()
    wanted = set(protocol.__annotations__) | {name for name, member in members if not name.startswith("_")
                                              and (callable(member) or isinstance(member, property))}
    assert {"settings", "slideshow", "show"} <= wanted
    missing = []
    for name in sorted(wanted):
        try:
            found = inspect.getattr_static(daemon, name)  # static: the searcher property would raise (no bundle)
        except AttributeError:
            missing.append(name)
            continue
        member = vars(protocol).get(name)
        if callable(member) and not isinstance(member, property):
            assert list(inspect.signature(found).parameters) == list(inspect.signature(member).parameters), name
    assert missing == []
