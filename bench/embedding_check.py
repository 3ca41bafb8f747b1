"""What checking every embedding row at start-up costs (issue 13.11).

Writes a float32 ``embeddings.npy`` of N unit rows, then times
:func:`device.bundle.check_embeddings` on it memory-mapped, cold (page cache
dropped for that file with ``posix_fadvise(DONTNEED)``) and warm, and reports
the peak RSS growth of the check. Prints a table.

    python -m bench.embedding_check [--items 1000000] [--dim 512] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from device.bundle import check_embeddings


def _write(path: Path, items: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(items, dim))
    for start in range(0, items, 65536):
        block = rng.standard_normal((min(65536, items - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block
    out.flush()
    del out


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "embeddings.npy"
        _write(path, args.items, args.dim)
        size_mib = path.stat().st_size / 2**20
        rows = []
        for label in ("cold", "warm"):
            if label == "cold":
                _drop_cache(path)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            check_embeddings(np.load(path, mmap_mode="r"))
            seconds = time.perf_counter() - started
            growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
            rows.append((label, seconds, size_mib / seconds, growth))
    print(f"| items | dim | file MiB | page cache | check s | MiB/s | peak RSS growth MiB |")
    print("|---|---|---|---|---|---|---|")
    for label, seconds, rate, growth in rows:
        print(f"| {args.items:,} | {args.dim} | {size_mib:,.0f} | {label} | {seconds:.2f} | {rate:,.0f} | {growth:,.0f} |")


if __name__ == "__main__":
    main()
