"""Peak memory of a real daemon adding hostile photos (issue 13.1).

Starts ``glimpse serve`` on a copy of a bundle, adds one ordinary photo (the image
tower loads), then uploads each hostile file in turn. Before each file the
kernel's peak-RSS counter is reset (``5 > /proc/PID/clear_refs``); after the
worker has finished with it, the table shows the peak (VmHWM) and its growth
over the RSS before, and what became of the file.

    python -m bench.poison_photos --bundle DIR [--budget-mb 160] [--source CHECKOUT]

``--source`` runs the daemon of another checkout (e.g. an old commit exported
with ``git archive``), for old-versus-new figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from PIL import Image, ImageDraw

MIB = 2**20


def hostile_files() -> dict[str, bytes]:
    """The issue's files: a 10950x10950 1-bit PNG, its RGB version, a 36 MP PNG."""
    files = {}
    bits = Image.new("1", (10950, 10950), 0)
    ImageDraw.Draw(bits).rectangle((1000, 1000, 9000, 9000), outline=1, width=40)
    for name, image, options in (("10950x10950 1-bit PNG", bits, {"optimize": True}),
                                 ("10950x10950 RGB PNG", None, {"compress_level": 9}),
                                 ("7360x4912 (36 MP) RGB PNG", "36mp", {"compress_level": 9})):
        if image is None:
            image = bits.convert("RGB")
        elif image == "36mp":
            image = Image.linear_gradient("L").resize((7360, 4912)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "PNG", **options)
        files[name] = buffer.getvalue()
    return files


def _upload(port: int, name: str, data: bytes) -> tuple[int, object]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/admin/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                              "X-Glimpse-Client": "bench"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _ingest_status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=30) as response:
        return json.load(response)["ingest"]


def _memory(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _wait_idle(proc, port: int, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        status = _ingest_status(port)
        if status["queued"] == 0:
            return status
        time.sleep(0.1)
    raise RuntimeError("the daemon did not finish (or died)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--budget-mb", type=int, default=160)
    parser.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args()
    files = hostile_files()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        (data / "bundles").mkdir(parents=True)
        shutil.copytree(args.bundle, data / "bundles" / "b")
        (data / "current").symlink_to("bundles/b")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = dict(os.environ, GLIMPSE_CONFIG="/nonexistent", GLIMPSE_DECODE_BUDGET_MB=str(args.budget_mb),
                   PYTHONPATH=str(args.source))
        proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--data-dir", str(data), "--port",
                                 str(port)], cwd=args.source, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        rows = []
        try:
            assert "Glimpse is serving" in proc.stdout.readline()
            from PIL import Image as _Image

            warm = io.BytesIO()
            _Image.new("RGB", (640, 480), (120, 80, 40)).save(warm, "JPEG")
            _upload(port, "warm.jpg", warm.getvalue())
            _wait_idle(proc, port)
            for name, blob in files.items():
                with open(f"/proc/{proc.pid}/clear_refs", "w") as handle:
                    handle.write("5")
                before = _memory(proc.pid, "VmRSS")
                status, answer = _upload(port, name.replace(" ", "_") + ".png", blob)
                ingest = _wait_idle(proc, port)
                peak = _memory(proc.pid, "VmHWM")
                if status == 202:
                    outcome = "added" if ingest["failed"] == 0 else "failed: " + ingest["last_failure"]["reason"]
                else:
                    outcome = f"refused ({status})"
                rows.append((name, len(blob), before, peak, outcome))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            proc.stdout.close()
    print(f"budget {args.budget_mb} MiB; daemon from {args.source}")
    print("| file | bytes | RSS before MiB | peak (VmHWM) MiB | growth MiB | outcome |")
    print("|---|---|---|---|---|---|")
    for name, size, before, peak, outcome in rows:
        print(f"| {name} | {size:,} | {before / MIB:.0f} | {peak / MIB:.0f} | {(peak - before) / MIB:.0f} | {outcome} |")


if __name__ == "__main__":
    main()
