"""What a training run is asked to do (:class:`TrainOptions`) and the fixed shape of the towers it trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from device.errors import TrainInvalid
from provisioning.models import convert
from provisioning.models import default as default_model

#: Transformer layers of all-MiniLM-L6-v2 and MBConv blocks of EfficientNet-Lite0:
#: the most that can be unfrozen.
TEXT_LAYERS = 6
IMAGE_BLOCKS = 16
MAX_TOKENS = default_model.RECIPE["max_tokens"]
IMAGE_SIZE = default_model.RECIPE["image_size"]
#: The image tower's ops that get int8 weights in an int8 export. EfficientNet-Lite0's
#: depthwise convolutions stay float32: their int8 kernels moved the trained
#: image embeddings to cosine 0.92 of PyTorch on drawn shapes and 0.989 on
#: photographs; without them 0.990 and 0.997, for 0.4 MB more (5.0 MB in all).
#: The default model's recipe since 1.1.0, so both are built alike.
IMAGE_INT8_OPS = tuple(default_model.RECIPE["image_int8_ops"])


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
