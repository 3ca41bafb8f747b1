"""CLIP towers wrapped to the device's contract, as torch modules for litert-torch.

* Text: int32 token ids and attention mask, each (1, max_tokens), in; the
  L2-normalised projected feature of the end-of-text token out.
* Image: float32 RGB 0..255, NHWC, in; the model's own mean/std applied inside
  the graph; the L2-normalised projected feature out.

Used by :mod:`provisioning.models.clip.importer`; needs PyTorch (the host extra).
"""

from __future__ import annotations

import torch


def _eot_one_hot(mask, length: int):
    """One-hot (batch, length) of the end-of-text position: the last position the
    mask marks, whatever the pad id (0 in open_clip, end-of-text in many HF tokenizers).
    A one-hot product converts to plain ops every LiteRT build runs."""
    last = mask.to(torch.int32).sum(dim=-1, keepdim=True) - 1
    positions = torch.arange(length, dtype=torch.int32).unsqueeze(0)
    return (positions == last).to(torch.float32)


class OpenClipText(torch.nn.Module):
    """open_clip's text tower on the device's inputs: (ids, mask) int32 -> unit vector.

    open_clip pools the end-of-text token's feature (argmax of the ids); here the
    mask finds it, so the result does not depend on the pad id, and the projection
    (linear, so pooling after it is the same) is open_clip's own.
    """

    def __init__(self, text_module, pool_attr: str):
        super().__init__()
        self.text = text_module
        self.pool_attr = pool_attr

    def forward(self, input_ids, attention_mask):
        saved = getattr(self.text, self.pool_attr)
        setattr(self.text, self.pool_attr, "none")  # every token's projected feature
        try:
            tokens = (self.text(input_ids.long()) if self.pool_attr == "pool_type"
                      else self.text.encode_text(input_ids.long()))
        finally:
            setattr(self.text, self.pool_attr, saved)
        one_hot = _eot_one_hot(attention_mask, input_ids.shape[-1])
        pooled = (tokens * one_hot.unsqueeze(-1)).sum(dim=1)
        return torch.nn.functional.normalize(pooled, dim=-1)


class HfClipText(torch.nn.Module):
    """A Hugging Face ``CLIPModel``'s text tower on the device's inputs, end-of-text
    feature found by the mask (HF's own rule, argmax or first end-of-text id, gives
    the same position for the tokenizer's output)."""

    def __init__(self, model):
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection

    def forward(self, input_ids, attention_mask):
        hidden = self.text_model(input_ids=input_ids.long(), attention_mask=attention_mask.long()).last_hidden_state
        one_hot = _eot_one_hot(attention_mask, input_ids.shape[-1])
        pooled = (hidden * one_hot.unsqueeze(-1)).sum(dim=1)
        return torch.nn.functional.normalize(self.text_projection(pooled), dim=-1)


class HfClipImage(torch.nn.Module):
    """A Hugging Face ``CLIPModel``'s image tower: normalised NCHW pixels -> projected features."""

    def __init__(self, model):
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection

    def forward(self, pixel_values):
        return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)


class PixelsTo(torch.nn.Module):
    """An image tower on the device's input: NHWC float32 RGB 0..255 -> unit vector,
    with the model's own mean/std applied inside the graph.

    Args:
        encoder: module from normalised NCHW pixels to (unnormalised) features.
        mean, std: per-channel, on the 0..1 scale.
    """

    def __init__(self, encoder, mean, std):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels):
        x = (pixels.permute(0, 3, 1, 2) / 255.0 - self.mean) / self.std
        return torch.nn.functional.normalize(self.encoder(x), dim=-1)
