"""Huge requests and slow clients against a real daemon on loopback (issue 13, items 2 and 3).

Each case starts a fresh server on a free 127.0.0.1 port and prints one table row:

* ``url``: ``GET /api/search?q=`` + MB million characters; status, RSS before and
  peak RSS (VmHWM) after, bytes the daemon logged.
* ``header``: a ``GET /healthz`` with one MB-megabyte header.
* ``slow``: S sockets each send one header line every I seconds (never ending their
  requests) while ``/healthz`` and ``/api/search`` are asked once a second for D
  seconds; how many of those were answered.

Servers: ``daemon`` is ``glimpse serve`` of the checkout given with ``--checkout``
(default: this one), so an older checkout gives the "before" figures;
``cheroot-tuned`` serves this checkout's app with cheroot (install it: Glimpse no longer
needs it) and the options cheroot offers against these attacks (a header size limit, a 5 s
socket timeout, ``--cheroot-threads`` threads).

    python -m bench.hostile_clients --bundle var/demo-bundle [--checkout /path/to/old]
        [--server daemon|cheroot-tuned] [--mb 20] [--slow 64] [--interval 5] [--duration 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: This checkout's Daemon served by cheroot with its limits and timeouts turned on.
_CHEROOT_TUNED = """
import sys
from cheroot import wsgi
from device import settings as s
from device.daemon import Daemon, configure_logging
from device.web import create_app
bundle, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
configure_logging("info")
daemon = Daemon(s.load({"bundle": bundle, "port": port}, env={}))
daemon.load()
server = wsgi.Server(("127.0.0.1", port), create_app(daemon), numthreads=threads, request_queue_size=128)
server.max_request_header_size = 32768
server.max_request_body_size = 50 * 1024 * 1024
server.timeout = 5
server.prepare()
print("Glimpse is serving", flush=True)
server.serve()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server process on loopback; its stderr (the log) goes to a file so its size can be read."""

    def __init__(self, kind: str, bundle: Path, checkout: Path, log: Path, cheroot_threads: int):
        self.port = _free_port()
        env = dict(os.environ, GLIMPSE_CONFIG="/nonexistent", PYTHONPATH=str(checkout))
        if kind == "daemon":
            command = [sys.executable, "-m", "device", "serve", "--bundle", str(bundle), "--port", str(self.port)]
        else:
            command = [sys.executable, "-c", _CHEROOT_TUNED, str(bundle), str(self.port), str(cheroot_threads)]
        self.log = log
        self._log_file = open(log, "w")
        self.proc = subprocess.Popen(command, cwd=checkout, env=env, stdout=subprocess.PIPE,
                                     stderr=self._log_file, text=True)
        line = self.proc.stdout.readline()
        if "Glimpse is serving" not in line:
            self.stop()
            raise SystemExit(f"the server did not start: {line!r}; see {log}")

    def memory(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) in MiB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._log_file.close()


def _raw_request(port: int, head: bytes, timeout: float = 120) -> str:
    """Send ``head`` and return the response's status code (or what went wrong)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
        except OSError:
            pass  # the server may answer and close before it read everything
        try:
            reply = sock.recv(64)
        except OSError as exc:
            return type(exc).__name__
    return reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/") else "no answer"


def huge(server: Server, kind: str, mb: float) -> dict:
    rss_before, _ = server.memory()
    size = int(mb * 1_000_000)
    if kind == "url":
        head = b"GET /api/search?q=" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    else:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    status = _raw_request(server.port, head)
    rss_after, hwm = server.memory()
    return {"status": status, "rss_before": rss_before, "rss_after": rss_after, "hwm": hwm}


def slow(server: Server, sockets: int, interval: float, duration: float) -> dict:
    stop = threading.Event()
    opened = []

    def trickle() -> None:
        for _ in range(sockets):
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                opened.append(sock)
            except OSError:
                break
        line = 0
        while not stop.wait(interval):  # bounded by duration
            line += 1
            for sock in opened:
                try:
                    sock.sendall(f"X-Slow-{line}: {line}\r\n".encode())
                except OSError:
                    pass

    sender = threading.Thread(target=trickle)
    sender.start()
    answered = asked = 0
    deadline = time.monotonic() + duration
    paths = ["/healthz", "/api/search?q=a+cat&k=1"]
    while time.monotonic() < deadline:
        asked += 1
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{paths[asked % 2]}", timeout=2) as r:
                answered += r.status == 200
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(max(0.0, 1.0 - (time.monotonic() % 1.0)))
    stop.set()
    sender.join()
    for sock in opened:
        sock.close()
    return {"opened": len(opened), "answered": answered, "asked": asked}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--checkout", type=Path, default=REPO, help="the Glimpse checkout whose daemon runs")
    parser.add_argument("--server", choices=("daemon", "cheroot-tuned"), default="daemon")
    parser.add_argument("--cheroot-threads", type=int, default=4)
    parser.add_argument("--mb", type=float, default=20, help="size of the huge URL and header, in MB")
    parser.add_argument("--slow", type=int, default=64, help="slow sockets")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two header lines")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds the slow clients last")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args(argv)

    print(f"server: {args.server} from {args.checkout}")
    print("| case | status | RSS before MiB | RSS after MiB | peak RSS MiB | log bytes |")
    print("|---|---|---:|---:|---:|---:|")
    for case in ("url", "header"):
        server = Server(args.server, args.bundle, args.checkout, args.log_dir / f"hostile-{case}.log",
                        args.cheroot_threads)
        try:
            row = huge(server, case, args.mb)
        finally:
            server.stop()
        print(f"| {case} {args.mb:g} MB | {row['status']} | {row['rss_before']:.0f} | {row['rss_after']:.0f} "
              f"| {row['hwm']:.0f} | {server.log.stat().st_size} |")
    server = Server(args.server, args.bundle, args.checkout, args.log_dir / "hostile-slow.log", args.cheroot_threads)
    try:
        row = slow(server, args.slow, args.interval, args.duration)
    finally:
        server.stop()
    print(f"\nslow clients: {row['opened']} sockets, a header line every {args.interval:g} s, for "
          f"{args.duration:g} s: /healthz and /api/search answered {row['answered']} of {row['asked']}")


if __name__ == "__main__":
    main()
