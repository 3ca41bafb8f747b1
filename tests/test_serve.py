"""``glimpse serve`` as a real process behind the real WSGI server (waitress), on loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from conftest import REPO, free_port as _free_port




def test_serve_answers_then_stops_cleanly_on_sigterm(bundle_dir):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--bundle", str(bundle_dir),
                             "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        # The URL line is printed only once the model and index are loaded and
        # the socket is bound: it is the readiness signal.
        line = proc.stdout.readline()
        assert re.match(rf"Glimpse is serving 8 photos at http://127\.0\.0\.1:{port}/", line), line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=a+rocket&k=1", timeout=30) as resp:
            assert resp.status == 200
            assert json.load(resp)[0]["path"] == "space/rocket.jpg"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?q=", timeout=30)
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
            assert "empty" in json.load(exc)["error"]
        else:
            raise AssertionError("an empty query must be refused")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = proc.stderr.read()
        assert "GET /api/search?q=a+rocket&k=1 200" in log
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_serve_refuses_an_invalid_bundle(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "device", "serve", "--bundle", str(tmp_path),
                           "--port", str(_free_port())], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no manifest.json" in proc.stderr
