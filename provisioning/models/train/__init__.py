"""``glimpse-provision train``: a dual encoder trained on captioned photos (see :mod:`.run`).

``config`` holds the options, ``towers`` the towers cut where training starts and
the heads, ``data`` the captions and cached features, ``loop`` the epochs and
checkpoints, ``export`` the model directory; ``run`` joins them. PyTorch is
imported with this package: the host extra.
"""

from device.errors import TrainInterrupted, TrainInvalid
from provisioning.models.train.config import IMAGE_INT8_OPS, TrainOptions
from provisioning.models.train.data import split_data
from provisioning.models.train.export import HISTORY_FILE, TEXT_WEIGHTS_FILE, check_output, export, load_text_export
from provisioning.models.train.loop import LAST_CHECKPOINT
from provisioning.models.train.run import TrainResult, train
from provisioning.models.train.towers import DualHeads, ImageExport, ImageTower, TextExport, TextTower

__all__ = ["HISTORY_FILE", "IMAGE_INT8_OPS", "LAST_CHECKPOINT", "TEXT_WEIGHTS_FILE", "DualHeads", "ImageExport",
           "ImageTower", "TextExport", "TextTower", "TrainInterrupted", "TrainInvalid", "TrainOptions", "TrainResult", "check_output", "export", "load_text_export",
           "split_data", "train"]
