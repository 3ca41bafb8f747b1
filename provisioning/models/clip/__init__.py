"""``glimpse-provision import-model``: OpenCLIP and Hugging Face CLIP checkpoints as Glimpse models."""
