"""Proof that Glimpse runs on a Raspberry Pi, without a Pi (``make test-pi``).

The wheelhouse is built with the real ``glimpse-provision wheelhouse``, installed
for each Pi OS's Python into a site directory, and run by Debian's own arm64
Python under QEMU with the Pi 4's CPU model (Cortex-A72) and the Pi 3 / Zero 2 W's
(Cortex-A53): it opens a bundle built on this x86 host, must rank the same top 5
photos for each query as x86 does, pass the model's self-test, and embed a photo
as x86 does. Emulated speed means nothing, so nothing here asserts on time.

Needs root, network (Debian mirror, PyPI), debootstrap and qemu-user-static.
Under ``make test-pi`` a missing tool is a failure; elsewhere these tests skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

import emulated_pi
from conftest import REPO, run_cli
from device.encoders import ImageEncoder
from device.search import Searcher
from provisioning.deploy.wheelhouse import MARKER, MANIFEST_FORMAT, REQUIREMENT, parse_target, read_manifest

pytestmark = pytest.mark.pi

QUERIES = ["a cup of coffee", "a cat", "a space launch", "a motorbike", "coins", "the moon at night"]
#: A library photo (see conftest.LIBRARY_PHOTOS) the image tower embeds on both CPUs.
PHOTO = "kitchen/coffee.png"
MIN_COSINE = 0.99
#: What a Pi needs beyond Glimpse itself (the device extra and install_requires).
DEVICE_PACKAGES = {"ai-edge-litert", "numpy", "tokenizers", "pillow", "pillow-heif", "flask", "waitress",
                   "prometheus-client", "gpiozero", "sentencepiece"}
ARTIFACTS = REPO / "tests" / "artifacts" / "pi"
STALE_WHEEL = "waitress-2.0.0-py3-none-any.whl"


def _unavailable(reason: str):
    if os.environ.get("GLIMPSE_PI_REQUIRED"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(f"{reason} (make test-pi runs these tests)")


@pytest.fixture(scope="session")
def rootfs():
    """A function: suite name -> its cached arm64 :class:`emulated_pi.Rootfs`."""
    try:
        emulated_pi.check_host()
    except emulated_pi.EmulationUnavailable as exc:
        _unavailable(str(exc))
    built, failed = {}, {}

    def _get(suite: str) -> emulated_pi.Rootfs:
        if suite not in built and suite not in failed:
            try:
                built[suite] = emulated_pi.ensure_rootfs(suite)
            except emulated_pi.RootfsFailed as exc:
                failed[suite] = str(exc)  # every test of this suite fails with it; one attempt is enough
        if suite in failed:
            # Never a skip: an unreachable mirror must be seen, not hidden.
            pytest.fail(failed[suite], pytrace=False)
        return built[suite]
    return _get


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """A wheelhouse for both Pi OS Pythons, made with the real command line."""
    out = tmp_path_factory.mktemp("wheelhouse") / "wheels"
    out.mkdir()
    # An old release left by an earlier run (which marked the directory as its own):
    # refreshing in place must drop it.
    (out / MARKER).write_text(json.dumps({"format": MANIFEST_FORMAT}) + "\n", encoding="utf-8")
    (out / STALE_WHEEL).write_bytes(b"an older waitress")
    proc = run_cli("provisioning", "wheelhouse", "--platform", "linux_aarch64", "--python", "3.11",
                   "--python", "3.13", "--out", str(out), check=False, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"glimpse-provision wheelhouse failed (is PyPI reachable?):\n{proc.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def site(tmp_path_factory, wheelhouse):
    """A function: Python ``X.Y`` -> a directory with ``glimpse[device]`` installed
    from the wheelhouse alone, by this host's pip, for an aarch64 CPython X.Y."""
    sites = {}

    def _get(python: str) -> Path:
        if python not in sites:
            target = tmp_path_factory.mktemp(f"site-{python}")
            # --isolated: configured indexes and find-links must not fill gaps in the wheelhouse.
            command = [sys.executable, "-m", "pip", "--isolated", "install", "--quiet", "--no-index",
                       "--find-links", str(wheelhouse), "--target", str(target),
                       *parse_target(python).pip_args(), REQUIREMENT]
            proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                pytest.fail(f"installing {REQUIREMENT} for Python {python} from the wheelhouse failed:\n"
                            f"{proc.stderr}", pytrace=False)
            sites[python] = target
        return sites[python]
    return _get


@pytest.fixture(scope="session")
def x86(bundle_dir, library) -> dict:
    """What this x86 host answers: top-5 ids per query and the photo's embedding."""
    with Searcher.from_bundle(bundle_dir) as searcher:
        answers = {q: [(r.item.id, r.score) for r in searcher.search(q, k=5)] for q in QUERIES}
    with ImageEncoder.create_from_model_dir(bundle_dir / "model") as image:
        embedding = image.embed_file(library / PHOTO)
    return {"answers": answers, "photo_embedding": embedding}


_PLATFORM = re.compile(r"any|manylinux(2014|_2_\d+)_aarch64")


def _tag_fits(tag: str, python: str) -> bool:
    """An independent reading of the wheel tag rules for CPython ``python`` on a 64-bit Pi."""
    interpreter, abi, platform = tag.split("-")
    cp = "cp" + python.replace(".", "")
    minor = int(python.split(".")[1])
    if not _PLATFORM.fullmatch(platform):
        return False
    if abi == cp:
        return interpreter == cp
    if abi == "abi3":
        match = re.fullmatch(r"cp3(\d+)", interpreter)
        return bool(match) and int(match.group(1)) <= minor
    return abi == "none" and interpreter in (cp, "py3")


def test_every_wheel_in_the_wheelhouse_installs_on_its_pi(wheelhouse):
    manifest = read_manifest(wheelhouse)
    assert [t["python"] for t in manifest["targets"]] == ["3.11", "3.13"]
    listed = set()
    for target in manifest["targets"]:
        wheels = target["wheels"]
        names = {w["name"] for w in wheels}
        assert DEVICE_PACKAGES | {"glimpse"} <= names, f"{target['python']}: missing {DEVICE_PACKAGES - names}"
        assert next(w["version"] for w in wheels if w["name"] == "ai-edge-litert") == "2.1.6"
        for wheel in wheels:
            assert (wheelhouse / wheel["file"]).is_file()
            # A wheel's file name may carry several tags (manylinux2014.manylinux_2_17); one must fit.
            assert any(_tag_fits(tag, target["python"]) for tag in wheel["tags"]), (target["python"], wheel["file"])
        listed |= {w["file"] for w in wheels}
    # Nothing in the wheelhouse that no target installs (a stray x86 wheel, an old release).
    assert {p.name for p in wheelhouse.glob("*.whl")} == listed
    assert not (wheelhouse / STALE_WHEEL).exists()


@pytest.mark.parametrize("suite", sorted(emulated_pi.SUITES))
def test_the_pis_own_pip_installs_glimpse_offline_from_the_wheelhouse(suite, rootfs, wheelhouse, tmp_path):
    """The user's command on a Pi without internet, run by the Pi's Python: it must
    resolve from the wheelhouse alone, to the very wheels the manifest lists."""
    pi = rootfs(suite)
    pip_dir = tmp_path / "pip"
    pip_dir.mkdir()
    # This host's pip is pure Python; lent to the Pi, it evaluates the Pi's own markers.
    (pip_dir / "pip").symlink_to(Path(importlib.util.find_spec("pip").origin).parent)
    proc = emulated_pi.run_python(
        pi, "cortex-a72",
        ["-m", "pip", "install", "--isolated", "--quiet", "--dry-run", "--ignore-installed", "--no-index",
         "--find-links", str(wheelhouse), "--target", str(tmp_path / "unused"), "--report", "-", REQUIREMENT],
        pythonpath=[pip_dir])
    assert proc.returncode == 0, proc.stderr[-3000:]
    resolved = {Path(unquote(urlparse(i["download_info"]["url"]).path)).name
                for i in json.loads(proc.stdout)["install"]}
    target = next(t for t in read_manifest(wheelhouse)["targets"] if t["python"] == pi.python)
    assert resolved == {w["file"] for w in target["wheels"]}


@pytest.mark.parametrize("cpu", list(emulated_pi.CPUS))
@pytest.mark.parametrize("suite", sorted(emulated_pi.SUITES))
def test_glimpse_answers_on_an_emulated_pi_as_on_x86(suite, cpu, rootfs, site, bundle_dir, library, x86):
    pi = rootfs(suite)
    installed = site(pi.python)
    proc = emulated_pi.run_python(
        pi, cpu, [str(REPO / "tests" / "pi_probe.py"), str(bundle_dir), str(library / PHOTO), *QUERIES],
        pythonpath=[installed])
    assert proc.returncode == 0, f"on {cpu} ({emulated_pi.CPUS[cpu]}), {suite}:\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout)
    photo_cosine = float(np.dot(np.asarray(result["photo_embedding"], dtype=np.float32), x86["photo_embedding"]))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    summary = {
        "suite": suite, "cpu": cpu, "machine": result["machine"], "python": result["python"],
        "versions": result["versions"], "selftest": result["selftest"], "photo_cosine": photo_cosine,
        "top5_equal": {q: [i for i, _ in result["answers"][q]] == [i for i, _ in x86["answers"][q]] for q in QUERIES},
        "max_score_difference": max(abs(a[1] - b[1]) for q in QUERIES
                                    for a, b in zip(result["answers"][q], x86["answers"][q])),
    }
    (ARTIFACTS / f"{suite}-{cpu}.json").write_text(json.dumps(summary, indent=1) + "\n")

    assert result["machine"] == "aarch64"
    assert result["python"].startswith(pi.python + ".")
    # Glimpse came from the wheelhouse's wheel, not from this checkout.
    assert Path(result["glimpse_from"]) == installed
    assert result["versions"]["ai-edge-litert"] == "2.1.6"
    for query in QUERIES:
        assert [i for i, _ in result["answers"][query]] == [i for i, _ in x86["answers"][query]], query
    assert result["selftest"]["text"] >= MIN_COSINE and result["selftest"]["image"] >= MIN_COSINE, result["selftest"]
    assert photo_cosine >= MIN_COSINE
