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

import dataclasses
from pathlib import Path

import torch

from device.errors import TrainInterrupted, TrainInvalid
from device.model import ModelSpec
from device.wording import plural
from provisioning.cache import FeatureCache, default_cache_dir
from provisioning.models.evaluate import RECALL_AT
from provisioning.models.train.config import TrainOptions
from provisioning.models.train.data import embed_split, split_data
from provisioning.models.train.export import check_output, export
from provisioning.models.train.loop import LAST_CHECKPOINT, fit, history_row, load_checkpoint, make_optimizer, run_config
from provisioning.models.train.towers import DualHeads, ImageTower, TextTower
from provisioning.progress import chatter_away


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
    checkpoints = options.checkpoints.resolve()
    check_output(options)
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
    with chatter_away(options.progress):
        text, image = TextTower(options.unfreeze_text), ImageTower(options.unfreeze_image)
    heads = DualHeads(text, image, options.dim, options.hidden)
    optimizer = make_optimizer(heads, options)

    cache = FeatureCache(options.cache_dir or default_cache_dir()) if options.use_cache else None
    skipped = list(train_data.skipped)
    if val_data is not None:  # a --val-split was read on its own: its missing photos too
        skipped += [entry for entry in val_data.skipped if entry not in skipped]
    try:
        images_dir = Path(options.images)
        train_set = embed_split(train_data, images_dir, text, image, cache, options.progress, "training", skipped)
        val_set = (embed_split(val_data, images_dir, text, image, cache, options.progress, "validation", skipped)
                   if val_data is not None else None)
    except KeyboardInterrupt:
        raise TrainInterrupted("interrupted while embedding; what was embedded is cached: "
                               "run the same command again") from None
    finally:
        if cache:
            cache.close()
    if train_set.images < 2:
        raise TrainInvalid(f"{plural(train_set.images, 'usable photo')} to train on ({len(skipped)} skipped); "
                           "at least 2 are needed")
    if val_set is not None and not val_set.images:
        val_set = None
    config = run_config(options, train_set, val_set)

    if options.resume:
        state = load_checkpoint(checkpoints, config)
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
        history = [history_row(0, None, heads, text, image, val_set)]

    fit(options, text, image, heads, optimizer, train_set, val_set, checkpoints,
         (config, epoch, step, loss_sum, history), on_step)

    data = {"captions_file": Path(options.captions).name, "split": options.split, "validation": val_how,
            "train_images": train_set.images, "train_captions": len(train_set.caption_features),
            "val_images": val_set.images if val_set else 0,
            "val_captions": len(val_set.caption_features) if val_set else 0, "skipped": len(skipped)}
    result = TrainResult(history=history, data=data, skipped=skipped, spec=None, heads=heads.state_dict())
    if options.export:
        result.spec = export(options, text, image, heads, result, log)
    return result


