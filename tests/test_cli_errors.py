"""Every subcommand of both command lines fails with one ``PROG: error:`` line, never a traceback.

Each subcommand runs with a bad argument, a missing file, an unreadable file and
(where it writes) a full disk. Unreadable files need a user the permissions
apply to: as root the command runs as ``nobody`` (root reads any file); the
full disk is a small tmpfs mounted here, so it needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, free_port

ROOT = os.geteuid() == 0

#: (command line, subcommand, arguments after it). {missing}, {unreadable}, {full}, {bundle},
#: {port} are filled in per case.
DEVICE = "device"
HOST = "provisioning"


def _prog(module: str) -> str:
    return "glimpse" if module == DEVICE else "glimpse-provision"


def run(module: str, *args: str, as_nobody: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", module, *args]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if as_nobody:
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        env["HOME"] = env["XDG_CACHE_HOME"] = "/nonexistent"
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def assert_one_error_line(proc: subprocess.CompletedProcess, prog: str, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def shared_dir():
    """A folder every user may enter (pytest's tmp_path is root's alone), with an
    unreadable file, an unreadable folder and a missing path in it."""
    root = Path(tempfile.mkdtemp(prefix="glimpse-cli-errors-"))
    root.chmod(0o755)
    (root / "unreadable.conf").write_text("port = 8080\n")
    (root / "unreadable.conf").chmod(0o000)
    (root / "unreadable").mkdir()
    (root / "unreadable" / "photo.jpg").write_bytes(b"\xff\xd8")
    (root / "unreadable").chmod(0o000)
    yield root
    (root / "unreadable").chmod(0o755)
    shutil.rmtree(root)


# --- bad arguments ------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    (DEVICE, ["search", "a cat", "--bundle", "{bundle}", "-k", "many"]),
    (DEVICE, ["search", "a cat", "--bundle", "{bundle}", "-k", "0"]),
    (DEVICE, ["serve", "--port", "99999"]),
    (DEVICE, ["serve", "--threads", "none"]),
    (DEVICE, ["config", "--port", "http"]),
    (DEVICE, ["reload", "--no-such-option"]),
    (DEVICE, ["ingest"]),
    (DEVICE, ["status", "--port", "-1"]),
    (DEVICE, ["admin-token", "extra"]),
    (DEVICE, ["verify"]),
    (DEVICE, ["health", "--wait", "soon"]),
    (DEVICE, ["selftest", "--min-cosine", "high"]),
    (DEVICE, ["no-such-command"]),
    (HOST, ["build", "--images", "{bundle}", "--out", "{missing}", "--workers", "many"]),
    (HOST, ["build", "--images", "{bundle}", "--out", "{missing}", "--target-recall", "2"]),
    (HOST, ["demo", "--out", "{missing}", "--index", "magic"]),
    (HOST, ["model", "large", "--out", "{missing}"]),
    (HOST, ["import-model", "{missing}"]),
    (HOST, ["eval", "--captions", "{missing}", "--images", "{missing}", "--limit", "0"]),
    (HOST, ["train", "--captions", "{missing}"]),
    (HOST, ["wheelhouse", "--python", "three", "--out", "{missing}"]),
    (HOST, ["push"]),
    (HOST, ["fleet", "--inventory", "{missing}"]),
    (HOST, ["export-tasklib", "--bundle", "{bundle}", "--out", "{missing}", "--leaves", "-1"]),
]

# --- missing files ----------------------------------------------------------------------------

MISSING = [
    (DEVICE, ["search", "a cat", "--bundle", "{missing}"]),
    (DEVICE, ["serve", "--bundle", "{missing}", "--port", "{port}"]),
    (DEVICE, ["config", "--config", "{missing}"]),
    (DEVICE, ["reload", "--config", "{missing}"]),
    (DEVICE, ["reload", "--port", "{port}"]),
    (DEVICE, ["ingest", "{missing}", "--port", "{port}"]),
    (DEVICE, ["status", "--port", "{port}"]),
    (DEVICE, ["status", "--config", "{missing}"]),
    (DEVICE, ["verify", "--bundle", "{missing}"]),
    (DEVICE, ["health", "--port", "{port}"]),
    (DEVICE, ["health", "--config", "{missing}"]),
    (DEVICE, ["selftest", "--model", "{missing}"]),
    (HOST, ["build", "--images", "{missing}", "--out", "{missing}2"]),
    (HOST, ["build", "--images", "{bundle}", "--out", "{missing}2", "--model", "{missing}"]),
    (HOST, ["demo", "--out", "{missing}", "--model", "{missing}"]),
    (HOST, ["model", "default", "--out", "{missing}"]),
    (HOST, ["import-model", "{missing}", "--out", "{missing}2"]),
    (HOST, ["eval", "--captions", "{missing}", "--images", "{missing}"]),
    (HOST, ["train", "--captions", "{missing}", "--images", "{missing}", "--out", "{missing}2"]),
    (HOST, ["wheelhouse", "--python", "3.11", "--out", "{missing}2", "--source", "{missing}"]),
    (HOST, ["push", "127.0.0.1", "--bundle", "{missing}"]),
    (HOST, ["fleet", "--inventory", "{missing}", "--bundle", "{missing}"]),
    (HOST, ["export-tasklib", "--bundle", "{missing}", "--out", "{missing}2"]),
]

# --- unreadable files -------------------------------------------------------------------------

UNREADABLE = [
    (DEVICE, ["search", "a cat", "--bundle", "{unreadable}"]),
    (DEVICE, ["serve", "--config", "{unreadable}.conf"]),
    (DEVICE, ["config", "--config", "{unreadable}.conf"]),
    (DEVICE, ["reload", "--config", "{unreadable}.conf"]),
    (DEVICE, ["ingest", "{unreadable}/photo.jpg", "--port", "{port}"]),
    (DEVICE, ["ingest", "{unreadable}", "--port", "{port}"]),
    (DEVICE, ["status", "--config", "{unreadable}.conf"]),
    (DEVICE, ["verify", "--bundle", "{unreadable}"]),
    (DEVICE, ["health", "--config", "{unreadable}.conf"]),
    (DEVICE, ["selftest", "--model", "{unreadable}"]),
    (HOST, ["build", "--images", "{unreadable}", "--out", "{missing}", "--no-cache"]),
    (HOST, ["demo", "--out", "{unreadable}/bundle", "--no-cache"]),
    (HOST, ["eval", "--captions", "{unreadable}.conf", "--images", "{unreadable}"]),
    (HOST, ["train", "--captions", "{unreadable}.conf", "--images", "{unreadable}", "--out", "{missing}"]),
    (HOST, ["import-model", "{unreadable}", "--out", "{missing}"]),
    (HOST, ["export-tasklib", "--bundle", "{unreadable}", "--out", "{missing}"]),
    (HOST, ["push", "127.0.0.1", "--bundle", "{unreadable}"]),
    (HOST, ["fleet", "--inventory", "{unreadable}.conf", "--bundle", "{unreadable}"]),
]


def _fill(args, shared_dir, bundle_dir, full=None):
    values = {"missing": str(shared_dir / "missing"), "unreadable": str(shared_dir / "unreadable"),
              "bundle": str(bundle_dir), "port": str(free_port()), "full": str(full)}
    return [a.format(**values) for a in args]


def _ids(cases):
    return [f"{module}-{'-'.join(a for a in args[:1])}-{n}" for n, (module, args) in enumerate(cases)]


@pytest.mark.parametrize("module, args", BAD_ARGUMENTS, ids=_ids(BAD_ARGUMENTS))
def test_bad_arguments_give_one_error_line(module, args, shared_dir, bundle_dir):
    assert_one_error_line(run(module, *_fill(args, shared_dir, bundle_dir)), _prog(module))


@pytest.mark.parametrize("module, args", MISSING, ids=_ids(MISSING))
def test_missing_files_give_one_error_line(module, args, shared_dir, bundle_dir):
    assert_one_error_line(run(module, *_fill(args, shared_dir, bundle_dir)), _prog(module))


@pytest.mark.parametrize("module, args", UNREADABLE, ids=_ids(UNREADABLE))
def test_unreadable_files_give_one_error_line(module, args, shared_dir, bundle_dir):
    proc = run(module, *_fill(args, shared_dir, bundle_dir), as_nobody=ROOT)
    assert_one_error_line(proc, _prog(module))


# --- a full disk ------------------------------------------------------------------------------

@pytest.fixture
def full_disk():
    """A 1 MiB tmpfs, filled to the last block, world-writable; unmounted afterwards."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix="glimpse-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(mount)], check=True)
    try:
        with contextlib.suppress(OSError), open(mount / "filler", "wb", buffering=0) as handle:
            while True:
                handle.write(b"\0" * 4096)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


FULL = [
    (HOST, ["build", "--images", "{library}", "--out", "{full}/bundle", "--quiet", "--no-cache"]),
    (HOST, ["build", "--images", "{library}", "--out", "{full}/bundle", "--quiet", "--cache-dir", "{full}/cache"]),
    (HOST, ["demo", "--out", "{full}/demo", "--quiet", "--no-cache"]),
    (HOST, ["model", "default", "--out", "{full}/model"]),
    (HOST, ["export-tasklib", "--bundle", "{bundle}", "--out", "{full}/bundle.tflite"]),
]


@pytest.mark.parametrize("module, args", FULL, ids=_ids(FULL))
def test_a_full_disk_gives_one_error_line(module, args, full_disk, shared_dir, bundle_dir, library):
    filled = [a.replace("{library}", str(library)) for a in args]
    proc = run(module, *_fill(filled, shared_dir, bundle_dir, full_disk))
    assert_one_error_line(proc, _prog(module))
    if "host" not in proc.stderr:  # without PyTorch, model and export-tasklib stop before writing
        assert "no space left" in proc.stderr, proc.stderr
    out = Path(args[args.index("--out") + 1].replace("{full}", str(full_disk)))
    assert not out.exists(), "a failed write left its output behind"


# --- --debug --------------------------------------------------------------------------------

def test_debug_shows_the_traceback(shared_dir):
    proc = run(DEVICE, "--debug", "verify", "--bundle", str(shared_dir / "missing"))
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_an_os_error_names_the_file_and_the_problem(shared_dir, bundle_dir):
    proc = run(DEVICE, "config", "--config", str(shared_dir / "unreadable.conf"), as_nobody=ROOT)
    assert_one_error_line(proc, "glimpse", "unreadable.conf")


def test_a_port_in_use_is_named_with_its_holder(bundle_dir, tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = run(DEVICE, "serve", "--bundle", str(bundle_dir), "--port", str(port),
                   "--data-dir", str(tmp_path / "data"))
    assert_one_error_line(proc, "glimpse")
    error = next(line for line in proc.stderr.splitlines() if line.startswith("glimpse: error:"))
    assert error == (f"glimpse: error: 127.0.0.1:{port} is in use (by PID {os.getpid()}); "
                     "choose another with --port")


HOST_ONLY = [
    ["model", "default", "--out", "{missing}"],
    ["import-model", "{bundle}", "--out", "{missing}"],
    ["train", "--captions", "{unreadable}.conf", "--images", "{bundle}", "--out", "{missing}"],
    ["export-tasklib", "--bundle", "{bundle}", "--out", "{missing}.tflite"],
]


@pytest.mark.parametrize("args", HOST_ONLY, ids=[a[0] for a in HOST_ONLY])
def test_host_only_commands_without_pytorch_say_what_to_install(args, shared_dir, bundle_dir):
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed here (.venv-host): the host tests run these commands")
    proc = run(HOST, *_fill(args, shared_dir, bundle_dir))
    assert_one_error_line(proc, "glimpse-provision", "host", "[host]")
    assert proc.returncode == 2
    assert not (shared_dir / "missing").exists()
