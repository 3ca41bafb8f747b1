"""The Home Assistant bridge against a real broker: Debian's mosquitto on loopback, started here.

The daemon runs as systemd runs it (``glimpse serve`` in a subprocess); a paho
client in the test plays Home Assistant: it reads the discovery configs, writes
a query to the text entity, presses the button, and watches availability while
the broker goes away and comes back and when the daemon dies.
"""

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
import urllib.request

import pytest

from conftest import REPO, free_port, run_cli

paho = pytest.importorskip("paho.mqtt.client", reason="pip install 'glimpse[lan]'")

USER, PASSWORD = "homeassistant", "s3cret-Pa55word-never-logged"
NODE = "test_glimpse"
BASE = f"glimpse/{NODE}"


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1:``port`` with its own configuration, password file and no persistence."""

    def __init__(self, tmp_path, port: int, tls: "Certificates | None" = None):
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            pytest.fail("mosquitto is missing: `make system-deps` installs Debian's mosquitto")
        self.binary, self.port, self.dir = binary, port, tmp_path / "mosquitto"
        self.dir.mkdir(exist_ok=True)
        passwords = self.dir / "passwords"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD], check=True,
                       capture_output=True, timeout=30)
        passwords.chmod(0o600)
        self.conf = self.dir / "mosquitto.conf"
        # As root, `user root` keeps mosquitto from switching to a user that cannot read tmp_path.
        # No persistence: a restarted broker has lost every retained message.
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
                             f"persistence false\nlog_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else "")
                             + (f"cafile {tls.ca}\ncertfile {tls.cert}\nkeyfile {tls.key}\n" if tls else ""))
        self.proc = None

    def start(self) -> None:
        self.log = open(self.dir / "log", "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {(self.dir / 'log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc = None
        self.log.close()


class Certificates:
    """A test CA and a server certificate for 127.0.0.1 it signs (openssl, as an admin would make them)."""

    def __init__(self, directory):
        directory.mkdir(exist_ok=True)
        self.ca, self.cert, self.key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
        ca_key, csr, ext = directory / "ca.key", directory / "server.csr", directory / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                       "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
        for command in (
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", self.ca, "-days", "2",
             "-subj", "/CN=Glimpse test CA"],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key, "-out", csr, "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", ca_key, "-CAcreateserial", "-out", self.cert,
             "-days", "2", "-extfile", ext],
        ):
            subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)


class HomeAssistant:
    """A paho client subscribed to discovery and the device's topics: what Home Assistant would see."""

    def __init__(self, port: int, ca=None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.changed = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-home-assistant")
        self.client.username_pw_set(USER, PASSWORD)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("homeassistant/#", 1), ("glimpse/#", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self.changed:
            self.messages.append((message.topic, message.payload, message.retain))
            self.changed.notify_all()

    def wait_for(self, topic: str, accept=lambda payload: True, timeout: float = 60.0) -> bytes:
        """The first message on ``topic`` whose payload ``accept`` takes; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for seen, payload, _ in self.messages:
                    if seen == topic and accept(payload):
                        return payload
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing accepted on {topic} within {timeout}s; "
                                         f"saw {[(t, p[:80]) for t, p, _ in self.messages if t == topic]}")
                self.changed.wait(left)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    server = Mosquitto(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


def _serve(tmp_path, bundle_dir, broker_port: int, **extra) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none.conf"), GLIMPSE_MQTT_HOST="127.0.0.1",
               GLIMPSE_MQTT_PORT=str(broker_port), GLIMPSE_MQTT_USERNAME=USER, GLIMPSE_MQTT_PASSWORD=PASSWORD,
               GLIMPSE_MQTT_NODE_ID=NODE, GLIMPSE_MQTT_STATE_INTERVAL="1", GLIMPSE_LOG_LEVEL="debug",
               GLIMPSE_SAVED_QUERIES="the moon|a cat")
    env.update(extra)
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--bundle", str(bundle_dir), "--port",
                             str(port), "--slideshow-results", "3"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, f"http://127.0.0.1:{port}"


def _kiosk(url: str, accept, timeout: float = 60.0) -> dict:
    """Poll /api/kiosk until ``accept`` takes its answer; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/kiosk", timeout=10) as response:
                last = json.load(response)
            if accept(last):
                return last
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"the kiosk never showed what was expected; last {last}")


def _finish(proc) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out, err = proc.communicate()
    return err


def test_discovery_query_button_and_a_broker_restart(tmp_path, bundle_dir, broker):
    ha = HomeAssistant(broker.port)
    proc, url = _serve(tmp_path, bundle_dir, broker.port)
    try:
        # Discovery: five sensors, the text entity and the button, each with availability and the device.
        sensors = ("photos", "added_photos", "queries_per_minute", "last_query", "status")
        configs = {}
        for component, object_id in [*(("sensor", s) for s in sensors), ("text", "query"), ("button", "surprise")]:
            topic = f"homeassistant/{component}/{NODE}/{object_id}/config"
            configs[object_id] = json.loads(ha.wait_for(topic))
        for object_id, config in configs.items():
            assert config["unique_id"] == f"glimpse_{NODE}_{object_id}"
            assert config["availability_topic"] == f"{BASE}/availability"
            assert config["device"]["identifiers"] == [f"glimpse_{NODE}"]
            assert config["device"]["configuration_url"].endswith(".local:" + url.rsplit(":", 1)[1] + "/") \
                or config["device"]["configuration_url"].startswith("http://127.0.0.1:")
        assert configs["query"]["command_topic"] == f"{BASE}/query/set"
        assert configs["surprise"]["command_topic"] == f"{BASE}/surprise/press"
        assert configs["photos"]["value_template"] == "{{ value_json.photos }}"
        assert ha.wait_for(f"{BASE}/availability") == b"online"
        state = json.loads(ha.wait_for(f"{BASE}/state"))
        assert state["photos"] == 8 and state["added_photos"] == 0 and state["status"] == "ready"

        # A query written to the text entity is what the kiosk shows.
        ha.publish(f"{BASE}/query/set", "a cup of coffee")
        shown = _kiosk(url, lambda k: k["query"] == "a cup of coffee")
        assert shown["slides"][0]["path"] == "kitchen/coffee.png" and shown["kind"] == "results"
        assert ha.wait_for(f"{BASE}/query") == b"a cup of coffee"
        ha.wait_for(f"{BASE}/state", lambda p: json.loads(p)["last_query"] == "a cup of coffee")
        ha.wait_for(f"{BASE}/state", lambda p: json.loads(p)["queries_per_minute"] > 0)

        # The button runs the next saved query, as the front button would.
        ha.publish(f"{BASE}/surprise/press", "PRESS")
        surprise = _kiosk(url, lambda k: k["source"] == "saved")
        with urllib.request.urlopen(url + "/api/search?q=the+moon&k=3", timeout=30) as response:
            expected = [r["path"] for r in json.load(response)]
        assert surprise["query"] == "the moon" and [s["path"] for s in surprise["slides"]] == expected

        # A query the daemon refuses: the status says why; the kiosk keeps what it showed.
        ha.publish(f"{BASE}/query/set", "@nosuchphoto")
        ha.wait_for(f"{BASE}/state", lambda p: json.loads(p)["status"].startswith("query refused"))
        assert _kiosk(url, lambda k: True)["query"] == "the moon"

        # The broker goes away and comes back without its retained messages: the bridge
        # reconnects and publishes discovery and availability again.
        ha.close()
        broker.stop()
        broker.start()
        ha = HomeAssistant(broker.port)
        assert ha.wait_for(f"{BASE}/availability", timeout=90) == b"online"
        ha.wait_for(f"homeassistant/text/{NODE}/query/config")
        status = _kiosk(url, lambda k: True) and json.load(urllib.request.urlopen(url + "/api/status", timeout=10))
        assert status["home_assistant"]["connected"] and status["home_assistant"]["connections"] >= 2
        assert status["home_assistant"]["error"] is None
        assert status["home_assistant"]["broker"] == f"127.0.0.1:{broker.port}"

        # A query after the reconnection still reaches the kiosk.
        ha.publish(f"{BASE}/query/set", "a rocket")
        assert _kiosk(url, lambda k: k["query"] == "a rocket")["slides"][0]["path"] == "space/rocket.jpg"

        # Stopping says offline (retained) before the daemon exits 0.
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        ha.wait_for(f"{BASE}/availability", lambda p: p == b"offline")
    finally:
        ha.close()
        log = _finish(proc)
    assert "Home Assistant bridge: connected to 127.0.0.1" in log
    assert "lost 127.0.0.1" in log  # the broker's restart was noticed
    assert PASSWORD not in log  # debug logging, connecting, a restart: the password never appears


def test_last_will_says_offline_when_the_daemon_dies(tmp_path, bundle_dir, broker):
    ha = HomeAssistant(broker.port)
    proc, url = _serve(tmp_path, bundle_dir, broker.port)
    try:
        assert ha.wait_for(f"{BASE}/availability") == b"online"
        proc.kill()  # no goodbye: the broker publishes the will
        proc.wait(timeout=30)
        ha.wait_for(f"{BASE}/availability", lambda p: p == b"offline")
    finally:
        ha.close()
        _finish(proc)


def test_wrong_password_is_reported_without_the_password_and_search_goes_on(tmp_path, bundle_dir, broker):
    wrong = "wrong-Pa55word-also-never-logged"
    proc, url = _serve(tmp_path, bundle_dir, broker.port, GLIMPSE_MQTT_PASSWORD=wrong)
    try:
        # The web UI serves whatever the broker says.
        assert _kiosk(url, lambda k: k["kind"] == "library")["slides"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.load(urllib.request.urlopen(url + "/api/status", timeout=10))
            assert not status["home_assistant"]["connected"]
            if status["home_assistant"]["error"]:
                break
            time.sleep(0.1)
        assert status["home_assistant"]["error"] == "the broker refused the connection: Not authorized"
    finally:
        log = _finish(proc)
    assert "refused the connection: Not authorized" in log, log[-2000:]
    assert wrong not in log and PASSWORD not in log


def test_config_shows_that_the_password_is_set_not_what_it_is(tmp_path):
    conf = tmp_path / "glimpse.conf"
    conf.write_text(f"mqtt_host = broker.lan\nmqtt_password = {PASSWORD}\n")
    out = run_cli("device", "config", "--config", str(conf)).stdout
    assert "mqtt_password" in out and "(set)" in out and PASSWORD not in out


def test_bad_node_id_stops_start_up_with_one_line(tmp_path, bundle_dir):
    proc = subprocess.run([sys.executable, "-m", "device", "serve", "--bundle", str(bundle_dir), "--port",
                           str(free_port()), "--mqtt-host", "127.0.0.1", "--mqtt-node-id", "my glimpse/#"],
                          cwd=REPO, env=dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none.conf")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("glimpse: error: setting mqtt_node_id:")
    assert "Traceback" not in proc.stderr


def test_no_broker_does_not_hold_up_serving(tmp_path, bundle_dir):
    closed = free_port()  # nothing listens there: paho keeps retrying in its own thread
    proc, url = _serve(tmp_path, bundle_dir, closed)
    try:
        assert proc.stdout.readline().startswith("Glimpse is serving 8 photos at")
        status = json.load(urllib.request.urlopen(url + "/api/status", timeout=30))
        assert status["home_assistant"] | {"error": None} == {
            "broker": f"127.0.0.1:{closed}", "node_id": NODE, "connected": False, "connections": 0, "error": None}
        assert _kiosk(url, lambda k: k["kind"] == "library")["slides"]
        port = url.rsplit(":", 1)[1]
        printed = run_cli("device", "status", "--port", port).stdout.splitlines()
        assert f"address http://127.0.0.1:{port}/" in printed
        assert f"Home Assistant: MQTT broker 127.0.0.1:{closed}, not connected" in printed
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        _finish(proc)


def test_tls_with_the_ca_that_signs_the_broker(tmp_path, bundle_dir):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing: `make system-deps` installs it")
    certificates = Certificates(tmp_path / "tls")
    broker = Mosquitto(tmp_path, free_port(), tls=certificates)
    broker.start()
    ha = HomeAssistant(broker.port, ca=certificates.ca)
    proc, url = _serve(tmp_path, bundle_dir, broker.port, GLIMPSE_MQTT_TLS="true",
                       GLIMPSE_MQTT_CA_FILE=str(certificates.ca))
    try:
        assert ha.wait_for(f"{BASE}/availability") == b"online"
        ha.publish(f"{BASE}/query/set", "a cup of coffee")
        assert _kiosk(url, lambda k: k["query"] == "a cup of coffee")["slides"][0]["path"] == "kitchen/coffee.png"
    finally:
        ha.close()
        log = _finish(proc)
        broker.stop()
    assert f"connecting to 127.0.0.1:{broker.port} over TLS as {USER}" in log and PASSWORD not in log


def test_tls_with_a_ca_that_does_not_sign_the_broker_never_connects(tmp_path, bundle_dir):
    certificates, stranger = Certificates(tmp_path / "tls"), Certificates(tmp_path / "other")
    broker = Mosquitto(tmp_path, free_port(), tls=certificates)
    broker.start()
    proc, url = _serve(tmp_path, bundle_dir, broker.port, GLIMPSE_MQTT_TLS="true",
                       GLIMPSE_MQTT_CA_FILE=str(stranger.ca))
    try:
        assert proc.stdout.readline().startswith("Glimpse is serving")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = json.load(urllib.request.urlopen(url + "/api/status", timeout=10))["home_assistant"]
            if status["error"]:  # the handshake failed
                break
            time.sleep(0.1)
        assert status == {"broker": f"127.0.0.1:{broker.port}", "node_id": NODE, "connected": False,
                          "connections": 0, "error": "cannot connect"}
    finally:
        log = _finish(proc)
        broker.stop()
    assert "cannot connect to 127.0.0.1:%d" % broker.port in log and "does mqtt_ca_file sign" in log


def test_an_unreadable_ca_file_stops_start_up_with_one_line(tmp_path, bundle_dir):
    proc = subprocess.run([sys.executable, "-m", "device", "serve", "--bundle", str(bundle_dir), "--port",
                           str(free_port()), "--mqtt-host", "127.0.0.1", "--mqtt-tls", "true",
                           "--mqtt-ca-file", str(tmp_path / "missing.pem")],
                          cwd=REPO, env=dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none.conf")),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("glimpse: error: setting mqtt_ca_file:")


def test_queries_per_minute_over_the_last_minute():
    from device.home_assistant import QueryRate

    now = [0.0]
    rate = QueryRate(clock=lambda: now[0])
    assert rate.update(10) == 0.0  # one sample: no rate yet
    now[0] = 30.0
    assert rate.update(20) == 20.0  # 10 queries in half a minute
    now[0] = 90.0
    assert rate.update(20) == 0.0  # none in the last minute: older samples are forgotten
