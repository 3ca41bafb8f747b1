"""A captioned photo set drawn on the spot, in COCO captions format: coloured
shapes on backgrounds, each photo with several captions that describe it.

For training tests and benchmarks without downloads: ``glimpse-provision
train`` must learn colours, shapes and backgrounds from the captions (the
frozen towers know them only loosely), and hold-out photos have layouts and
colour/shape/background combinations it has not seen together. Everything is
drawn from a seed, so the same call gives the same files::

    python -m bench.shapes --out var/shapes --variants 2     # 192 photos
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 30),
           "purple": (140, 50, 170), "orange": (245, 130, 20)}
SHAPES = {"circle": "round disc", "square": "box", "triangle": "pyramid shape", "star": "star shape"}
BACKGROUNDS = {"white": (235, 235, 235), "black": (25, 25, 25), "sky": (150, 200, 240), "sand": (215, 190, 140)}
BACKGROUND_PHRASES = {"white": "a white background", "black": "a dark background", "sky": "a light blue sky",
                      "sand": "sandy beige ground"}


def _shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:  # a five-pointed star
        points = [(cx + (r if k % 2 == 0 else r * 0.45) * math.sin(k * math.pi / 5),
                   cy - (r if k % 2 == 0 else r * 0.45) * math.cos(k * math.pi / 5)) for k in range(10)]
        draw.polygon(points, fill=fill)


def draw_photo(colour: str, shape: str, background: str, rng: random.Random) -> tuple[Image.Image, list[str]]:
    """One photo (256 x 192, a little noisy) and its captions."""
    width, height = 256, 192
    base = BACKGROUNDS[background]
    img = Image.new("RGB", (width, height), base)
    draw = ImageDraw.Draw(img)
    for _ in range(60):  # texture, so photos are not flat colour fields
        x, y, s = rng.randrange(width), rng.randrange(height), rng.randrange(2, 8)
        shade = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in base)
        draw.ellipse([x, y, x + s, y + s], fill=shade)
    big = rng.random() < 0.5
    r = rng.uniform(50, 65) if big else rng.uniform(25, 36)
    # Stay inside the centre crop the towers see (192 x 192 of 256 x 192).
    cx = rng.uniform(32 + r, width - 32 - r)
    cy = rng.uniform(r, height - r)
    _shape(draw, shape, cx, cy, r, COLOURS[colour])
    side = "on the left" if cx < width * 0.42 else "on the right" if cx > width * 0.58 else "in the middle"
    size = "big" if big else "small"
    captions = [
        f"a {colour} {shape} on {BACKGROUND_PHRASES[background]}",
        f"a {size} {colour} {SHAPES[shape]} {side}",
        f"{BACKGROUND_PHRASES[background]} with a {colour} {shape}",
    ]
    return img, captions


def make_shapes(root: Path, colours: int = 4, shapes: int = 3, backgrounds: int = 3, variants: int = 1,
                seed: int = 0) -> Path:
    """Write ``captions.json`` (COCO format) and ``images/`` under ``root``.

    Every combination of the first ``colours`` colours, ``shapes`` shapes and
    ``backgrounds`` backgrounds is drawn ``variants`` times (other size and
    place). Every fifth photo has ``"split": "val"``, the others ``"train"``.
    Returns the path of ``captions.json``.
    """
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    doc = {"images": [], "annotations": []}
    combos = itertools.product(list(COLOURS)[:colours], list(SHAPES)[:shapes], list(BACKGROUNDS)[:backgrounds],
                               range(variants))
    for image_id, (colour, shape, background, variant) in enumerate(combos, start=1):
        img, captions = draw_photo(colour, shape, background, rng)
        name = f"{colour}-{shape}-{background}-{variant}.jpg"
        img.save(root / "images" / name, quality=90)
        doc["images"].append({"id": image_id, "file_name": name, "width": img.width, "height": img.height,
                              "split": "val" if image_id % 5 == 0 else "train"})
        for caption in captions:
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id,
                                       "caption": caption})
    path = root / "captions.json"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write captions.json and images/ into")
    parser.add_argument("--colours", type=int, default=len(COLOURS))
    parser.add_argument("--shapes", type=int, default=len(SHAPES))
    parser.add_argument("--backgrounds", type=int, default=len(BACKGROUNDS))
    parser.add_argument("--variants", type=int, default=2, help="drawings of each combination (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_shapes(args.out, args.colours, args.shapes, args.backgrounds, args.variants, args.seed)
    doc = json.loads(path.read_text(encoding="utf-8"))
    print(f"{path}: {len(doc['images'])} photos, {len(doc['annotations'])} captions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
