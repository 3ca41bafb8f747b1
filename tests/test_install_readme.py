"""The README's "On a Raspberry Pi" steps, run as written with a real ``glimpse`` system user.

Issue 12, item 2: a bundle copied with ``sudo cp -r`` must be readable by the
service's own user, and a tree that is not must be explained (owner, mode, the
command that fixes it) by ``glimpse verify`` and by the daemon's start-up.

What runs for real: the README's ``useradd``, ``install -d``, ``cp -r`` and
``ln`` lines (as root, the way ``sudo`` runs them), then ``glimpse verify`` and
the unit's ``glimpse serve`` as that user (``runuser``). What is substituted:
``/var/lib/glimpse`` by a fresh directory (this machine may have its own), the
venv and ``pip install`` lines by this environment with the code under test
(installing needs every dependency's wheel), and ``systemctl`` (no systemd runs
here) by starting the unit's ExecStart command as the unit's ``User=``.

This machine's Python may live where other users cannot enter (pyenv under a
0700 /root): the service user's commands then run in a private mount namespace
(``unshare``) in which only that Python's directory is made reachable; nothing
changes outside it, and the bundle's own modes are what is tested.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, free_port

USER = "glimpse"


def readme_pi_steps() -> list[str]:
    """The shell lines of the README's first code block under "## On a Raspberry Pi"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## On a Raspberry Pi", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def unit_value(key: str) -> str:
    """A ``key=value`` of the committed systemd unit."""
    for line in (REPO / "systemd" / "glimpse.service").read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"the unit has no {key}=")


@pytest.fixture
def pi(tmp_path):
    """A data directory standing in for /var/lib/glimpse, and the ``glimpse`` user (removed after)."""
    if os.geteuid() != 0:
        pytest.fail("the README install test runs as root (as `make test` in CI): it adds a system user")
    for tool in ("useradd", "userdel", "runuser"):
        assert shutil.which(tool), f"{tool} is missing (Debian's passwd and util-linux packages)"
    existed = subprocess.run(["id", USER], capture_output=True).returncode == 0
    # Under /var/tmp, not pytest's 0700 tmp_path: the service user must reach it, as /var/lib.
    root = Path(tempfile.mkdtemp(prefix="glimpse-readme-", dir="/var/tmp"))
    root.chmod(0o755)
    try:
        yield {"data": root / "var-lib-glimpse", "existed": existed}
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if not existed:
            subprocess.run(["userdel", USER], capture_output=True)


def run_steps(pi: dict, bundle: Path) -> None:
    """The README's lines with this machine's paths; as root, so ``sudo`` is dropped."""
    data = str(pi["data"])
    for line in readme_pi_steps():
        words = shlex.split(line.replace("/var/lib/glimpse", data))
        if words[0] == "sudo":
            words = words[1:]
        if words[0] == "useradd" and pi["existed"]:
            continue  # the machine has the user already: the README's line would fail on that alone
        if "venv" in line and "python3 -m venv" in line or "pip" in words[0]:
            continue  # this environment stands in for /opt/glimpse/venv (see the module docstring)
        if words[0] in ("systemctl",) or words[:2] == ["cp", "systemd/glimpse.service"]:
            continue  # no systemd here: the unit's command is run as its user below
        words = [str(bundle) if w == "my-bundle" else w for w in words]
        for i, word in enumerate(words):
            if word.startswith("&&"):
                words = words[:i]
                break
        proc = subprocess.run(words, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, f"README step {line!r} failed: {proc.stderr}"


def _python_reachable() -> list[str]:
    """A command prefix under which other users can run this Python (see the module docstring)."""
    path = Path(os.path.realpath(sys.executable))
    for parent in reversed(path.parents):
        if parent != path.parents[-1] and not parent.stat().st_mode & 0o001:
            keep = path.relative_to(parent).parts[0]
            script = ('set -e; hidden=$(mktemp -d); mount --bind "$1" "$hidden"; '
                      'mount -t tmpfs -o mode=0755 tmpfs "$1"; mkdir "$1/$2"; '
                      'mount --bind "$hidden/$2" "$1/$2"; shift 2; exec "$@"')
            return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(parent), keep]
    return []


def _as_user_command(*args: str) -> list[str]:
    """``python -m device ARGS`` as the service user, with the code under test and a clean environment."""
    env = ["env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", f"PYTHONPATH={REPO}",
           f"GLIMPSE_CONFIG={os.devnull}", "HOME=/nonexistent"]
    return [*_python_reachable(), "runuser", "-u", USER, "--", *env, sys.executable, "-m", "device", *args]


def as_user(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m device ARGS`` as the service user."""
    return subprocess.run(_as_user_command(*args), capture_output=True, text=True, cwd="/", timeout=timeout)


def serve_as_user(data: Path) -> subprocess.Popen:
    """The unit's ExecStart (its data directory, loopback, a free port) as its ``User=``."""
    assert unit_value("User") == USER
    words = shlex.split(unit_value("ExecStart"))
    assert words[1:3] == ["serve", "--data-dir"]
    port = free_port()
    proc = subprocess.Popen(_as_user_command("serve", "--data-dir", str(data), "--host", "127.0.0.1",
                                             "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    proc.port = port
    return proc


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=60)
    return err


def test_the_readmes_pi_steps_give_a_bundle_the_service_user_can_serve(pi, bundle_dir):
    run_steps(pi, bundle_dir)
    data = pi["data"]
    assert (data / "current").resolve() == (data / "bundles" / "my-bundle").resolve()

    proc = as_user("verify", "--bundle", str(data / "current"))
    assert proc.returncode == 0, proc.stderr
    assert "is intact: 8 photos" in proc.stdout

    daemon = serve_as_user(data)
    try:
        health = subprocess.run([sys.executable, "-m", "device", "health", "--port", str(daemon.port),
                                 "--wait", "120"], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert health.returncode == 0, (health.stderr, daemon.poll())
        assert '"status": "ok"' in health.stdout
    finally:
        err = stop(daemon)
    # The daemon keeps its own state in the data directory: the README makes it the user's.
    assert "adding photos on the device is off" not in err, err
    assert (data / "glimpse.sqlite").is_file()


def test_an_unreadable_bundle_is_explained_by_verify_and_at_start_up(pi, bundle_dir):
    run_steps(pi, bundle_dir)
    data = pi["data"]
    bundle = data / "bundles" / "my-bundle"
    bundle.chmod(0o700)  # as `sudo cp -r` made it of a 0700 build before issue 12
    expected = (f"cannot read {bundle}: owned by root, mode 0700, and this runs as {USER}; "
                f"run: sudo chown -R {USER}:{USER} {bundle} (or sudo chmod -R a+rX {bundle})")

    proc = as_user("verify", "--bundle", str(data / "current"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"glimpse: error: {expected}", proc.stderr

    daemon = serve_as_user(data)
    err = stop(daemon) if daemon.wait(timeout=300) is None else daemon.communicate()[1]
    assert daemon.returncode == 2
    assert err.strip().splitlines()[-1] == f"glimpse: error: {expected}", err


def test_a_data_directory_the_service_cannot_enter_is_explained(pi, bundle_dir):
    run_steps(pi, bundle_dir)
    data = pi["data"]
    os.chown(data, 0, 0)
    data.chmod(0o700)
    proc = as_user("verify", "--bundle", str(data / "current"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"glimpse: error: cannot enter {data}: owned by root, mode 0700, and this runs as {USER}; "
        f"run: sudo chown {USER}:{USER} {data} (or sudo chmod o+x {data})"), proc.stderr
