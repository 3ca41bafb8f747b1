"""Per-photo cost of the whole photo pipeline: the image tower alone (1.1.0) against tower + recognisers.

Both through ``ImageEncoder.embed_image`` (what the host build and the device
ingest call) on photos decoded as they decode them (``images.open_photo`` with the
shorter side at least the 1280 px preview's, or the photo's own size when smaller),
one thread, interleaved per photo so a neighbour's load hits both alike. The
recogniser model is built in a temporary directory from ``--model`` with
``provisioning.recognisers`` (1.1.0's towers + faces + colours). Also prints the
steps of the recognisers alone: all of them with the fusion (one reduced copy of the
photo, BlazeFace, colours, the weighted sum), then letterbox and BlazeFace on the
decoded photo itself, and colours.

    python -m bench.photo_pipeline --available [--repeat 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import eval_set


def _ms(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv=None) -> int:
    from device import images
    from device.encoders import ImageEncoder
    from device.recognisers import colours, faces, fusion
    from provisioning.recognisers import build_default_v2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/glimpse-default"))
    parser.add_argument("--available", action="store_true",
                        help="use the photos whose packages are installed here, leave out the rest")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs per photo and step")
    parser.add_argument("--min-side", type=int, default=1280,
                        help="decode as build and ingest do: shorter side at least the 1280 px preview")
    args = parser.parse_args(argv)
    found = eval_set.photos(available_only=args.available)
    with tempfile.TemporaryDirectory() as tmp:
        fused_dir = build_default_v2(args.model, Path(tmp) / "fused").parent
        steps = {"1.1.0 tower (embed_image)": [], "2.0 tower + recognisers (embed_image)": [],
                 "  recognisers + fusion (2.0 - tower)": [], "  faces: letterbox": [], "  faces: letterbox + invoke + decode": [], "  colours (64 px copy)": []}
        with ImageEncoder.create_from_model_dir(args.model, num_threads=1) as plain, \
                ImageEncoder.create_from_model_dir(fused_dir, num_threads=1) as fused, \
                faces.FaceDetector.create_from_model_path(fused_dir / faces.MODEL_FILE, num_threads=1) as detector:
            for photo in found:
                image = images.open_photo(photo.path, min_side=args.min_side).image
                tower = fused.embed_image(image)  # warm-up
                steps["1.1.0 tower (embed_image)"] += _ms(lambda: plain.embed_image(image), args.repeat)
                steps["2.0 tower + recognisers (embed_image)"] += _ms(lambda: fused.embed_image(image), args.repeat)
                steps["  recognisers + fusion (2.0 - tower)"] += _ms(
                    lambda: fusion.fuse(tower, fused._recognisers.added(image)), args.repeat)
                steps["  faces: letterbox"] += _ms(lambda: faces.letterbox(image), args.repeat)
                steps["  faces: letterbox + invoke + decode"] += _ms(lambda: detector.detect(image), args.repeat)
                steps["  colours (64 px copy)"] += _ms(lambda: colours.photo_colours(image), args.repeat)
    print(f"{len(found)} photos, {args.repeat} runs each, one thread, interleaved per photo")
    print(f"{'step':<40} {'p50 ms':>8} {'mean ms':>8} {'p95 ms':>8}")
    for step, values in steps.items():
        print(f"{step:<40} {np.percentile(values, 50):8.2f} {np.mean(values):8.2f} {np.percentile(values, 95):8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
