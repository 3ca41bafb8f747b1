"""``glimpse-provision import-model``: OpenCLIP and Hugging Face CLIP checkpoints as Glimpse models.

``sources`` finds and loads a checkpoint, ``tokenizer`` rebuilds CLIP's BPE for the
device, ``towers`` wraps the towers to the device's contract, ``importer`` converts,
checks parity and writes the model directory.
"""

from provisioning.models.clip.importer import PARITY_FLOOR, REFERENCE_TEXTS, ImportOptions, card, import_model
from provisioning.models.clip.sources import LoadedSource, detect_source, import_open_clip, load_source
from provisioning.models.clip.tokenizer import clip_bpe, clip_bpe_tokenizer

__all__ = ["PARITY_FLOOR", "REFERENCE_TEXTS", "ImportOptions", "LoadedSource", "card", "clip_bpe",
           "clip_bpe_tokenizer", "detect_source", "import_model", "import_open_clip", "load_source"]
