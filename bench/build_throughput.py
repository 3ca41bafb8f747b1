"""Build throughput at library scale, full and incremental.

Makes a library of N distinct JPEGs from crops, rotations and scales of the
demo photos, builds a bundle (cold cache), adds 100 photos and builds again
(warm cache), and prints photos/s for both.

    python -m bench.build_throughput [--photos 3000] [--workers 0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_library(root: Path, count: int, start: int = 0) -> None:
    """``count`` distinct photos, 640-1280 px, from the demo gallery."""
    import numpy as np
    from PIL import Image

    from provisioning import demo

    sources = [Image.open(demo.demo_photo(name)).convert("RGB") for name in demo.DEMO_PHOTOS]
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        img = sources[i % len(sources)]
        w, h = img.size
        left, top = int(rng.integers(0, w // 5)), int(rng.integers(0, h // 5))
        crop = img.crop((left, top, left + int(w * 0.75), top + int(h * 0.75)))
        crop = crop.rotate(float(rng.choice([0, 90, 180, 270])), expand=True)
        side = int(rng.integers(640, 1281))
        crop = crop.resize((side, int(side * crop.height / crop.width)))
        folder = root / f"{2000 + i % 20}" / f"{i % 12 + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"IMG_{i:05d}.jpg", quality=88)


def _build(library: Path, out: Path, cache: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "provisioning", "build", "--images", str(library), "--out", str(out),
           "--cache-dir", str(cache), "--force", "--quiet", "--workers", str(workers)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    report["wall_seconds"] = wall
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=0, help="0: one per CPU")
    parser.add_argument("--keep", type=Path, help="keep the library and bundle here")
    args = parser.parse_args(argv)
    base = args.keep or Path(tempfile.mkdtemp(prefix="glimpse-build-bench-"))
    library, cache, out = base / "library", base / "cache", base / "bundle"
    try:
        started = time.perf_counter()
        make_library(library, args.photos)
        print(f"made {args.photos} photos in {time.perf_counter() - started:.0f}s; "
              f"{platform.machine()}, {os.cpu_count()} cpus", flush=True)
        cold = _build(library, out, cache, args.workers)
        make_library(library, 100, start=args.photos)
        warm = _build(library, out, cache, args.workers)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print("| build | photos | embedded | from cache | wall s | photos/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, rep in (("full, cold cache", cold), ("incremental, +100 photos", warm)):
            print(f"| {name} | {rep['items']} | {rep['embedded']} | {rep['from_cache']} | "
                  f"{rep['wall_seconds']:.1f} | {rep['items'] / rep['wall_seconds']:.1f} |")
        print(f"bundle: {size / 1e6:.0f} MB ({size / warm['items'] / 1e3:.0f} kB per photo, previews included); "
              f"skipped {len(warm['skipped'])}, duplicates {len(warm['duplicates'])}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
