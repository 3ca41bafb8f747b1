"""The systemd notify protocol against a real Unix datagram socket."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from device.systemd import Notifier
from conftest import REPO


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_messages_reach_the_socket(notify_socket):
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.enabled
    assert notifier.ready("serving 3 photos")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving 3 photos"
    for call, expected in [(notifier.watchdog, b"WATCHDOG=1"), (notifier.reloading, b"RELOADING=1"),
                           (notifier.stopping, b"STOPPING=1")]:
        assert call()
        assert sock.recv(4096) == expected


def test_abstract_namespace_socket():
    name = f"glimpse-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(4096) == b"STATUS=hello"


def test_without_systemd_every_call_is_a_quiet_no_op():
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False and notifier.watchdog() is False
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_does_not_raise(tmp_path):
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready() is False


def test_watchdog_interval_is_half_the_timeout_for_this_process():
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_unit_file_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs Debian's systemd package"
    glimpse = str(Path(sys.executable).parent / "glimpse")  # this environment's console script
    unit = (REPO / "systemd" / "glimpse.service").read_text()
    # verify checks that ExecStart exists: point it at this environment's glimpse.
    (tmp_path / "glimpse.service").write_text(unit.replace("/opt/glimpse/venv/bin/glimpse", glimpse))
    proc = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "glimpse.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    for line in ("Type=notify", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "ReadWritePaths=/var/lib/glimpse",
                 "RestrictAddressFamilies=", "MemoryMax=", "Restart=on-failure", "User=glimpse"):
        assert line in unit


def test_kiosk_unit_and_hardware_drop_in_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make test` installs Debian's systemd package"
    glimpse = str(Path(sys.executable).parent / "glimpse")
    (tmp_path / "glimpse.service").write_text(
        (REPO / "systemd" / "glimpse.service").read_text().replace("/opt/glimpse/venv/bin/glimpse", glimpse))
    # The drop-in sits beside the unit, where verify looks for it, as in /etc/systemd/system.
    (tmp_path / "glimpse.service.d").mkdir()
    drop_in = (REPO / "systemd" / "glimpse.service.d" / "hardware.conf").read_text()
    (tmp_path / "glimpse.service.d" / "hardware.conf").write_text(drop_in)
    kiosk = (REPO / "systemd" / "glimpse-kiosk.service").read_text()
    # verify checks that ExecStart exists: cage is not installed here, so point it at a binary that is.
    (tmp_path / "glimpse-kiosk.service").write_text(kiosk.replace("/usr/bin/cage", shutil.which("true")))
    proc = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "glimpse-kiosk.service"),
                           str(tmp_path / "glimpse.service")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    for line in ("Wants=glimpse.service", "After=glimpse.service", "User=glimpse-kiosk", "PAMName=login",
                 "TTYPath=/dev/tty7", "/usr/bin/cage -d -s -- /usr/bin/chromium --kiosk --ozone-platform=wayland",
                 "http://127.0.0.1:8080/kiosk", "Restart=always", "WantedBy=graphical.target"):
        assert line in kiosk
    for line in ("PrivateDevices=no", "DevicePolicy=closed", "DeviceAllow=char-gpiochip rw",
                 "DeviceAllow=char-i2c rw", "DeviceAllow=char-spi rw", "SupplementaryGroups=gpio i2c spi"):
        assert line in drop_in
