"""Hostile photos against a real daemon process: memory-bounded decoding and quarantine (issue 13.1).

Peak memory is the kernel's own figure, VmHWM in /proc/PID/status, reset after the daemon has
warmed up (one photo embedded) by writing 5 to /proc/PID/clear_refs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image, ImageDraw

from conftest import REPO, free_port, run_cli
from test_ingest import _multipart, photo_bytes

MIB = 2**20
BUDGET_MB = 160  # 40% of the unit's MemoryMax=400M, as the default derives it


@pytest.fixture(scope="module")
def poison(tmp_path_factory):
    """The issue's files: a 10950x10950 1-bit PNG (~15 KB), its RGB version, and a 36 MP PNG."""
    root = tmp_path_factory.mktemp("poison")
    files = {}
    bits = Image.new("1", (10950, 10950), 0)
    ImageDraw.Draw(bits).rectangle((1000, 1000, 9000, 9000), outline=1, width=40)
    files["bomb-1bit.png"] = root / "bomb-1bit.png"
    bits.save(files["bomb-1bit.png"], optimize=True)
    files["bomb-rgb.png"] = root / "bomb-rgb.png"
    bits.convert("RGB").save(files["bomb-rgb.png"], compress_level=9)
    del bits
    big = Image.linear_gradient("L").resize((7360, 4912)).convert("RGB")
    files["36mp.png"] = root / "36mp.png"
    big.save(files["36mp.png"], compress_level=9)
    del big
    assert files["bomb-1bit.png"].stat().st_size < 40_000
    return files


@pytest.fixture
def data_dir(tmp_path, bundle_dir):
    import shutil

    root = tmp_path / "data"
    (root / "bundles").mkdir(parents=True)
    shutil.copytree(bundle_dir, root / "bundles" / "first")
    (root / "current").symlink_to("bundles/first")
    return root


class Served:
    """``glimpse serve`` in a subprocess (stderr to a file, to read the log afterwards)."""

    def __init__(self, data_dir, log_path, **settings):
        self.port = free_port()
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "device", "serve", "--data-dir", str(data_dir), "--port", str(self.port)],
                cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                # Settings from the environment, as a systemd unit's Environment= gives them.
                env=dict(os.environ, GLIMPSE_CONFIG="/nonexistent",
                         **{f"GLIMPSE_{k.upper()}": str(v) for k, v in settings.items()}))
        line = self.proc.stdout.readline()
        assert "Glimpse is serving" in line, line + log_path.read_text()

    def status(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status", timeout=30) as response:
            return json.load(response)["ingest"]

    def upload(self, name: str, data: bytes) -> tuple[int, dict | list]:
        body, boundary = _multipart(name, data)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/admin/upload", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                  "X-Glimpse-Client": "test"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def wait_idle(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status["queued"] == 0:
                return status
            time.sleep(0.1)
        raise AssertionError(f"still queued after {timeout}s: {self.status()}")

    def memory(self, field: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(field)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.proc.stdout.close()


@pytest.mark.parametrize("budget_mb", [BUDGET_MB, 240])
def test_peak_memory_of_a_daemon_ingesting_poison_photos_stays_within_the_budget(data_dir, poison, tmp_path,
                                                                                  budget_mb):
    served = Served(data_dir, tmp_path / "daemon.log", decode_budget_mb=budget_mb)
    try:
        # Warm up: the image tower loads with the first photo.
        assert served.upload("warm.jpg", photo_bytes(variant=1))[0] == 202
        served.wait_idle()
        with open(f"/proc/{served.proc.pid}/clear_refs", "w") as handle:
            handle.write("5")  # VmHWM := VmRSS now
        baseline = served.memory("VmRSS")
        outcomes = {}
        for name, path in poison.items():
            status, answer = served.upload(name, path.read_bytes())
            outcomes[name] = (status, answer)
            served.wait_idle()
        peak = served.memory("VmHWM")
        ingest = served.status()
    finally:
        served.stop()
    growth = peak - baseline
    print(f"baseline {baseline / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB, growth {growth / MIB:.0f} MiB "
          f"(budget {budget_mb} MiB); outcomes: { {n: s for n, (s, _) in outcomes.items()} }")
    assert growth < budget_mb * MIB
    assert peak < 400 * MIB  # the unit's MemoryMax
    # The RGB bomb cannot be decoded within the budget: refused at once, with the reason.
    status, answer = outcomes["bomb-rgb.png"]
    assert status == 400 and f"over the budget of {budget_mb} MiB" in answer["results"][0]["reason"]
    # The 1-bit bomb fits (1 byte a pixel), reduced right after decoding: added; so does the
    # 36 MP photo (4 bytes a pixel) when the budget allows its 144 MB frame.
    assert outcomes["bomb-1bit.png"][0] == 202
    assert outcomes["36mp.png"][0] == (202 if budget_mb >= 200 else 400)
    assert ingest["failed"] == 0 and ingest["ready"] == 1 + sum(s == 202 for s, _ in outcomes.values())


def test_a_photo_that_killed_the_daemon_is_quarantined_after_restarts_not_retried(data_dir, poison, tmp_path):
    """No budget to speak of (the setting raised to 4 GB), and this test plays the kernel's OOM killer for
    a unit with MemoryMax=400M: the daemon is SIGKILLed once its resident memory passes 400 MiB."""
    log_path = tmp_path / "daemon.log"
    args = {"decode_budget_mb": 4096, "ingest_max_attempts": 2}
    kills = 0
    served = Served(data_dir, log_path, **args)
    try:
        assert served.upload("poison.png", poison["bomb-rgb.png"].read_bytes())[0] == 202
        for _ in range(3):  # bounded: two kills are expected, a third start must quarantine
            deadline = time.monotonic() + 120
            while served.proc.poll() is None and time.monotonic() < deadline:
                try:
                    rss = served.memory("VmRSS")
                except (FileNotFoundError, ProcessLookupError):
                    break
                if rss > 400 * MIB:
                    served.proc.send_signal(signal.SIGKILL)  # what the OOM killer does
                    served.proc.wait()
                    kills += 1
                    break
                if served.status()["quarantined"]:
                    break
                time.sleep(0.01)
            if served.proc.poll() is None:
                break  # not killed: quarantined
            served.proc.stdout.close()
            served = Served(data_dir, log_path, **args)
        ingest = served.wait_idle()
        rss = served.memory("VmHWM")
        shown = run_cli("device", "status", "--port", str(served.port)).stdout
        assert "quarantined added/poison.png: quarantined: the daemon stopped 2 times" in shown
    finally:
        served.stop()
    assert kills == 2
    assert ingest["quarantined"] == 1 and ingest["queued"] == 0 and ingest["ready"] == 0
    assert ingest["quarantine"][0]["path"] == "added/poison.png"
    assert "stopped 2 times" in ingest["quarantine"][0]["reason"]
    assert rss < 400 * MIB  # the last start never decoded it
    assert "quarantined: the daemon stopped 2 times" in log_path.read_text()
