"""Per-photo cost and output of the device-side recognisers on the evaluation set's photos.

For each photo: decode as the device does (``images.open_photo``), then time, one
thread, (a) the colour terms of a copy at most 64 px a side, including the resize
from the decoded photo; (b) the colour terms of the image tower's 224x224 input;
(c) BlazeFace full-range (letterbox, LiteRT, decoding, NMS). Prints the p50/p95 ms
and, per photo, the face count, the best face score and the largest face's area, with
people and non-people photos apart (the people photos are those relevant to the
set's ``ppl-person`` query).

    python -m bench.recognisers [--available] [--repeat 20]
"""

from __future__ import annotations

import argparse
import sys
import time

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
    from device.recognisers import colours, faces

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--available", action="store_true",
                        help="use the photos whose packages are installed here, leave out the rest")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per photo and step")
    args = parser.parse_args(argv)
    found = eval_set.photos(available_only=args.available)
    people = set(next(g for g in eval_set.queries("all") if g["group"] == "ppl-person")["relevant"])
    colours.lookup_table()  # built once per process, on first use: not a per-photo cost
    timings = {"colours (64 px copy)": [], "colours (224 tower input)": [], "faces (BlazeFace full)": []}
    rows = []
    with faces.FaceDetector.create_from_model_path(faces.packaged_model_path(), num_threads=1) as detector:
        for photo in found:
            image = images.open_photo(photo.path, min_side=224).image
            tower = images.tower_input(image, 224)[0]
            timings["colours (64 px copy)"] += _ms(lambda: colours.photo_colours(image), args.repeat)
            timings["colours (224 tower input)"] += _ms(lambda: colours.colour_distribution(tower), args.repeat)
            timings["faces (BlazeFace full)"] += _ms(lambda: detector.detect(image), args.repeat)
            detected = detector.detect(image)
            best = float(detector.raw_scores(image).max())
            shares = colours.photo_colours(image)
            top = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
            rows.append((photo.id in people, photo.id, len(detected), best,
                         max((f.area for f in detected), default=0.0),
                         " ".join(f"{t} {s:.2f}" for t, s in top)))
    print(f"{len(found)} photos, {args.repeat} runs each, one thread")
    print(f"{'step':<28} {'p50 ms':>8} {'p95 ms':>8}")
    for step, values in timings.items():
        print(f"{step:<28} {np.percentile(values, 50):8.2f} {np.percentile(values, 95):8.2f}")
    print()
    print(f"{'people':<7} {'photo':<18} {'faces':>5} {'best':>6} {'area':>6}  top colour terms")
    for row in sorted(rows, key=lambda r: (not r[0], -r[3])):
        print(f"{'yes' if row[0] else 'no':<7} {row[1]:<18} {row[2]:>5} {row[3]:6.2f} {row[4]:6.3f}  {row[5]}")
    with_people = [r[3] for r in rows if r[0]]
    without = [r[3] for r in rows if not r[0]]
    print()
    print(f"best face score: people photos {min(with_people):.2f}-{max(with_people):.2f}; "
          f"others {min(without):.2f}-{max(without):.2f}; "
          f"photos with a face found (score > 0.5): people {sum(r[2] > 0 for r in rows if r[0])}/{len(with_people)}, "
          f"others {sum(r[2] > 0 for r in rows if not r[0])}/{len(without)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
