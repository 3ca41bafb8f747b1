"""Image towers side by side, as the device runs them (LiteRT, one thread).

For each model directory: the tower's size, the median time to embed one
photo (tower only, on a demo photo's input), the least cosine of its
embeddings against the model's PyTorch reference (``reference.npz``), and the
known-answer queries of ``bench.tune_conse`` over the demo gallery (top-1
hits and mean reciprocal rank), with each model's own text tower.

    python -m bench.image_tower models/glimpse-default OTHER_MODEL_DIR [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def _row(model_dir: Path, repeat: int) -> dict:
    from bench.tune_conse import CHECKS
    from device import images
    from device.encoders import EncoderOptions, ImageEncoder, TextEncoder
    from provisioning import demo
    from provisioning.models.convert import cosine_rows

    options = EncoderOptions(model_dir=model_dir, num_threads=1)
    reference = np.load(model_dir / "reference.npz")
    with ImageEncoder.create_from_options(options) as image, TextEncoder.create_from_options(options) as text:
        pixels = reference["photo_inputs"]
        lite = np.stack([image.embed_pixels(p) for p in pixels])
        parity = float(cosine_rows(lite, reference["photo_embeddings"]).min())
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            image.embed_pixels(pixels[0])
            times.append(time.perf_counter() - started)
        gallery = {}  # the demo library's names (cat.png, ...), which CHECKS uses
        for source, name in sorted(demo.DEMO_PHOTOS.items()):
            photo = images.open_photo(demo.demo_photo(source), min_side=image.input_size)
            gallery[name] = image.embed_image(photo.image)
        files = list(gallery)
        matrix = np.stack([gallery[f] for f in files])
        hits, reciprocal = 0, []
        for query, want in CHECKS.items():
            order = np.argsort(-(matrix @ text.embed(query)))
            rank = [files[i] for i in order].index(want) + 1
            hits += rank == 1
            reciprocal.append(1 / rank)
        spec = image.spec
    return {"model": spec.full_id, "file": spec.image.file,
            "mb": (model_dir / spec.image.file).stat().st_size / 1e6,
            "ms": statistics.median(times) * 1000, "parity": parity,
            "top1": f"{hits}/{len(CHECKS)}", "mrr": float(np.mean(reciprocal))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="model directories")
    parser.add_argument("--repeat", type=int, default=30, help="timed embeddings per model")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cpus, "
          f"Python {platform.python_version()}; LiteRT, one thread\n")
    print("| model | image tower | MB | ms / photo | parity vs PyTorch | known-answer top-1 | MRR |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model_dir in args.models:
        r = _row(model_dir, args.repeat)
        print(f"| {r['model']} ({model_dir}) | {r['file']} | {r['mb']:.1f} | {r['ms']:.1f} | {r['parity']:.6f} | "
              f"{r['top1']} | {r['mrr']:.3f} |")


if __name__ == "__main__":
    main()
