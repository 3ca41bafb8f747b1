"""Whole-query latency: text encode + search, one thread, on a real bundle.

Also times the exact index alone over synthetic item counts, so the share of
the text tower and of the index can be read side by side.

    python -m bench.query_latency --bundle var/demo-bundle [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

QUERIES = ["a cat", "a cup of coffee", "a space launch", "a motorbike", "a man with a camera on a tripod",
           "coins on a table", "the moon at night", "a brick wall", "a dog sitting on a chair",
           "galaxies in deep space", "a page of a book", "a red car parked outside"]


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=200, help="queries timed per row")
    args = parser.parse_args(argv)

    from device.index import ExactIndex
    from device.search import Searcher

    started = time.perf_counter()
    searcher = Searcher.from_bundle(args.bundle, num_threads=1)
    load_s = time.perf_counter() - started
    searcher.search("warm up", k=10)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cpus, "
          f"Python {platform.python_version()}; bundle {searcher.bundle.id} ({len(searcher.bundle)} photos)")
    print(f"start-up (open + verify + load text tower): {load_s * 1000:.0f} ms; RSS {_rss_mb():.0f} MB\n")

    encode, search, whole = [], [], []
    for i in range(args.repeat):
        query = QUERIES[i % len(QUERIES)]
        t0 = time.perf_counter()
        vector = searcher.encoder.embed(query)
        t1 = time.perf_counter()
        searcher.search_vector(vector, k=10)
        t2 = time.perf_counter()
        searcher.search(query, k=10)
        t3 = time.perf_counter()
        encode.append(t1 - t0)
        search.append(t2 - t1)
        whole.append(t3 - t2)

    rows = [("text encode (int8, 1 thread)", encode), (f"exact search, {len(searcher.bundle)} items", search),
            ("whole query (Searcher.search)", whole)]
    rng = np.random.default_rng(0)
    dim = searcher.bundle.spec.dim
    for count in (10_000, 100_000):
        items = rng.standard_normal((count, dim), dtype=np.float32)
        items /= np.linalg.norm(items, axis=1, keepdims=True)
        index = ExactIndex(items)
        samples = []
        for i in range(min(args.repeat, 100)):
            q = items[i]
            t0 = time.perf_counter()
            index.search(q, 10)
            samples.append(time.perf_counter() - t0)
        rows.append((f"exact search, {count} random items", samples))

    print("| step | p50 ms | p95 ms |")
    print("|---|---:|---:|")
    for name, samples in rows:
        p50, p95 = _ms(samples)
        print(f"| {name} | {p50:.2f} | {p95:.2f} |")
    searcher.close()


if __name__ == "__main__":
    main()
