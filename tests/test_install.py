"""``push --install``: the generated device script, run against a fake root.

What runs here: the unit adaptation (checked by ``systemd-analyze verify``), the
script's syntax, and its ``user``, ``directories``, ``unit`` and ``service`` steps
for real under ``DESTDIR`` (as root: ``useradd --prefix``, ``chown``), directly
and through ssh as ``push --install`` runs it. What does not: the ``glimpse`` step
(pip into a venv needs every dependency's wheel, which only the wheelhouse
build downloads) and systemd itself (this container runs none; the ``service``
step says so and stops).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from loopback_device import SSH_CLIENT_OPTIONS, Sshd
from provisioning.deploy.install import InstallFailed, InstallOptions, install, install_script, unit_text
from provisioning.deploy.push import PushLog, PushOptions
from provisioning.deploy.remote import Remote

WHEELHOUSE = "/var/tmp/glimpse-install/wheelhouse"


def test_unit_is_the_committed_one_with_this_devices_paths():
    text = unit_text(InstallOptions(data_dir="/srv/photos", venv="/opt/g/venv", daemon_port=9000))
    committed = (REPO / "systemd" / "glimpse.service").read_text().splitlines()
    lines = text.splitlines()
    assert "ExecStart=/opt/g/venv/bin/glimpse serve --data-dir /srv/photos --host 0.0.0.0 --port 9000" in lines
    assert "ReadWritePaths=/srv/photos" in lines
    changed = [(a, b) for a, b in zip(committed, lines) if a != b]
    assert len(lines) == len(committed) and [a.split("=")[0] for a, _ in changed] == ["ExecStart", "ReadWritePaths"]


def test_adapted_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs Debian's systemd package"
    venv = str(Path(sys.executable).parent.parent)  # verify checks that ExecStart exists
    unit = tmp_path / "glimpse.service"
    unit.write_text(unit_text(InstallOptions(data_dir=str(tmp_path), venv=venv, daemon_port=9000)))
    proc = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


def test_a_unit_without_execstart_is_refused():
    with pytest.raises(InstallFailed, match="lacks ExecStart= lines"):
        unit_text(InstallOptions(unit_text="[Service]\nType=notify\nReadWritePaths=/x\n"))


def test_script_installs_from_the_wheelhouse_without_the_index():
    script = install_script(InstallOptions(wheelhouse=WHEELHOUSE))
    assert f"--no-index --find-links {WHEELHOUSE} 'glimpse[device]'" in script
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0


def test_script_without_a_wheelhouse_installs_the_wheel_and_its_dependencies_from_the_index():
    wheel = "/var/tmp/glimpse-install/wheelhouse/glimpse-0.1.0-py3-none-any.whl"
    script = install_script(InstallOptions(wheel=wheel))
    assert f"install --quiet --upgrade '{wheel}[device]'" in script and "--no-index" not in script
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    with pytest.raises(InstallFailed, match="needs a wheelhouse or a Glimpse wheel"):
        install_script(InstallOptions())


@pytest.fixture
def fake_root(tmp_path):
    """A DESTDIR with this system's account files and a login user ``pi``."""
    if os.geteuid() != 0:
        pytest.fail("the install script test runs as root (as `make test` in CI): it chowns")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy2(Path("/etc", name), root / "etc" / name)
    with open(root / "etc" / "passwd", "a") as passwd:
        passwd.write("pi:x:4242:4242:Pi:/home/pi:/bin/bash\n")
    with open(root / "etc" / "group", "a") as group:
        group.write("pi:x:4242:\n")
    return root


def _run(script: str, root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DESTDIR=str(root), GLIMPSE_INSTALL_STEPS="user directories unit service")
    return subprocess.run(["sh", "-s"], input=script, env=env, capture_output=True, text=True, timeout=120)


def _account(root: Path, file: str, name: str) -> list[str]:
    for line in (root / "etc" / file).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return []


def test_script_sets_up_user_directories_and_unit_under_a_fake_root(fake_root):
    options = InstallOptions(data_dir="/var/lib/glimpse", login_user="pi", wheelhouse=WHEELHOUSE)
    script = install_script(options)
    host_had_user = bool(_account(Path("/"), "passwd", "glimpse"))

    proc = _run(script, fake_root)

    assert proc.returncode == 0, proc.stderr
    user = _account(fake_root, "passwd", "glimpse")
    assert user[5:] == ["/var/lib/glimpse", "/usr/sbin/nologin"] and int(user[2]) < 1000  # a system user
    assert _account(fake_root, "group", "glimpse")[3] == "pi"  # the login user may push bundles
    uid, gid = int(user[2]), int(user[3])
    for relative, mode in (("var/lib/glimpse", 0o750), ("var/lib/glimpse/bundles", 0o2775),
                           ("var/lib/glimpse/bundles/.incoming", 0o2775)):
        info = (fake_root / relative).stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, uid, gid), relative
    unit = fake_root / "etc/systemd/system/glimpse.service"
    assert unit.read_text() == unit_text(options)
    assert "install: service: systemd is not running here (or DESTDIR is set)" in proc.stdout
    assert bool(_account(Path("/"), "passwd", "glimpse")) == host_had_user  # the host was not touched

    # Again: an upgrade finds everything in place.
    again = _run(script, fake_root)
    assert again.returncode == 0, again.stderr
    assert "install: user: glimpse exists" in again.stdout
    assert [line for line in (fake_root / "etc/passwd").read_text().splitlines()
            if line.startswith("glimpse:")] == [":".join(user)]


def test_script_leaves_an_existing_folder_that_is_not_a_data_directory_alone(fake_root):
    photos = fake_root / "home/pi/Pictures"
    (photos / "2024").mkdir(parents=True)
    (photos / "2024" / "cat.jpg").write_bytes(b"mine")
    photos.chmod(0o700)
    before = photos.stat()
    script = install_script(InstallOptions(data_dir="/home/pi/Pictures", login_user="pi", wheelhouse=WHEELHOUSE))

    proc = _run(script, fake_root)

    assert proc.returncode == 1
    assert "install: directories: /home/pi/Pictures holds other things and is not a Glimpse data directory" \
        in proc.stdout
    after = photos.stat()
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, before.st_gid)
    assert (photos / "2024" / "cat.jpg").read_bytes() == b"mine" and not (photos / "bundles").exists()


DEVICE_PYTHON = "python3 -c 'import platform, sys; print(\"%d.%d\" % sys.version_info[:2], platform.machine())'"


def _wheelhouse(path: Path, python: str, platform: str) -> Path:
    """A wheelhouse directory as ``glimpse-provision wheelhouse`` leaves it, for one target."""
    path.mkdir()
    (path / "glimpse-0.1.0-py3-none-any.whl").write_bytes(b"a wheel, as far as rsync cares")
    (path / "wheelhouse.json").write_text(json.dumps({
        "format": "glimpse-wheelhouse", "format_version": 1, "requirement": "glimpse[device]",
        "targets": [{"python": python, "platform": platform, "wheels": []}]}))
    return path


def test_a_wheelhouse_for_another_python_or_cpu_is_refused_before_anything_is_sent(tmp_path):
    sshd = Sshd(tmp_path / "sshd")
    remote = Remote("127.0.0.1", port=sshd.port, user=sshd.user, identity=str(sshd.key),
                    ssh_options=SSH_CLIENT_OPTIONS)
    try:
        python, machine = remote.run(DEVICE_PYTHON).stdout.split()
        other = "armv7l" if machine != "armv7l" else "aarch64"
        wheelhouse = _wheelhouse(tmp_path / "wheelhouse", python, f"linux_{other}")
        with pytest.raises(InstallFailed, match=f"has wheels for CPython {python} linux_{other}, but the device "
                                                f"runs CPython {python} on {machine}: make one with"):
            install(remote, PushOptions(remote=remote, bundle=tmp_path), wheelhouse, PushLog(lambda line: None),
                    staging=str(tmp_path / "staging"))
    finally:
        sshd.stop()
    assert not (tmp_path / "staging").exists()


def test_install_over_ssh_stages_the_wheelhouse_and_runs_the_script_as_root(fake_root, tmp_path):
    # The device is this machine through the loopback sshd, whose sessions get
    # DESTDIR (sshd's SetEnv): the real install() sends the wheelhouse with rsync and
    # runs the generated script through ssh, against the fake root. The glimpse step
    # (pip) is left out, as above.
    sshd = Sshd(tmp_path / "sshd", extra_config=(
        f"SetEnv DESTDIR={fake_root} GLIMPSE_INSTALL_STEPS=\"user directories unit service\"",))
    lines: list[str] = []
    remote = Remote("127.0.0.1", port=sshd.port, user=sshd.user, identity=str(sshd.key),
                    ssh_options=SSH_CLIENT_OPTIONS)
    try:
        # Never run the script against this machine's own root.
        assert remote.run("printenv DESTDIR").stdout.strip() == str(fake_root)
        python, machine = remote.run(DEVICE_PYTHON).stdout.split()
        wheelhouse = _wheelhouse(tmp_path / "wheelhouse", python, f"linux_{machine}")
        options = install(remote, PushOptions(remote=remote, bundle=tmp_path, data_dir="/var/lib/glimpse",
                                              daemon_port=9000), wheelhouse, PushLog(lines.append),
                          staging=str(tmp_path / "staging"))
    finally:
        sshd.stop()
    assert (tmp_path / "staging" / "wheelhouse" / "glimpse-0.1.0-py3-none-any.whl").exists()
    assert [line.split(None, 2)[2] for line in lines] == [
        f"sent the wheelhouse {wheelhouse} to {tmp_path / 'staging'}",
        "user: created system user glimpse",
        "directories: /var/lib/glimpse (0750), /var/lib/glimpse/bundles (2775, group glimpse)",
        f"unit: {fake_root}/etc/systemd/system/glimpse.service",
        "service: systemd is not running here (or DESTDIR is set): enable and start glimpse.service by hand",
    ]
    assert "--port 9000" in (fake_root / "etc/systemd/system/glimpse.service").read_text()
    # The push that follows starts the service (as root, or through sudo) and waits for it.
    assert "systemctl restart glimpse.service" in options.start_command and options.health_wait >= 120
