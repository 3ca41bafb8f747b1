"""``glimpse health``: the daemon's /healthz answer, as a push checks it on the device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

from conftest import REPO, run_cli
from test_daemon import Daemon, _free_port


def test_prints_the_daemon_report(tmp_path, bundle_dir):
    daemon = Daemon(tmp_path, "--bundle", str(bundle_dir))
    try:
        daemon.notifications.wait_for("READY=1")
        proc = run_cli("device", "health", "--port", str(daemon.port))
    finally:
        assert daemon.stop() == 0
    report = json.loads(proc.stdout)
    assert report["status"] == "ok" and report["items"] == 8
    assert report["bundle_id"] == json.loads((bundle_dir / "manifest.json").read_text())["bundle_id"]


def test_waits_for_a_starting_daemon_then_answers(tmp_path, bundle_dir):
    port = _free_port()
    asker = subprocess.Popen([sys.executable, "-m", "device", "health", "--port", str(port), "--wait", "120"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = None
    try:
        # The daemon starts only after the question is asked.
        daemon = subprocess.Popen([sys.executable, "-m", "device", "serve", "--bundle", str(bundle_dir),
                                   "--port", str(port)], cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none")))
        out, err = asker.communicate(timeout=150)
    finally:
        if asker.poll() is None:
            asker.kill()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
    assert asker.returncode == 0, err
    assert json.loads(out)["items"] == 8


def test_no_daemon_is_an_error_after_the_wait():
    proc = run_cli("device", "health", "--port", str(_free_port()), "--wait", "0.3", check=False)
    assert proc.returncode == 2 and "no Glimpse daemon answers at http://127.0.0.1:" in proc.stderr


def test_another_program_on_the_port_is_named_as_such():
    # A server that is not HTTP (sshd greets like this) on a loopback port.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def greet():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
                conn.recv(1024)

        greeter = threading.Thread(target=greet, daemon=True)
        greeter.start()
        proc = run_cli("device", "health", "--port", str(server.getsockname()[1]), check=False)
        greeter.join(timeout=30)
    assert proc.returncode == 2 and "did not answer like a Glimpse daemon" in proc.stderr
