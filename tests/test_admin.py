"""The admin token of a first start, its reset, and the lockout after wrong tokens."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from luma.core.device import dummy

from conftest import REPO, free_port, run_cli
from device import settings
from device.admin import TOKEN_FILE, AttemptLimiter, TokenStore
from device.daemon import Daemon
from device.hw import HardwareOptions
from device.hw.display import Screen, render
from device.hw.panel import Panel
from device.web import create_app

REMOTE = {"REMOTE_ADDR": "192.0.2.7"}


@pytest.fixture
def data_dir(tmp_path, bundle_dir):
    """A fresh appliance data directory: bundles/a and ``current`` -> it, no token yet."""
    data = tmp_path / "data"
    (data / "bundles").mkdir(parents=True)
    os.symlink(bundle_dir, data / "bundles" / "a")
    os.symlink("bundles/a", data / "current")
    return data


def _daemon(data_dir, **values) -> Daemon:
    daemon = Daemon(settings.load({"data_dir": str(data_dir), "ingest": "off", **values}, env={}))
    daemon.load()
    return daemon


def _serve_once(tmp_path, data_dir) -> tuple[str, int]:
    """Run ``glimpse serve`` until it serves, stop it; its stdout and the port it used."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--data-dir", str(data_dir),
                             "--port", str(port), "--ingest", "off"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none.conf")))
    try:
        first = proc.stdout.readline()
        assert "Glimpse is serving" in first, first
        # The token line (if any) is printed right after, before any request is served.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
            assert response.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        return first + proc.stdout.read(), port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_the_first_start_makes_and_prints_one_token_and_the_second_start_does_not(tmp_path, data_dir):
    out, _ = _serve_once(tmp_path, data_dir)
    lines = [line for line in out.splitlines() if "admin token" in line]
    assert len(lines) == 1, out
    token = lines[0].rsplit(" ", 1)[1]
    assert len(token) == 23 and token.count("-") == 3
    stored = (data_dir / TOKEN_FILE).read_text().strip()
    assert stored == hashlib.sha256(token.encode()).hexdigest()  # only the hash is kept
    assert token not in stored
    assert oct((data_dir / TOKEN_FILE).stat().st_mode & 0o777) == "0o600"

    again, _ = _serve_once(tmp_path, data_dir)
    assert "admin token" not in again
    assert (data_dir / TOKEN_FILE).read_text().strip() == stored


def test_with_an_explicit_bundle_or_the_setting_off_no_token_is_made(data_dir, bundle_dir):
    assert _daemon(data_dir, admin_token_first_start=False).first_start_token() is None
    assert Daemon(settings.load({"data_dir": str(data_dir), "bundle": str(bundle_dir)}, env={})
                  ).first_start_token() is None
    assert not (data_dir / TOKEN_FILE).exists()


def test_the_kiosk_and_the_display_show_the_token_until_its_first_use(data_dir):
    daemon = _daemon(data_dir)
    token = daemon.first_start_token()
    assert token
    client = create_app(daemon).test_client()
    clock = Clock()  # the display's frame limiter runs on it
    panel = Panel(daemon, HardwareOptions.from_settings(daemon.settings), address=lambda: "192.168.1.20:8080",
                  display_device=dummy(width=128, height=64, mode="1"), clock=clock)
    daemon.panel = panel
    try:
        panel.post("ready")
        panel.tick()
        # The kiosk browser runs on the device: its page and its polling show the token.
        assert client.get("/api/kiosk").get_json()["admin_token"] == token
        assert token in client.get("/kiosk").get_data(as_text=True)
        # Never to another machine on the network.
        assert client.get("/api/kiosk", environ_base=REMOTE).get_json()["admin_token"] is None
        assert token not in client.get("/kiosk", environ_base=REMOTE).get_data(as_text=True)
        screen = panel._screen()
        assert screen.admin_token == token
        frame = panel.hardware.display.image
        assert frame.tobytes() == render(screen, (128, 64), "1").tobytes()
        assert frame.tobytes() != render(Screen(address="192.168.1.20:8080"), (128, 64), "1").tobytes()

        # A wrong token from the network is no use of it; the right one is.
        assert client.post("/api/admin/show", json={"q": "a cat"}, environ_base=REMOTE,
                           headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/kiosk").get_json()["admin_token"] == token
        assert client.post("/api/admin/show", json={"q": "a cat"}, environ_base=REMOTE,
                           headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/api/kiosk").get_json()["admin_token"] is None
        page = client.get("/kiosk").get_data(as_text=True)
        assert token not in page and 'class="admin-token" hidden>' in page
        clock.now += 1
        panel.tick()
        assert panel._screen().admin_token == ""
        assert panel.hardware.display.image.tobytes() != frame.tobytes()
    finally:
        panel.close()


def test_with_the_first_start_token_this_device_may_still_make_admin_calls(data_dir):
    daemon = _daemon(data_dir)
    token = daemon.first_start_token()
    client = create_app(daemon).test_client()
    assert client.post("/api/admin/reload").status_code == 200  # glimpse reload, push on the device
    assert client.post("/api/admin/reload", environ_base=REMOTE).status_code == 401
    # A token from the configuration is needed from this device too, and wins over the file.
    strict = create_app(_daemon(data_dir, admin_token_sha256=hashlib.sha256(b"other").hexdigest())).test_client()
    assert strict.post("/api/admin/reload").status_code == 401
    assert strict.post("/api/admin/reload", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert strict.post("/api/admin/reload", headers={"Authorization": "Bearer other"}).status_code == 200


def test_admin_token_reset_replaces_the_token_of_a_running_daemon(data_dir, tmp_path):
    daemon = _daemon(data_dir)
    old = daemon.first_start_token()
    client = create_app(daemon).test_client()
    env = {"GLIMPSE_CONFIG": str(tmp_path / "none.conf")}
    proc = subprocess.run([sys.executable, "-m", "device", "admin-token", "--reset", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, cwd=REPO, env=dict(os.environ, **env), timeout=60)
    assert proc.returncode == 0, proc.stderr
    new = proc.stdout.splitlines()[0].rsplit(" ", 1)[1]
    assert new != old
    assert (data_dir / TOKEN_FILE).read_text().strip() == hashlib.sha256(new.encode()).hexdigest()
    # The running daemon uses the new token at once, and no longer shows the old one.
    bearer = {"Authorization": f"Bearer {new}"}
    assert client.post("/api/admin/reload", environ_base=REMOTE, headers=bearer).status_code == 200
    assert client.post("/api/admin/reload", environ_base=REMOTE,
                       headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/api/kiosk").get_json()["admin_token"] is None


def test_admin_token_reset_refuses_when_the_configuration_sets_the_token(data_dir, tmp_path):
    conf = tmp_path / "glimpse.conf"
    conf.write_text(f"admin_token_sha256 = {'a' * 64}\n")
    proc = run_cli("device", "admin-token", "--reset", "--data-dir", str(data_dir), "--config", str(conf),
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("glimpse: error: admin_token_sha256 is set")
    assert not (data_dir / TOKEN_FILE).exists()
    conf.write_text("")
    missing = run_cli("device", "admin-token", "--reset", "--data-dir", str(tmp_path / "nowhere"),
                      "--config", str(conf), check=False)
    assert missing.returncode == 2 and "not a Glimpse data directory" in missing.stderr


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_wrong_tokens_are_rate_limited_per_address_with_retry_after(data_dir):
    daemon = _daemon(data_dir, admin_max_failures=3, admin_failure_window=60)
    token = daemon.first_start_token()
    clock = Clock()
    daemon.attempts = AttemptLimiter(3, 60.0, clock=clock)
    client = create_app(daemon).test_client()

    def reload(tok, remote="192.0.2.7"):
        return client.post("/api/admin/reload", environ_base={"REMOTE_ADDR": remote},
                           headers={"Authorization": f"Bearer {tok}"})

    for second in range(3):
        clock.now += 1
        assert reload("guess").status_code == 401
    locked = reload(token)  # the right token too: guessing must not go on
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "58"
    assert "too many wrong admin tokens" in locked.get_json()["error"]
    # Another address is not locked out by this one.
    assert reload(token, remote="192.0.2.8").status_code == 200
    # The no-JavaScript form says the same, with the header.
    form = client.post("/show", data={"q": "a cat", "token": token}, environ_base=REMOTE,
                       headers={"X-Glimpse-Client": "test"})
    assert form.status_code == 429 and form.headers["Retry-After"]
    clock.now += 58  # the oldest failure leaves the window
    assert reload(token).status_code == 200
    assert reload("guess").status_code == 401  # and the count starts again
    assert reload(token).status_code == 200


def test_the_limiter_remembers_a_bounded_number_of_addresses():
    clock = Clock()
    limiter = AttemptLimiter(2, 60.0, max_clients=100, clock=clock)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    limiter.failed("10.0.3.231")  # the newest address: its two failures are kept
    assert limiter.retry_after("10.0.3.231") == 60.0
    assert limiter.retry_after("10.0.0.0") == 0.0  # forgotten, the oldest first


def test_a_damaged_token_file_leaves_admin_to_this_device_and_says_how_to_fix_it(data_dir, caplog):
    (data_dir / TOKEN_FILE).write_text("not a hash\n")
    assert TokenStore(data_dir).expected() == ""
    assert "admin-token --reset" in caplog.text
    client = create_app(_daemon(data_dir)).test_client()
    assert client.get("/").status_code == 200  # pages still work
    assert client.post("/api/admin/reload", environ_base=REMOTE).status_code == 403
    assert client.post("/api/admin/reload").status_code == 200
