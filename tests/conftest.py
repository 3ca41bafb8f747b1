"""Shared fixtures: the committed default model, a small photo library, a bundle.

Tests marked ``host`` need PyTorch and litert-torch and run in ``.venv-host``
(``make test`` runs both sets); elsewhere they fail on the missing import. Tests
marked ``pi`` run Glimpse on emulated Raspberry Pi CPUs (``make test-pi``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from device.model import default_model_dir
from provisioning import demo

REPO = Path(__file__).resolve().parent.parent

#: The demo photos a test library holds (skimage name -> library path).
LIBRARY_PHOTOS = {
    "chelsea.png": "pets/cat.png",
    "coffee.png": "kitchen/coffee.png",
    "rocket.jpg": "space/rocket.jpg",
    "astronaut.png": "space/astronaut.png",
    "motorcycle_left.png": "garage/motorcycle.png",
    "coins.png": "coins.png",
    "moon.png": "space/moon.png",
    "brick.png": "brick-wall.png",
}


# Property-based tests (tests/test_fuzz_api.py, tests/test_query_properties.py): the
# same examples on every run, so CI is reproducible and a failure replays; no
# example database, no deadline (2 shared cores make timings noisy). The "deep"
# profile (pytest --hypothesis-profile=deep) searches far longer with fresh randomness.
hypothesis_settings.register_profile("glimpse", derandomize=True, database=None, deadline=None,
                                     print_blob=True)
hypothesis_settings.register_profile("deep", parent=hypothesis_settings.get_profile("glimpse"),
                                     derandomize=False, max_examples=2000)
hypothesis_settings.load_profile("glimpse")


def budget(examples: int) -> int:
    """``examples`` for a property test under the "glimpse" profile (hypothesis' 100 by
    default), scaled by the loaded profile's max_examples (x20 under "deep")."""
    return max(1, examples * hypothesis_settings.default.max_examples // 100)


def pytest_configure(config):
    # Builds cache embeddings under $XDG_CACHE_HOME; keep the tests' cache out of
    # the user's (subprocesses inherit this).
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="glimpse-test-cache-")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ.get("XDG_CACHE_HOME", ""), ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The committed default model, ``models/glimpse-default``."""
    return default_model_dir()


def make_library(root: Path) -> Path:
    """A photo library of real demo photos in sub-folders, plus a corrupt JPEG
    and a text file, under ``root``."""
    for source, target in LIBRARY_PHOTOS.items():
        dest = root / target
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo.demo_photo(source), dest)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not a photo\n")
    return root


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    """A small photo library (see :func:`make_library`); do not modify it."""
    return make_library(tmp_path_factory.mktemp("library"))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` as a user would, capturing output."""
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, library) -> Path:
    """A bundle built from :func:`library` with the real CLI; do not modify it
    (copy it with :func:`copy_bundle` to tamper)."""
    out = tmp_path_factory.mktemp("bundles") / "library-bundle"
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--quiet")
    return out


@pytest.fixture
def copy_bundle(bundle_dir, tmp_path):
    """A function returning a private copy of :func:`bundle_dir`, safe to alter."""
    def _copy() -> Path:
        dest = tmp_path / "bundle-copy"
        shutil.copytree(bundle_dir, dest)
        return dest
    return _copy


# The TFLite Task Library (tflite-support 0.4.4) runs in its own environment: it needs
# protobuf < 4. Host tests ask it questions through tests/tasklib_probe.py.

def tasklib_python() -> Path:
    """The Python of the tflite-support environment (``make`` creates ``.venv-tasklib``)."""
    path = Path(os.environ.get("GLIMPSE_TASKLIB_PYTHON") or REPO / ".venv-tasklib" / "bin" / "python")
    if not path.is_file():
        pytest.fail(f"no tflite-support environment at {path}: run `make .venv-tasklib/.installed` "
                    f"(make test-host does) or set GLIMPSE_TASKLIB_PYTHON to its python")
    return path


def tasklib_probe(**request) -> dict:
    """Ask tests/tasklib_probe.py, under tflite-support's Python, and return its answer."""
    proc = subprocess.run([str(tasklib_python()), str(REPO / "tests" / "tasklib_probe.py")],
                          input=json.dumps(request), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"tasklib probe failed:\n{proc.stderr}"
    return json.loads(proc.stdout)
