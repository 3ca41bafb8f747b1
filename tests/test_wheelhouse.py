"""The wheelhouse's target logic: tags, pip commands, manifest entries (no network).

The real download, and the tags of a real wheelhouse, are checked by the
``pi``-marked tests in ``test_pi.py``.
"""

from __future__ import annotations

import hashlib
import sys

import pytest

from provisioning import cli
from provisioning.deploy.wheelhouse import (
    Target, TargetInvalid, WheelhouseFailed, build, check_pip, download_command, parse_target,
    resolve_command, wheels_from_report,
)

PY311 = parse_target("3.11")
PY313 = parse_target("3.13")

# Real file names from PyPI (the device extra's dependencies for a Pi).
NUMPY_311 = "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"
NUMPY_313 = "numpy-2.5.5-cp313-cp313-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"
LITERT_311 = "ai_edge_litert-2.1.6-cp311-cp311-manylinux_2_27_aarch64.whl"
TOKENIZERS_ABI3 = "tokenizers-0.23.3-cp310-abi3-manylinux_2_17_aarch64.manylinux2014_aarch64.whl"
FLASK_PURE = "flask-3.1.3-py3-none-any.whl"
COLORZERO_PY2_PY3 = "colorzero-2.0-py2.py3-none-any.whl"


@pytest.mark.parametrize("filename", [NUMPY_311, LITERT_311, TOKENIZERS_ABI3, FLASK_PURE, COLORZERO_PY2_PY3])
def test_a_311_pi_accepts_its_own_abi3_and_pure_wheels(filename):
    assert PY311.accepts(filename)


@pytest.mark.parametrize("filename", [NUMPY_313, TOKENIZERS_ABI3, FLASK_PURE])
def test_a_313_pi_accepts_its_own_abi3_and_pure_wheels(filename):
    assert PY313.accepts(filename)


@pytest.mark.parametrize("target, filename", [
    (PY313, NUMPY_311),                                             # another CPython's ABI
    (PY311, NUMPY_313),
    (PY311, "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"),  # a PC's CPU
    (PY311, "numpy-2.4.6-cp311-cp311-musllinux_1_2_aarch64.whl"),  # Alpine, not glibc
    (PY311, "numpy-2.4.6-cp311-cp311-macosx_14_0_arm64.whl"),
    (PY311, "pillow-13.0.0-cp311-cp311-manylinux_2_39_aarch64.whl"),  # newer glibc than Bookworm's 2.36
    (PY311, "numpy-2.4.6-cp311-cp311-linux_aarch64.whl"),           # a local build, not portable
    (PY313, "numpy-2.5.5-cp313-cp313t-manylinux_2_28_aarch64.whl"),  # free-threaded CPython
    (PY311, "tokenizers-0.23.3-cp312-abi3-manylinux_2_17_aarch64.whl"),  # abi3 from a newer CPython
    (PY311, "legacy-1.0-py2-none-any.whl"),
])
def test_a_pi_refuses_wheels_that_would_not_install_there(target, filename):
    assert not target.accepts(filename)


def test_a_newer_glibc_target_takes_wheels_bookworm_cannot_load():
    trixie = parse_target("3.13", glibc="2.41")
    assert trixie.accepts("pillow-13.0.0-cp313-cp313-manylinux_2_39_aarch64.whl")
    assert not PY313.accepts("pillow-13.0.0-cp313-cp313-manylinux_2_39_aarch64.whl")


def test_platform_tags_run_from_the_device_glibc_down_to_manylinux2014():
    tags = PY311.platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64"
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert len(tags) == 36 - 17 + 1 + 1
    assert all(t.endswith("_aarch64") for t in tags)


def test_download_command_selects_the_target_and_binary_wheels_only(tmp_path):
    args = download_command(PY313, "glimpse[device]", tmp_path)
    assert args[:3] == ["download", "--dest", str(tmp_path)]
    assert args[-1] == "glimpse[device]"
    pairs = dict(zip(args, args[1:]))
    assert "--only-binary=:all:" in args
    assert pairs["--python-version"] == "3.13"
    assert pairs["--implementation"] == "cp"
    assert pairs["--abi"] == "cp313"
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms == PY313.platform_tags()


def test_resolve_command_installs_nothing_and_uses_only_the_wheelhouse(tmp_path):
    args = resolve_command(PY311, "glimpse[device]", tmp_path / "wh", tmp_path / "r.json")
    for flag in ("--isolated", "--dry-run", "--no-index", "--ignore-installed"):
        assert flag in args
    pairs = dict(zip(args, args[1:]))
    assert pairs["--find-links"] == str(tmp_path / "wh")
    assert pairs["--report"] == str(tmp_path / "r.json")
    assert pairs["--abi"] == "cp311"


@pytest.mark.parametrize("python, platform, glibc, message", [
    ("3.10", "linux_aarch64", "2.36", "too old"),
    ("2.7", "linux_aarch64", "2.36", "malformed"),
    ("311", "linux_aarch64", "2.36", "malformed"),
    ("3.11", "win_amd64", "2.36", "not supported"),
    ("3.11", "linux_aarch64", "2.5", "glibc"),
    ("3.11", "linux_aarch64", "two", "glibc"),
])
def test_parse_target_refuses_what_glimpse_cannot_run_on(python, platform, glibc, message):
    with pytest.raises(TargetInvalid, match=message):
        parse_target(python, platform, glibc)


def test_accepts_refuses_a_file_that_is_not_a_wheel():
    with pytest.raises(TargetInvalid, match="not a wheel"):
        PY311.accepts("numpy-2.4.6.tar.gz")


def _report(*paths):
    """A pip installation report (format version 1) naming ``paths``."""
    return {"version": "1", "install": [{"download_info": {"url": p.as_uri()}} for p in paths]}


def test_manifest_entries_carry_tags_and_checksums(tmp_path):
    for name in (LITERT_311, FLASK_PURE):
        (tmp_path / name).write_bytes(b"wheel bytes")
    entries = wheels_from_report(_report(tmp_path / LITERT_311, tmp_path / FLASK_PURE), tmp_path, PY311)
    assert [e["file"] for e in entries] == [LITERT_311, FLASK_PURE]
    assert entries[0]["name"] == "ai-edge-litert" and entries[0]["version"] == "2.1.6"
    assert entries[0]["tags"] == ["cp311-cp311-manylinux_2_27_aarch64"]
    assert entries[1]["tags"] == ["py3-none-any"]
    assert entries[0]["sha256"] == hashlib.sha256(b"wheel bytes").hexdigest()


def test_manifest_refuses_a_wheel_the_target_cannot_install(tmp_path):
    (tmp_path / NUMPY_313).write_bytes(b"x")
    with pytest.raises(WheelhouseFailed, match="does not install there"):
        wheels_from_report(_report(tmp_path / NUMPY_313), tmp_path, PY311)


def test_manifest_refuses_a_wheel_from_outside_the_wheelhouse(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / FLASK_PURE).write_bytes(b"x")
    with pytest.raises(WheelhouseFailed, match="not a wheel in"):
        wheels_from_report(_report(tmp_path / "elsewhere" / FLASK_PURE), tmp_path, PY311)


def test_cli_refuses_an_unsupported_python_before_downloading(tmp_path, capsys):
    status = cli.main(["wheelhouse", "--platform", "linux_aarch64", "--python", "3.11", "--python", "3.9",
                       "--out", str(tmp_path / "wh")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("glimpse-provision: error: Python 3.9 is too old")
    assert not (tmp_path / "wh").exists()


def test_cli_refuses_an_unknown_platform(tmp_path, capsys):
    status = cli.main(["wheelhouse", "--platform", "linux_riscv64", "--python", "3.11", "--out", str(tmp_path)])
    assert status == 2
    assert "platform 'linux_riscv64' is not supported" in capsys.readouterr().err


def test_target_names_itself_for_error_messages():
    assert str(Target("3.13")) == "CPython 3.13 linux_aarch64 (glibc 2.36)"


def _fake_pip(output: str, status: int = 0) -> list[str]:
    """A command that answers ``--version`` as a given pip would."""
    return [sys.executable, "-c", f"import sys; print({output!r}); sys.exit({status})"]


def test_a_pip_too_old_to_resolve_for_another_python_is_refused_with_the_fix(tmp_path):
    with pytest.raises(WheelhouseFailed, match=r"pip 23\.2 cannot resolve.*pip>=24\.2"):
        build([PY313], tmp_path / "wh", pip=_fake_pip("pip 23.2.1 from /x (python 3.11)"))
    assert not (tmp_path / "wh").exists()


def test_a_broken_pip_is_reported():
    with pytest.raises(WheelhouseFailed, match="cannot run pip"):
        check_pip(_fake_pip("", status=1))


def test_a_recent_pip_passes_the_check():
    check_pip(_fake_pip("pip 24.2 from /x (python 3.11)"))
    check_pip(_fake_pip("pip 26.3 from /x (python 3.11)"))


def test_build_needs_a_target(tmp_path):
    with pytest.raises(TargetInvalid, match="at least one"):
        build([], tmp_path)
