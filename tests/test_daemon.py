"""The daemon as systemd runs it: a subprocess, a notify socket, signals, reloads under load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import REPO, free_port as _free_port, run_cli




class Notifications:
    """The systemd side of the notify protocol: a datagram socket under tmp_path."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[str] = []

    def wait_for(self, field: str, timeout: float = 120) -> str:
        """Next message containing ``field`` (e.g. ``READY=1``); bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.seen.append(message)
            if field in message.split("\n"):
                return message
        raise AssertionError(f"no {field} within {timeout}s; got {self.seen}")

    def close(self):
        self.sock.close()


class Daemon:
    """``glimpse serve`` in a subprocess with a notify socket."""

    def __init__(self, tmp_path, *args, watchdog_usec=None):
        self.port = _free_port()
        self.notifications = Notifications(tmp_path / "notify.sock")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notifications.path), GLIMPSE_CONFIG=str(tmp_path / "none.conf"))
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--port", str(self.port), *args],
                                     cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.status, json.load(response)

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.close()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notifications.close()
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()


def _bundle_id(bundle) -> str:
    return json.loads((bundle / "manifest.json").read_text())["bundle_id"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, bundle_dir, library):
    """DATA_DIR with bundles/a (the library), bundles/b (a subset), bundles/bad (tampered), current -> a."""
    root = tmp_path_factory.mktemp("data")
    (root / "bundles").mkdir()
    shutil.copytree(bundle_dir, root / "bundles" / "a")
    subset = tmp_path_factory.mktemp("subset")
    shutil.copytree(library / "space", subset / "space")
    shutil.copytree(library / "pets", subset / "pets")
    run_cli("provisioning", "build", "--images", str(subset), "--out", str(root / "bundles" / "b"), "--quiet")
    shutil.copytree(root / "bundles" / "b", root / "bundles" / "bad")
    items = root / "bundles" / "bad" / "items.jsonl"
    items.write_bytes(items.read_bytes().replace(b"cat.png", b"dog.png"))
    return root


def _point_current(data_dir, name):
    link = data_dir / "current"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(f"bundles/{name}")


def test_ready_only_after_load_then_answers_at_once(tmp_path, bundle_dir):
    daemon = Daemon(tmp_path, "--bundle", str(bundle_dir))
    try:
        ready = daemon.notifications.wait_for("READY=1")
        assert f"STATUS=serving {_bundle_id(bundle_dir)}" in ready
        # READY means the model and index are loaded and the socket listens: the
        # very first query is answered, correctly.
        status, results = daemon.get("/api/search?q=a+cup+of+coffee&k=1")
        assert status == 200 and results[0]["path"] == "kitchen/coffee.png"
        assert daemon.proc.stdout.readline().startswith("Glimpse is serving 8 photos at")
    finally:
        assert daemon.stop() == 0


def test_watchdog_pings_come_while_healthy_and_stopping_is_announced(tmp_path, bundle_dir):
    daemon = Daemon(tmp_path, "--bundle", str(bundle_dir), watchdog_usec=200_000)
    try:
        daemon.notifications.wait_for("READY=1")
        for _ in range(3):
            daemon.notifications.wait_for("WATCHDOG=1", timeout=10)
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.notifications.wait_for("STOPPING=1", timeout=30)
        assert daemon.proc.wait(timeout=60) == 0
    finally:
        daemon.close()


def test_sigterm_lets_requests_in_flight_finish_and_exits_0(tmp_path, bundle_dir):
    daemon = Daemon(tmp_path, "--bundle", str(bundle_dir), "--threads", "4")
    outcomes: list[str] = []
    started = threading.Event()

    def client():
        for _ in range(400):  # bounded
            try:
                status, body = daemon.get("/api/search?q=a+cup+of+coffee&k=3", timeout=30)
                outcomes.append("ok" if status == 200 and body[0]["path"] == "kitchen/coffee.png" else f"bad {body}")
                started.set()
            except urllib.error.HTTPError as exc:
                outcomes.append(f"http {exc.code}")
            except (urllib.error.URLError, ConnectionError, OSError):
                outcomes.append("refused")  # after the socket closed: expected
                return

    try:
        daemon.notifications.wait_for("READY=1")
        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        assert started.wait(30)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0
        for thread in clients:
            thread.join(timeout=60)
    finally:
        daemon.close()
    assert outcomes.count("ok") >= 1
    assert set(outcomes) <= {"ok", "refused"}, [o for o in outcomes if o not in {"ok", "refused"}]
    assert "Traceback" not in daemon.stderr


def test_reload_swaps_bundles_while_a_client_keeps_querying(tmp_path, data_dir):
    _point_current(data_dir, "a")
    daemon = Daemon(tmp_path, "--data-dir", str(data_dir))
    failures: list[str] = []
    answers = 0
    stop = threading.Event()

    def client():
        nonlocal answers
        for _ in range(20_000):  # bounded; stopped by the test long before
            if stop.is_set():
                return
            try:
                status, body = daemon.get("/api/search?q=a+cat&k=1")
                if status != 200 or body[0]["path"] != "pets/cat.png":
                    failures.append(f"{status} {body}")
                answers += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what we look for
                failures.append(repr(exc))

    id_a, id_b = _bundle_id(data_dir / "bundles" / "a"), _bundle_id(data_dir / "bundles" / "b")
    try:
        daemon.notifications.wait_for("READY=1")
        thread = threading.Thread(target=client)
        thread.start()
        assert daemon.get("/healthz")[1]["bundle_id"] == id_a

        # 1. SIGHUP after the link moved (what systemctl reload does).
        _point_current(data_dir, "b")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notifications.wait_for("RELOADING=1")
        daemon.notifications.wait_for("READY=1")
        assert daemon.get("/healthz")[1]["bundle_id"] == id_b

        # 2. A tampered bundle is refused; b keeps serving and the link stays.
        status, body = daemon.post("/api/admin/reload", {"bundle": "bad"})
        assert status == 409 and "altered" in body["error"]
        assert daemon.get("/healthz")[1]["bundle_id"] == id_b
        assert os.readlink(data_dir / "current") == "bundles/b"

        # 3. The admin API switches the link and the bundle.
        status, body = daemon.post("/api/admin/reload", {"bundle": "a"})
        assert status == 200 and body == {"bundle_id": id_a, "previous": id_b}
        assert os.readlink(data_dir / "current") == "bundles/a"
        assert daemon.get("/healthz")[1]["bundle_id"] == id_a

        # 4. `glimpse reload` talks to the same API.
        proc = run_cli("device", "reload", "--port", str(daemon.port), "--bundle-name", "b")
        assert f"now serving bundle {id_b} (was {id_a})" in proc.stdout
        stop.set()
        thread.join(timeout=60)
    finally:
        stop.set()
        assert daemon.stop() == 0
    assert answers > 0 and failures == []
    assert "reload refused, still serving" in daemon.stderr


def test_reload_cli_explains_when_no_daemon_answers():
    proc = run_cli("device", "reload", "--port", str(_free_port()), check=False)
    assert proc.returncode == 2 and "no Glimpse daemon answers at" in proc.stderr


def test_a_refused_reload_points_current_back_so_a_restart_serves_the_same_bundle(tmp_path, data_dir):
    """Issue 13.4: `ln -sfn bundles/bad current; kill -HUP` used to leave the link on the bad bundle,
    and the next start exited 2."""
    _point_current(data_dir, "a")
    id_a = _bundle_id(data_dir / "bundles" / "a")
    daemon = Daemon(tmp_path, "--data-dir", str(data_dir))
    try:
        daemon.notifications.wait_for("READY=1")
        # 1. SIGHUP after someone pointed the link at a tampered bundle.
        _point_current(data_dir, "bad")
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.notifications.wait_for("RELOADING=1")
        assert "reload refused" in daemon.notifications.wait_for("READY=1")
        assert os.readlink(data_dir / "current") == "bundles/a"
        assert daemon.get("/healthz")[1]["bundle_id"] == id_a
        # 2. The API's reload of whatever `current` names (what `glimpse reload` does without a name).
        _point_current(data_dir, "bad")
        status, body = daemon.post("/api/admin/reload", {})
        assert status == 409 and "altered" in body["error"]
        assert os.readlink(data_dir / "current") == "bundles/a"
    finally:
        assert daemon.stop() == 0
    assert "switched back to a, the bundle being served" in daemon.stderr
    # 3. The next start serves the bundle that was being served.
    (tmp_path / "notify.sock").unlink()
    again = Daemon(tmp_path, "--data-dir", str(data_dir))
    try:
        again.notifications.wait_for("READY=1")
        assert again.get("/healthz")[1]["bundle_id"] == id_a
    finally:
        assert again.stop() == 0
