"""Prove the partitioned index on the Pi's CPU: build on the host, search under emulation.

    # host (x86): 30k Fashion-MNIST embeddings, an ivfpq index, 40 text queries and the host's answers
    python -m bench.pi_index prepare --out /tmp/pi-index
    # device side, e.g. Debian arm64 under qemu-user with the Pi 4's core (see the platform notes):
    PYTHONPATH=SITE:SRC qemu-aarch64-static -cpu cortex-a72 -L ROOT ROOT/usr/bin/python3.11 \\
        -m bench.pi_index check --out /tmp/pi-index

``check`` needs only numpy, faiss-cpu and ``device`` (SRC: a copy of this repository's ``device`` and
``bench`` packages). It opens the index memory-mapped exactly as a bundle does, and exits non-zero unless
the lists are mapped (``OnDiskInvertedLists``), every answer equals the host's and every score is the
exact cosine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np


def prepare(out: Path) -> None:
    """Build the index and record the host's answers under ``out``."""
    from bench import datasets
    from device.index import open_index
    from provisioning.bundles.index import IndexOptions, build_index

    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "embeddings.npy", datasets.fashion_items(30_000))
    queries = datasets.fashion_queries(40)
    np.save(out / "queries.npy", queries)
    embeddings = np.load(out / "embeddings.npy", mmap_mode="r")
    record = build_index(out, embeddings, IndexOptions(kind="ivfpq"), queries=queries)
    (out / "index.json").write_text(json.dumps(record))
    index = open_index(out, record, embeddings, {record["file"]: {}})
    np.save(out / "host_rows.npy", np.stack([index.search(q, 10)[0] for q in queries]))
    print(f"prepared {out}: {record['factory']}, nprobe {record['nprobe']}, rerank {record['rerank']}")


def check(out: Path) -> int:
    """Search the prepared index here; 0 if it matches the host, 1 otherwise."""
    import faiss

    from device.index import open_index

    record = json.loads((out / "index.json").read_text())
    embeddings = np.load(out / "embeddings.npy", mmap_mode="r")
    index = open_index(out, record, embeddings, {record["file"]: {}})
    lists = type(faiss.downcast_InvertedLists(index._ann.invlists)).__name__
    queries, host = np.load(out / "queries.npy"), np.load(out / "host_rows.npy")
    same = exact_scores = 0
    for query, expected in zip(queries, host):
        rows, scores = index.search(query, 10)
        same += rows.tolist() == expected.tolist()
        exact_scores += np.allclose(scores, np.asarray(embeddings[rows], np.float64) @ query, atol=1e-5)
    print(f"{platform.machine()} Python {platform.python_version()} faiss {faiss.__version__}: lists {lists}, "
          f"{same}/{len(queries)} answers identical to the host's, {exact_scores}/{len(queries)} with exact scores")
    return 0 if lists == "OnDiskInvertedLists" and same == exact_scores == len(queries) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "check"])
    parser.add_argument("--out", type=Path, required=True, help="folder shared by host and device")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out)
        return 0
    return check(args.out)


if __name__ == "__main__":
    sys.exit(main())
