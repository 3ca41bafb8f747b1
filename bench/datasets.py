"""Datasets for the index benchmarks: items (unit rows) and queries, dimension 384.

- ``random``: unit vectors drawn from a seeded normal distribution; queries are
  more of the same. A worst case for partitioning: no cluster structure.
- ``fashion``: the image tower's embeddings of Debian's ``dataset-fashion-mnist``
  (70k product photos), queried with the text tower's embeddings of captions
  ("a photo of a sneaker"...). Above 70k items, a deterministic mixture of
  them: each extra item is a random convex combination of two real embeddings
  plus a little noise, renormalised, so it stays on the real data's manifold.

Embedding 70k images takes minutes, so the real embeddings are cached
(``var/bench/fashion-mnist-<model>.npy``, or ``$GLIMPSE_BENCH_CACHE``)::

    python -m bench.datasets --workers 2      # fill the cache ahead of time
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz")
#: Fashion-MNIST's ten classes, as a shopper would name them.
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
CAPTIONS = ("a photo of a {}", "a {}", "a picture of a {} on a white background", "a black and white {}",
            "a product photo of a {}", "my favourite {}", "a {} for sale", "a close-up of a {}")
REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Where computed embeddings are kept (created on demand)."""
    path = Path(os.environ.get("GLIMPSE_BENCH_CACHE", REPO / "var" / "bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as float32 with every row scaled to length 1."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def random_items(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors."""
    return unit_rows(np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32))


def fashion_images() -> np.ndarray:
    """All 70k Fashion-MNIST images, uint8 (70000, 28, 28), train then test.

    Raises:
        FileNotFoundError: ``dataset-fashion-mnist`` is not installed
            (``apt-get install dataset-fashion-mnist``).
    """
    parts = []
    for name in FASHION_FILES:
        with gzip.open(FASHION_DIR / name) as handle:
            data = handle.read()
        count = int.from_bytes(data[4:8], "big")
        parts.append(np.frombuffer(data, np.uint8, offset=16).reshape(count, 28, 28))
    return np.concatenate(parts)


def _embed_chunk(job: tuple[int, int]) -> np.ndarray:
    """Worker: embed images ``start:stop`` with the default model's image tower."""
    from PIL import Image

    from device import images
    from device.encoders import ImageEncoder
    from device.model import default_model_dir

    start, stop = job
    encoder = ImageEncoder.create_from_model_dir(default_model_dir(), num_threads=1)
    pictures = fashion_images()[start:stop]
    out = np.empty((stop - start, encoder.dim), np.float32)
    for i, picture in enumerate(pictures):
        # Dark garments on white, as in a shop photo (the dataset stores them inverted).
        rgb = Image.fromarray(255 - picture).convert("RGB")
        out[i] = encoder.embed_pixels(images.tower_input(rgb, encoder.input_size)[0])
    encoder.close()
    return out


def fashion_embeddings(workers: int = 1, progress: bool = True) -> np.ndarray:
    """The image tower's embeddings of all 70k Fashion-MNIST images, cached."""
    from device.model import default_model_dir, read_spec

    spec = read_spec(default_model_dir(), verify=False)
    path = cache_dir() / f"fashion-mnist-{spec.id}-{spec.version}.npy"
    if path.exists():
        return np.load(path)
    total = 70_000
    step = 2_000
    jobs = [(start, min(start + step, total)) for start in range(0, total, step)]
    parts = []
    with multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool:
        for done, part in enumerate(pool.imap(_embed_chunk, jobs), 1):
            parts.append(part)
            if progress:
                print(f"\rembedding Fashion-MNIST: {done * step}/{total}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    embeddings = np.concatenate(parts)
    np.save(path.with_suffix(".tmp.npy"), embeddings)
    os.replace(path.with_suffix(".tmp.npy"), path)
    return embeddings


def fashion_queries(count: int) -> np.ndarray:
    """``count`` text-tower embeddings of captions naming the ten classes (cycled)."""
    from device.encoders import TextEncoder
    from device.model import default_model_dir

    texts = [caption.format(name) for caption in CAPTIONS for name in FASHION_CLASSES]
    encoder = TextEncoder.create_from_model_dir(default_model_dir(), num_threads=1)
    vectors = np.stack([encoder.embed(text) for text in texts])
    encoder.close()
    if count <= len(vectors):
        return vectors[:count]
    # More queries than captions: jitter the caption embeddings a little.
    rng = np.random.default_rng(1)
    extra = vectors[rng.integers(0, len(vectors), count - len(vectors))]
    extra = unit_rows(extra + 0.05 * rng.standard_normal(extra.shape, dtype=np.float32) / np.sqrt(extra.shape[1]))
    return np.concatenate([vectors, extra])


def fashion_items(n: int, workers: int = 1, seed: int = 0) -> np.ndarray:
    """``n`` items: the real embeddings, then (beyond 70k) a deterministic mixture of them."""
    real = fashion_embeddings(workers)
    if n <= len(real):
        return np.ascontiguousarray(real[:n])
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), np.float32)
    out[: len(real)] = real
    for start in range(len(real), n, 100_000):
        stop = min(start + 100_000, n)
        a = real[rng.integers(0, len(real), stop - start)]
        b = real[rng.integers(0, len(real), stop - start)]
        weight = rng.uniform(0.0, 1.0, (stop - start, 1)).astype(np.float32)
        noise = rng.standard_normal(a.shape, dtype=np.float32) * np.float32(0.1 / np.sqrt(a.shape[1]))
        out[start:stop] = unit_rows(weight * a + (1 - weight) * b + noise)
    return out


def load(name: str, items: int, queries: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Items and queries of dataset ``name`` (``random`` or ``fashion``)."""
    if name == "random":
        return random_items(items, seed=0), random_items(queries, seed=1)
    if name == "fashion":
        return fashion_items(items, workers), fashion_queries(queries)
    raise ValueError(f"unknown dataset {name!r}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Fill the benchmark embedding cache.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    embeddings = fashion_embeddings(args.workers)
    print(f"{embeddings.shape} cached in {cache_dir()}")


if __name__ == "__main__":
    main()
