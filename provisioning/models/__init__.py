"""Models: build the default model, import CLIP checkpoints, train heads, evaluate.

``modeldir`` is the kit all three writers share (tower export, parity, reference
file, model card); ``convert`` and ``torch_compat`` are the PyTorch/LiteRT glue.
"""
