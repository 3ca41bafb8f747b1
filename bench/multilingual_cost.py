"""What the multilingual text route costs on the device: whole-query time per route, memory, size on disk.

For each bundle, in a fresh process (one thread, the device venv's LiteRT):
VmRSS after opening the bundle and one English query (idle: the multilingual
tower is not loaded yet), the p50/p95 of whole queries (``Searcher.search``:
route, encode, search) in English, VmRSS after the first non-English query
(the route loaded), the p50/p95 of non-English queries; and the size on disk of
the text towers and tokenizers.

    python -m bench.multilingual_cost var/demo-bundle var/demo-bundle-ml [--repeat 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGLISH = ["a cat", "a cup of coffee", "a space launch", "a motorbike", "something red", "two people",
           "the moon at night", "a brick wall"]
OTHER = ["un gato", "una taza de café", "eine Katze", "ein Motorrad", "un chat", "uma xícara de café",
         "un gatto", "кошка", "красный мотоцикл", "一只猫", "红色的汽车", "猫", "赤いバイク"]


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(searcher, queries: list[str], repeat: int) -> tuple[float, float]:
    samples = []
    for i in range(repeat):
        start = time.perf_counter()
        searcher.search(queries[i % len(queries)], k=10)
        samples.append(time.perf_counter() - start)
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.95 * (len(ordered) - 1))] * 1000


def child(bundle: Path, repeat: int) -> dict:
    """Measure one bundle in this process (see the module docstring)."""
    from device.search import Searcher

    searcher = Searcher.from_bundle(bundle, num_threads=1)
    searcher.search(ENGLISH[0], k=10)
    out = {"model": searcher.bundle.spec.full_id, "photos": len(searcher.bundle), "rss_idle": _rss_mb()}
    out["english"] = _timed(searcher, ENGLISH, repeat)
    searcher.search(OTHER[0], k=10)
    out["rss_after_other"] = _rss_mb()
    out["other"] = _timed(searcher, OTHER, repeat)
    spec = searcher.bundle.spec
    model_dir = searcher.bundle.model_dir
    names = [spec.text.file, spec.text.tokenizer]
    if spec.text.multilingual is not None:
        names += [spec.text.multilingual.file, spec.text.multilingual.tokenizer]
    out["text_mb"] = sum((model_dir / n).stat().st_size for n in names) / 1e6
    out["routes"] = {q: searcher.encoder.route_of(q) for q in (ENGLISH[0], OTHER[0])}
    searcher.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path, nargs="+")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.bundles[0], args.repeat)))
        return 0
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}; {args.repeat} whole queries per cell, 1 thread")
    print()
    print("| model | text towers + tokenizers MB | English p50 / p95 ms | non-English p50 / p95 ms "
          "| RSS idle MB | RSS after a non-English query MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for bundle in args.bundles:
        run = subprocess.run([sys.executable, "-m", "bench.multilingual_cost", "--child", str(bundle),
                              "--repeat", str(args.repeat)], capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| {r['model']} ({r['photos']} photos; routes {r['routes']}) | {r['text_mb']:.1f} "
              f"| {r['english'][0]:.2f} / {r['english'][1]:.2f} | {r['other'][0]:.2f} / {r['other'][1]:.2f} "
              f"| {r['rss_idle']:.0f} | {r['rss_after_other']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
