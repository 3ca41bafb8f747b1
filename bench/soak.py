"""Soak: a real daemon on loopback under everything at once, for a bounded time.

Starts ``glimpse serve`` (ingest on) on a free 127.0.0.1 port with a temporary
data directory holding two copies of the bundle and a tampered one, then for
``--seconds`` runs together: ``--clients`` search clients, ``--slow`` slowloris
sockets (one header line every 5 s), an uploader of good photos (some with huge
or odd names) and hostile files (1-bit PNG decompression bombs under the pixel
limit, truncated JPEGs, text and random bytes named .jpg), reloads (the API,
alternating good bundles and the tampered one, and SIGHUP), and ``--kills``
``kill -9`` + restart cycles. Then it waits (bounded) for the ingest queue to
drain and checks that every acknowledged good photo is there, and prints a table:
requests, errors (5xx; connection failures and time-outs outside the kill
windows), lost photos, the daemon's peak RSS (VmHWM, all its lives) against the
unit's MemoryMax, and search latency percentiles.

    python -m bench.soak --bundle var/demo-bundle [--seconds 60] [--clients 32] [--slow 4] [--kills 3]

Loopback only, every loop bounded by the deadline; it stops its daemon and
removes its data directory at the end. Exit status 1 when errors or lost photos.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, PngImagePlugin

from bench.query_latency import QUERIES
from provisioning import demo

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "glimpse.service"
#: Seconds after a restarted daemon says it is ready during which failures still count as the kill's.
GRACE = 1.0
#: A search unanswered after this long is a time-out (an error). Shorter than the time between
#: kills, so a search stalled behind slow clients is not reset by a kill and excused.
SEARCH_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _confine(limit_mib: float) -> Path | None:
    """A memory cgroup of its own capped at ``limit_mib`` (as the unit's MemoryMax caps the
    service), so the daemon runs under the same limit and derives its decode budget from
    it as it does under systemd; ``None`` where no memory cgroup can be made (not root)."""
    for root, limit_file in ((Path("/sys/fs/cgroup"), "memory.max"),
                             (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes")):
        group = root / f"glimpse-soak-{os.getpid()}"
        try:
            group.mkdir()
        except OSError:
            continue
        if not (group / "cgroup.procs").exists():  # a plain folder: no cgroup file system here
            group.rmdir()
            continue
        try:
            (group / limit_file).write_text(str(int(limit_mib * 2**20)))
            return group
        except OSError:
            group.rmdir()
    return None


def _memory_max_mib() -> float | None:
    match = re.search(r"^MemoryMax=(\d+)([KMG])", UNIT.read_text(), re.M)
    if not match:
        return None
    return int(match.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024}[match.group(2)]


@dataclass
class Tally:
    """What happened, shared by all threads (under ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[tuple[str, float, float, str, str]] = field(default_factory=list)  # (kind, t0, t1, outcome, detail)
    search_ms: list[float] = field(default_factory=list)
    acknowledged: dict[str, str] = field(default_factory=dict)  # id -> what was uploaded (good, bomb...)
    uploads: dict[str, int] = field(default_factory=dict)  # "kind outcome" -> count
    windows: list[list[float]] = field(default_factory=list)  # [killed at, ready again at]
    peak_rss_kib: int = 0
    reloads: dict[str, int] = field(default_factory=dict)

    def call(self, kind: str, t0: float, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.calls.append((kind, t0, time.monotonic(), outcome, detail[:160]))

    def in_kill_window(self, t0: float, t1: float) -> bool:
        """Whether a call that failed at ``t1`` failed because of a kill: it ended while
        the daemon was down or restarting (a time-out that merely spans a kill does not)."""
        with self.lock:
            return any(start <= t1 <= end + GRACE for start, end in self.windows)


class Daemon:
    """``glimpse serve`` on one port, restartable, its peak RSS watched."""

    def __init__(self, data: Path, port: int, log: Path, tally: Tally, cgroup: Path | None = None):
        self.data, self.port, self.log, self.tally, self.cgroup = data, port, log, tally, cgroup
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.log.open("a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "device", "serve", "--data-dir", str(self.data), "--ingest", "on",
                 "--port", str(self.port), "--log-level", "warning"],
                cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                env=dict(os.environ, GLIMPSE_CONFIG="/nonexistent"), preexec_fn=self._enter_cgroup)
        line = proc.stdout.readline()  # printed once the bundle is loaded and the socket bound
        if "Glimpse is serving" not in line:
            proc.kill()
            raise SystemExit(f"the daemon did not start: {line!r}; see {self.log}")
        with self.lock:
            self.proc = proc

    def _enter_cgroup(self) -> None:
        if self.cgroup is not None:  # in the child, before exec: the daemon starts inside the limit
            (self.cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def pid(self) -> int | None:
        with self.lock:
            return self.proc.pid if self.proc and self.proc.poll() is None else None

    def sample_rss(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        if match:
            with self.tally.lock:
                self.tally.peak_rss_kib = max(self.tally.peak_rss_kib, int(match.group(1)))

    def kill9_and_restart(self) -> None:
        self.sample_rss()
        with self.tally.lock:
            window = [time.monotonic(), float("inf")]
            self.tally.windows.append(window)
        with self.lock:
            proc, self.proc = self.proc, None
        proc.kill()
        proc.wait()
        proc.stdout.close()
        self.start()
        with self.tally.lock:
            window[1] = time.monotonic()

    def stop(self) -> int | None:
        self.sample_rss()
        with self.lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        proc.stdout.close()
        return code


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 15):
    """(status, body) of one request; raises OSError on connection failure or time-out."""
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _outcome(status: int, expected: set[int]) -> str:
    if status >= 500 and status not in expected:
        return "5xx"
    return "ok" if status in expected else f"unexpected {status}"


def _classify_failure(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else "connection"


# --- files to upload ----------------------------------------------------------------------


def _jpeg(variant: int) -> bytes:
    sources = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png"]
    image = Image.open(demo.demo_photo(sources[variant % len(sources)])).convert("RGB")
    image = image.crop((variant % 37, variant % 29, image.width - variant % 31, image.height - variant % 23))
    image.thumbnail((320, 320))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80 + variant % 15)
    return buffer.getvalue()


def _bomb(variant: int, megapixels: int) -> bytes:
    """A 1-bit PNG of ``megapixels`` (a few KB): cheap to send, costly to decode."""
    side = int((megapixels * 1_000_000) ** 0.5)
    info = PngImagePlugin.PngInfo()
    info.add_text("variant", str(variant))  # distinct content, so never a duplicate
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _upload_plan(variant: int, bomb_mp: int) -> tuple[str, str, bytes]:
    """(kind, file name, content) of the ``variant``-th upload: mostly good photos, some hostile."""
    slot = variant % 10
    if slot == 3:
        return "good, huge name", "x" * 300 + f"-{variant}.jpg", _jpeg(variant)
    if slot == 5:
        return "good, odd name", f'quote" new\nline \u00e9\u6f22 {variant}.jpg', _jpeg(variant)
    if slot == 6:
        return "truncated jpeg", f"cut-{variant}.jpg", _jpeg(variant)[: 1500 + variant % 500]
    if slot == 7:
        kind = ["not an image", "random bytes", "text"][variant // 10 % 3]
        data = {"not an image": b"GIF89a not really", "random bytes": random.randbytes(4096),
                "text": b"hello\n" * 50}[kind]
        return kind, f"{kind.replace(' ', '-')}-{variant}." + ("txt" if kind == "text" else "jpg"), data
    if slot == 9 and variant % 20 == 9:
        return "bomb png", f"bomb-{variant}.png", _bomb(variant, bomb_mp)
    return "good", f"photo-{variant}.jpg", _jpeg(variant)


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    # As browsers send it (WHATWG): quote, CR and LF percent-encoded in the file name.
    quoted = name.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{quoted}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- the run ------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO / "var" / "demo-bundle")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=32, help="concurrent search clients")
    parser.add_argument("--slow", type=int, default=4, help="slowloris sockets")
    parser.add_argument("--kills", type=int, default=3, help="kill -9 + restart cycles")
    parser.add_argument("--bomb-mp", type=int, default=100, help="megapixels of the PNG bombs (limit 120)")
    parser.add_argument("--unconfined", action="store_true",
                        help="do not run the daemon in a memory cgroup capped at the unit's MemoryMax")
    parser.add_argument("--drain-seconds", type=float, default=300, help="longest wait for the ingest queue")
    args = parser.parse_args(argv)
    if args.kills and args.seconds / (args.kills + 1) <= SEARCH_TIMEOUT:
        parser.error(f"kills must be more than {SEARCH_TIMEOUT:g} s apart: fewer --kills or more --seconds")
    random.seed(0)  # the same hostile bytes every run
    if not (args.bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run `glimpse-provision demo --out {args.bundle}`")

    work = Path(tempfile.mkdtemp(prefix="glimpse-soak-"))
    data = work / "data"
    for name in ("a", "b", "bad"):
        shutil.copytree(args.bundle, data / "bundles" / name)
    items = data / "bundles" / "bad" / "items.jsonl"
    items.write_bytes(items.read_bytes().replace(b'"path": "', b'"path": "X', 1))  # fails verification
    (data / "current").symlink_to("bundles/a")

    tally = Tally()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    memory_max = _memory_max_mib()
    cgroup = _confine(memory_max) if memory_max and not args.unconfined else None
    daemon = Daemon(data, port, work / "daemon.log", tally, cgroup)
    daemon.start()
    started = time.monotonic()
    deadline = started + args.seconds
    stop = threading.Event()

    def searcher(number: int) -> None:
        i = number
        while time.monotonic() < deadline:
            query = QUERIES[i % len(QUERIES)]
            i += 1
            t0 = time.monotonic()
            try:
                status, _ = _request(f"{base}/api/search?k=10&q={urllib.parse.quote(query)}",
                                     timeout=SEARCH_TIMEOUT)
            except OSError as exc:
                tally.call("search", t0, _classify_failure(exc), repr(exc))
                time.sleep(0.05)  # a refused connection returns at once: do not spin
                continue
            outcome = _outcome(status, {200})
            tally.call("search", t0, outcome, str(status))
            if outcome == "ok":
                with tally.lock:
                    tally.search_ms.append((time.monotonic() - t0) * 1000)

    def slowloris(number: int) -> None:
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    sock.sendall(f"GET /api/search?q=slow{number} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
                    while not stop.wait(5) and time.monotonic() < deadline:
                        sock.sendall(b"X-Slow: still here\r\n")
            except OSError:
                stop.wait(1)

    def uploader() -> None:
        variant = 0
        while time.monotonic() < deadline:
            kind, name, content = _upload_plan(variant, args.bomb_mp)
            variant += 1
            body, content_type = _multipart(name, content)
            t0 = time.monotonic()
            try:
                # A script's upload says so (X-Glimpse-Client): the CSRF check wants a page's token otherwise.
                status, answer = _request(f"{base}/api/admin/upload", body,
                                          {"Content-Type": content_type, "X-Glimpse-Client": "soak"}, 60)
            except OSError as exc:
                tally.call("upload", t0, _classify_failure(exc), repr(exc))
                continue
            # A request whose every file is refused is a 400 (or 503 when the queue is full),
            # each file with its reason: what a hostile file alone must get.
            outcome = _outcome(status, {202, 503} if kind.startswith("good") else {202, 400, 503})
            tally.call("upload", t0, outcome, f"{status} {answer[:120]!r}")
            if status in (202, 400):
                body = json.loads(answer)
                for result in body if status == 202 else body.get("results", []):
                    with tally.lock:
                        key = f"{kind}: {result['status']}"
                        tally.uploads[key] = tally.uploads.get(key, 0) + 1
                        if result["status"] in ("queued", "duplicate"):
                            tally.acknowledged[result["id"]] = kind
            stop.wait(0.25)

    def reloader() -> None:
        turn = 0
        while not stop.wait(3) and time.monotonic() < deadline:
            turn += 1
            if turn % 4 == 0:
                pid = daemon.pid()
                if pid:
                    os.kill(pid, signal.SIGHUP)
                    with tally.lock:
                        tally.reloads["SIGHUP"] = tally.reloads.get("SIGHUP", 0) + 1
                continue
            name = ["a", "b", "bad"][turn % 3]
            expected = {409} if name == "bad" else {200}
            t0 = time.monotonic()
            try:
                status, answer = _request(f"{base}/api/admin/reload", json.dumps({"bundle": name}).encode(),
                                          {"Content-Type": "application/json"}, 120)
            except OSError as exc:
                tally.call("reload", t0, _classify_failure(exc), repr(exc))
                continue
            tally.call("reload", t0, _outcome(status, expected), f"{status} {answer[:120]!r}")
            key = f"API {name}: {status}"
            with tally.lock:
                tally.reloads[key] = tally.reloads.get(key, 0) + 1

    def watcher() -> None:
        while not stop.wait(0.2):
            daemon.sample_rss()

    def killer() -> None:
        for n in range(1, args.kills + 1):
            if stop.wait(max(0.0, started + args.seconds * n / (args.kills + 1) - time.monotonic())):
                return
            daemon.kill9_and_restart()

    threads = ([threading.Thread(target=searcher, args=(n,)) for n in range(args.clients)]
               + [threading.Thread(target=slowloris, args=(n,)) for n in range(args.slow)]
               + [threading.Thread(target=f) for f in (uploader, reloader, killer)])
    watch = threading.Thread(target=watcher, daemon=True)
    watch.start()
    for thread in threads:
        thread.start()
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    # The acknowledged photos: once the queue drains (bounded), every good one must be there.
    drained, queue = False, None
    drain_deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < drain_deadline:
        try:
            status, body = _request(f"{base}/api/status", timeout=30)
            queue = json.loads(body)["ingest"]
            if queue.get("queued") == 0:
                drained = True
                break
        except OSError:
            pass
        time.sleep(1)
    lost, hostile_kept = [], 0
    for item_id, kind in sorted(tally.acknowledged.items()):
        try:
            status, _ = _request(f"{base}/api/items/{item_id}", timeout=30)
        except OSError:
            status = 0
        if kind.startswith("good") and status != 200:
            lost.append(f"{item_id} ({kind}, {status})")
        elif not kind.startswith("good"):
            hostile_kept += 1
    daemon.sample_rss()
    exit_code = daemon.stop()
    log = (work / "daemon.log").read_text(encoding="utf-8", errors="replace")
    shutil.rmtree(work, ignore_errors=True)
    if cgroup is not None:
        try:
            cgroup.rmdir()  # empty once the daemon has exited
        except OSError as exc:
            print(f"could not remove the soak's memory cgroup {cgroup}: {exc}", file=sys.stderr)

    # --- the table ---
    def count(kind=None, outcomes=None, excused=None) -> int:
        n = 0
        for k, t0, t1, outcome, _ in tally.calls:
            if kind and k != kind or outcomes and outcome not in outcomes:
                continue
            if excused is not None and tally.in_kill_window(t0, t1) != excused:
                continue
            n += 1
        return n

    errors_5xx = count(outcomes={"5xx"})
    unexpected = sum(1 for _, _, _, o, _ in tally.calls if o.startswith("unexpected"))
    # A kill excuses refused and reset connections; never a time-out (a killed daemon
    # resets its connections at once, and refuses new ones until it is back).
    outside = count(outcomes={"connection"}, excused=False) + count(outcomes={"timeout"})
    inside = count(outcomes={"connection"}, excused=True)
    latencies = sorted(tally.search_ms)
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
    good_acked = sum(1 for kind in tally.acknowledged.values() if kind.startswith("good"))
    print(f"soak: {args.seconds:g} s, {args.clients} search clients, {args.slow} slow sockets, "
          f"{args.kills} kill -9 cycles, bombs {args.bomb_mp} MP; daemon exit after SIGTERM: {exit_code}")
    print("| what | figure |")
    print("|---|---:|")
    rows = [
        ("requests (search / upload / reload)",
         f"{count('search')} / {count('upload')} / {count('reload')}"),
        ("errors: 5xx", errors_5xx),
        ("errors: other unexpected status", unexpected),
        ("errors: connection failures and time-outs outside kill windows",
         f"{outside} ({count('search', {'connection'}, False) + count('search', {'timeout'})} searches, "
         f"{count(outcomes={'timeout'})} time-outs)"),
        ("connection failures inside kill windows (expected)", inside),
        ("photos acknowledged (good / hostile)", f"{good_acked} / {len(tally.acknowledged) - good_acked}"),
        ("lost photos (acknowledged good, not served after the drain)", len(lost)),
        ("ingest queue drained", f"{drained} ({queue})"),
        ("peak RSS of the daemon (VmHWM, MiB)",
         f"{tally.peak_rss_kib / 1024:.0f}" + (f" (unit MemoryMax {memory_max:.0f}, "
                                               + ("enforced by a memory cgroup)" if cgroup else "not enforced)")
                                               if memory_max else "")),
        ("searches answered 200", len(latencies)),
        ("kill -9 windows (s, killed to ready again)", ", ".join(f"{end - start:.1f}" for start, end in tally.windows)),
        ("search latency p50 / p99 (ms)", f"{pct(0.5):.1f} / {pct(0.99):.1f}"),
        ("search throughput (ok/s)", f"{len(latencies) / args.seconds:.1f}"),
    ]
    for what, figure in rows:
        print(f"| {what} | {figure} |")
    print(f"uploads: {json.dumps(tally.uploads, sort_keys=True)}")
    print(f"reloads: {json.dumps(tally.reloads, sort_keys=True)}")
    print(f"daemon log: {log.count('Traceback')} tracebacks, {log.count('unexpected error')} 'unexpected error'")
    errors = [(k, o, d) for k, t0, t1, o, d in tally.calls
              if o != "ok" and not (o == "connection" and tally.in_kill_window(t0, t1))]
    for kind, outcome, detail in errors[:8]:
        print(f"error sample: {kind} {outcome}: {detail}")
    for item in lost[:10]:
        print("lost:", item)
    return 1 if errors_5xx or unexpected or outside or lost else 0


if __name__ == "__main__":
    sys.exit(main())
