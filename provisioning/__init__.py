"""Glimpse on the host: build models and bundles, push them to devices.

Imports ``device`` to write exactly what the device reads; never the reverse.
PyTorch and litert-torch are imported only by the commands that need them.
"""

from provisioning.models import torch_compat

# transformers, open_clip and timm import torchvision, which fails beside the CPU
# torch wheel unless two op schemas exist first (see torch_compat).
torch_compat.install()
