"""Text-to-image retrieval quality of a model: Recall@K on captioned photos.

The protocol is the one the Karpathy 5k COCO test split made standard: every
caption is a query, the photo it describes is the one right answer, and the
query ranks every photo of the set. Recall@K is the share of queries whose
photo is among the first K. Photos are embedded with the image tower and
captions with the text tower, both run by LiteRT as on the device, so the
figures are those the appliance delivers, quantisation included.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from device.encoders import ImageEncoder, TextEncoder
from device.errors import ImageUnreadable
from device.model import default_model_dir
from provisioning.models.captions import CaptionSet, CaptionsInvalid

#: The cut-offs reported, as in the CLIP and dual-encoder literature.
RECALL_AT = (1, 5, 10)


@dataclasses.dataclass
class EvalReport:
    """What one evaluation measured.

    Attributes:
        model: the model's ``id@version``.
        images: photos ranked by every query.
        captions: queries asked.
        recall: K -> share of queries whose photo ranked within the first K.
        median_rank: median 1-based rank of the right photo.
        skipped: (image name, reason) for photos left out with their captions.
    """

    model: str
    images: int
    captions: int
    recall: dict[int, float]
    median_rank: float
    skipped: list[tuple[str, str]]

    def to_json(self) -> dict:
        """A JSON-ready dict (``recall`` keys become ``"R@K"``)."""
        return {"model": self.model, "images": self.images, "captions": self.captions,
                **{f"R@{k}": v for k, v in self.recall.items()},
                "median_rank": self.median_rank,
                "skipped": [{"image": name, "reason": reason} for name, reason in self.skipped]}

    def table(self) -> str:
        """The report as a fixed-width text table, one header and one row."""
        header = ["model", "images", "captions", *(f"R@{k}" for k in self.recall), "median rank"]
        row = [self.model, str(self.images), str(self.captions),
               *(f"{v:.3f}" for v in self.recall.values()), f"{self.median_rank:g}"]
        widths = [max(len(h), len(c)) for h, c in zip(header, row)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                         for line in (header, row))


def ranks(caption_vectors: np.ndarray, image_vectors: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each caption's target photo among all photos, by cosine.

    Args:
        caption_vectors: (captions, dim) L2-normalised.
        image_vectors: (images, dim) L2-normalised.
        targets: (captions,) index of each caption's photo.

    A photo scoring exactly as high as the target counts against it, so a
    model that gives every photo the same score ranks the target last, not
    first.
    """
    scores = caption_vectors @ image_vectors.T
    target_scores = scores[np.arange(len(targets)), targets]
    others = scores >= target_scores[:, None]
    others[np.arange(len(targets)), targets] = False
    return others.sum(axis=1) + 1


def evaluate(captions: CaptionSet, model_dir: Path | None = None, num_threads: int = 1) -> EvalReport:
    """Measure text-to-image Recall@1/5/10 and the median rank of a model.

    Args:
        captions: the data set (see :func:`provisioning.models.captions.read_captions`).
        model_dir: a Glimpse model directory; default: the committed glimpse-default.
        num_threads: interpreter threads per tower.

    A photo the image reader refuses is skipped with its captions and added to
    the report's ``skipped``, as a missing file is.

    Raises:
        ModelInvalid: the model directory cannot be used.
        CaptionsInvalid: no readable photo is left.
    """
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    skipped = list(captions.skipped)
    with ImageEncoder.create_from_model_dir(model_dir, num_threads=num_threads) as image_tower:
        model = image_tower.spec.full_id
        vectors, kept = [], {}
        for i, path in enumerate(captions.images):
            try:
                vectors.append(image_tower.embed_file(path))
            except ImageUnreadable as exc:
                skipped.append((path.name, exc.reason))
                continue
            kept[i] = len(kept)
    if not kept:
        raise CaptionsInvalid("no readable photo to evaluate on")
    queries = [(text, kept[t]) for text, t in zip(captions.captions, captions.targets) if t in kept]
    with TextEncoder.create_from_model_dir(model_dir, num_threads=num_threads) as text_tower:
        caption_vectors = np.stack([text_tower.embed(text) for text, _ in queries])
    image_vectors = np.stack(vectors)
    rank = ranks(caption_vectors, image_vectors, np.asarray([t for _, t in queries]))
    return EvalReport(model=model, images=len(image_vectors), captions=len(queries),
                      recall={k: float(np.mean(rank <= k)) for k in RECALL_AT},
                      median_rank=float(np.median(rank)), skipped=skipped)
