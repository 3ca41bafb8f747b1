"""A small load run against a real daemon on loopback.

Starts ``glimpse serve`` on a free 127.0.0.1 port, then C client threads each
send R search requests (bounded: C x R requests in all), and prints clients,
requests, errors, throughput and latency percentiles.

    python -m bench.load --bundle var/demo-bundle [--clients 8] [--requests 200] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from bench.query_latency import QUERIES


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--threads", type=int, default=4, help="server request threads")
    args = parser.parse_args(argv)

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "device", "serve", "--bundle", str(args.bundle),
                               "--port", str(port), "--threads", str(args.threads), "--log-level", "warning"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=dict(os.environ, GLIMPSE_CONFIG="/nonexistent"))
    try:
        line = server.stdout.readline()
        if "Glimpse is serving" not in line:
            raise SystemExit(f"the daemon did not start: {line!r}")
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(number: int) -> None:
            for i in range(args.requests):
                query = QUERIES[(number + i) % len(QUERIES)]
                url = f"http://127.0.0.1:{port}/api/search?k=10&q={urllib.parse.quote(query)}"
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(url, timeout=30) as response:
                        body = json.load(response)
                        ok = response.status == 200 and len(body) > 0
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    ok, body = False, repr(exc)
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                    if not ok:
                        errors.append(str(body)[:200])

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    print(f"daemon exit status after SIGTERM: {code}")
    print("| clients | server threads | requests | errors | req/s | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.clients} | {args.threads} | {len(ordered)} | {len(errors)} | {len(ordered) / wall:.0f} | "
          f"{statistics.median(ordered) * 1000:.1f} | {p(0.99):.1f} | {ordered[-1] * 1000:.1f} |")
    for error in errors[:5]:
        print("error:", error)


if __name__ == "__main__":
    main()
