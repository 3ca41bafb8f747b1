"""The data of a training run: captions read, the validation photos held out, frozen features from the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from device import images as photo_io
from device.errors import ImageUnreadable, TrainInvalid
from device.model import sha256_file
from device.wording import plural
from provisioning.cache import FeatureCache
from provisioning.models.captions import CaptionSet, read_captions
from provisioning.models.train.config import IMAGE_SIZE, TrainOptions
from provisioning.models.train.towers import ImageTower, TextTower
from provisioning.progress import Progress

#: Inputs run through a frozen tower at once when filling the cache.
FEATURE_BATCH = 32


@dataclasses.dataclass
class Split:
    """One side (train or validation) with its cached features."""

    names: list[str]  # photo names relative to the image folder
    image_features: list[np.ndarray]
    caption_features: list[np.ndarray]
    caption_targets: np.ndarray  # photo index of each caption
    captions_of: list[list[int]]  # caption indices of each photo
    fingerprint: str

    @property
    def images(self) -> int:
        return len(self.names)


def _subset(data: CaptionSet, keep: list[int]) -> CaptionSet:
    """The photos at ``keep`` (in that order) with their captions."""
    new_index = {old: new for new, old in enumerate(keep)}
    pairs = [(c, new_index[t]) for c, t in zip(data.captions, data.targets) if t in new_index]
    return CaptionSet(images=[data.images[i] for i in keep], captions=[c for c, _ in pairs],
                      targets=[t for _, t in pairs], skipped=list(data.skipped))


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def split_data(options: TrainOptions) -> tuple[CaptionSet, CaptionSet | None, str]:
    """Read the captions and hold out the validation photos.

    Returns:
        (training set, validation set or ``None``, how validation was chosen).

    Raises:
        CaptionsInvalid: the captions file cannot be used.
        TrainInvalid: too few photos to train on.
    """
    images_dir = Path(options.images)
    data = read_captions(options.captions, images_dir, split=options.split, limit=options.limit)
    val = None
    if options.val_split is not None:
        val = read_captions(options.captions, images_dir, split=options.val_split)
        held = set(val.images)
        data = _subset(data, [i for i, p in enumerate(data.images) if p not in held])
        how = f"COCO split {options.val_split!r}"
    elif options.val_fraction > 0 and len(data.images) >= 3:
        count = max(1, round(options.val_fraction * len(data.images)))
        by_hash = sorted(range(len(data.images)),
                         key=lambda i: _name_hash(data.images[i].relative_to(images_dir).as_posix()))
        held = set(by_hash[:count])
        val = _subset(data, sorted(held))
        data = _subset(data, [i for i in range(len(data.images)) if i not in held])
        how = f"{len(held)} of {plural(len(held) + len(data.images), 'photo')} by name hash (fraction {options.val_fraction})"
    else:
        how = "none"
    if len(data.images) < 2:
        raise TrainInvalid(f"{options.captions}: {plural(len(data.images), 'photo')} left to train on; "
                           "at least 2 are needed")
    return data, val, how


def _cached_features(keys: list[str], compute, tower_id: str, cache: FeatureCache | None,
                     progress: Progress, batch: int = FEATURE_BATCH) -> list[np.ndarray | None]:
    """Features of each key: from the cache, else ``compute(indices)`` in batches (then cached).

    ``compute`` returns one array per index, or ``None`` for an input that
    cannot be used (it is then neither cached nor returned).
    """
    out: list[np.ndarray | None] = [None] * len(keys)
    todo = []
    for i, key in enumerate(keys):
        hit = cache.get(tower_id, key) if cache else None
        if hit is None:
            todo.append(i)
        else:
            out[i] = hit
    progress.already = len(keys) - len(todo)
    done = progress.already
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        for i, array in zip(chunk, compute(chunk)):
            if array is None:
                continue
            out[i] = array
            if cache:
                cache.put(tower_id, keys[i], array)
        done += len(chunk)
        progress.update(done)
    progress.update(len(keys), final=True)
    return out


def embed_split(data: CaptionSet, images_dir: Path, text: TextTower, image: ImageTower,
                 cache: FeatureCache | None, progress: bool, label: str, skipped: list) -> Split:
    """Frozen features of a caption set's photos and captions; unreadable photos skipped into ``skipped``."""
    hashes, paths = [], []
    for path in data.images:
        try:
            hashes.append(sha256_file(path))
        except OSError as exc:
            hashes.append(None)
            skipped.append((path.relative_to(images_dir).as_posix(), f"unreadable: {exc.strerror}"))
        paths.append(path)

    def photos(indices):
        pixels, usable = [], []
        for i in indices:
            if hashes[i] is None:
                continue
            try:
                photo = photo_io.open_photo(paths[i], min_side=IMAGE_SIZE)
            except ImageUnreadable as exc:
                skipped.append((paths[i].relative_to(images_dir).as_posix(), exc.reason))
                continue
            pixels.append(photo_io.tower_input(photo.image, IMAGE_SIZE)[0])
            usable.append(i)
        arrays = dict(zip(usable, image.frozen(np.stack(pixels)))) if pixels else {}
        return [arrays.get(i) for i in indices]

    keys = [h or "" for h in hashes]
    photo_features = _cached_features(keys, photos, image.identity, cache,
                                      Progress(len(keys), progress, label=f"{label} photos"))
    kept = [i for i, f in enumerate(photo_features) if f is not None]
    usable = _subset(data, kept)
    captions = usable.captions
    caption_features = _cached_features(
        [_name_hash(c) for c in captions], lambda idx: text.frozen([captions[i] for i in idx]), text.identity,
        cache, Progress(len(captions), progress, label=f"{label} captions"), batch=64)
    targets = np.asarray(usable.targets, dtype=np.int64)
    captions_of = [[] for _ in kept]
    for c, t in enumerate(targets):
        captions_of[t].append(c)
    fingerprint = hashlib.sha256(json.dumps(
        [[hashes[i] for i in kept], [[_name_hash(c), int(t)] for c, t in zip(captions, targets)]]
    ).encode()).hexdigest()
    return Split(names=[paths[i].relative_to(images_dir).as_posix() for i in kept],
                  image_features=[photo_features[i] for i in kept], caption_features=caption_features,
                  caption_targets=targets, captions_of=captions_of, fingerprint=fingerprint)
