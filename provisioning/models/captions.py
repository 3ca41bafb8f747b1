"""Captioned photo data sets: what ``glimpse-provision eval`` (and later
``train``) read.

Three input forms, chosen by the file's suffix:

- ``.json``: COCO captions format, as COCO 2014/2017 ship it: ``images``
  (``[{"id", "file_name"}]``) and ``annotations`` (``[{"image_id",
  "caption"}]``). An image may carry a ``split`` field (``train``/``val``/
  ``test``); :func:`read_captions` can keep one split.
- ``.csv``: a header row with the columns ``image`` and ``caption``.
- ``.jsonl``: one ``{"image": ..., "caption": ...}`` object a line.

Image names are relative to the image folder. A caption set is refused as a
whole when its file is malformed (the user must fix it); an image file that is
missing is skipped with its captions and reported, as a build skips a corrupt
photo, because large public sets often lack a few files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from device.errors import CaptionImageUnknown, CaptionsInvalid


@dataclasses.dataclass
class CaptionSet:
    """Photos and their captions, each photo once.

    Attributes:
        images: photo paths, each once, in order of first appearance.
        captions: every caption, in file order.
        targets: for each caption, the index in ``images`` of its photo.
        skipped: (image name, reason) for photos left out with their captions.
    """

    images: list[Path]
    captions: list[str]
    targets: list[int]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def read_captions(path: Path, images_dir: Path, split: str | None = None,
                  limit: int | None = None) -> CaptionSet:
    """Read a captions file and pair it with the photos under ``images_dir``.

    Args:
        path: a COCO-format ``.json``, a ``.csv`` or a ``.jsonl`` file.
        images_dir: the folder image names are relative to.
        split: keep only images whose ``split`` field is this (COCO JSON only).
        limit: keep only the first ``limit`` photos (after the split filter).

    Raises:
        CaptionsInvalid: the file is missing, of an unknown form, or malformed;
            a caption is empty; ``split`` is given for a form without splits,
            or no image has that split; no photo is left.
        CaptionImageUnknown: a COCO annotation names an image not listed.
    """
    path, images_dir = Path(path), Path(images_dir)
    if not path.is_file():
        raise CaptionsInvalid(f"{path}: no such captions file")
    if not images_dir.is_dir():
        raise CaptionsInvalid(f"{images_dir}: no such image folder")
    suffix = path.suffix.lower()
    if suffix == ".json":
        pairs = _read_coco(path, split)
    elif suffix in (".csv", ".jsonl"):
        if split is not None:
            raise CaptionsInvalid(f"{path}: --split needs a COCO-format .json with a split field per image")
        pairs = _read_csv(path) if suffix == ".csv" else _read_jsonl(path)
    else:
        raise CaptionsInvalid(f"{path}: unknown captions form {suffix!r} (use .json in COCO format, .csv or .jsonl)")
    return _pair(pairs, images_dir, limit, path)


def _read_coco(path: Path, split: str | None) -> list[tuple[str, str]]:
    doc = _load_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("annotations"), list):
        raise CaptionsInvalid(f"{path}: a COCO captions file needs 'images' and 'annotations' lists")
    names = {}
    for n, image in enumerate(doc["images"]):
        _require(image, ("id", "file_name"), f"{path}: images[{n}]")
        if split is None or image.get("split") == split:
            names[image["id"]] = image["file_name"]
    if split is not None and not names:
        raise CaptionsInvalid(f"{path}: no image has split {split!r}")
    known = {image["id"] for image in doc["images"]}
    pairs = []
    for n, annotation in enumerate(doc["annotations"]):
        _require(annotation, ("image_id", "caption"), f"{path}: annotations[{n}]")
        image_id = annotation["image_id"]
        if image_id not in known:
            raise CaptionImageUnknown(f"{path}: annotations[{n}] is for image_id {image_id!r}, "
                                      f"which 'images' does not list")
        if image_id in names:  # else: another split
            pairs.append((names[image_id], annotation["caption"]))
    return pairs


def _read_csv(path: Path) -> list[tuple[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"image", "caption"} - set(reader.fieldnames or ())
            if missing:
                raise CaptionsInvalid(f"{path}: the header row lacks the column(s) {', '.join(sorted(missing))} "
                                      f"(need image,caption)")
            pairs = []
            for row in reader:
                if row["image"] is None or row["caption"] is None:
                    raise CaptionsInvalid(f"{path}: line {reader.line_num} has too few columns")
                pairs.append((row["image"], row["caption"]))
            return pairs
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CaptionsInvalid(f"{path}: not a readable CSV file: {exc}") from None


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    pairs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CaptionsInvalid(f"{path}: not UTF-8 text: {exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaptionsInvalid(f"{path}: line {number} is not JSON: {exc}") from None
        _require(record, ("image", "caption"), f"{path}: line {number}")
        pairs.append((record["image"], record["caption"]))
    return pairs


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CaptionsInvalid(f"{path}: not a JSON file: {exc}") from None


def _require(record, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(record, dict):
        raise CaptionsInvalid(f"{where} is not an object")
    missing = [key for key in keys if key not in record]
    if missing:
        raise CaptionsInvalid(f"{where} lacks {', '.join(repr(k) for k in missing)}")


def _pair(pairs: list[tuple[str, str]], images_dir: Path, limit: int | None, source: Path) -> CaptionSet:
    result = CaptionSet(images=[], captions=[], targets=[])
    index: dict[str, int] = {}
    missing: set[str] = set()
    for name, caption in pairs:
        if not isinstance(name, str) or not name:
            raise CaptionsInvalid(f"{source}: an image name must be a non-empty string, not {name!r}")
        if not isinstance(caption, str) or not caption.strip():
            raise CaptionsInvalid(f"{source}: the caption of {name} is empty or not text")
        if name in missing:
            continue
        if name not in index:
            if limit is not None and len(index) >= limit:
                continue
            path = images_dir / name
            if not path.is_file():
                missing.add(name)
                result.skipped.append((name, "image file not found"))
                continue
            index[name] = len(result.images)
            result.images.append(path)
        result.captions.append(caption.strip())
        result.targets.append(index[name])
    if not result.images:
        raise CaptionsInvalid(f"{source}: no captioned photo found under {images_dir}")
    return result
