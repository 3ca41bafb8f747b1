"""Fusing what the recognisers found into the photo vector, as a model's ``recognisers`` says.

A photo keeps ONE vector (index, ingest, find-similar, train and the Task Library
export all assume so). The recognisers add concepts in the text tower's space to
the image tower's (ConSE) vector::

    v = normalise(tower
                  + sum over face concepts c of  w_c * g_c(faces)  * t_c
                  + w_colours * sum over terms k in terms with s_k > min_coverage of  s_k * (t_k - mean_11 t)
                  + w_bw * [sum of chromatic s_k < bw_max_chromatic] * t_bw)

where ``t_*`` are the concept vectors of the model's concepts file, ``s_k`` a colour
term's share of the photo's pixels (``colours.photo_colours``), the mean over the
11 term vectors is subtracted only when ``centred``, and the face gates, from the
faces scoring at least ``min_score`` (``n`` of them; the best score ``p``; the
largest face's share of the photo ``a``):

- ``person``: ``p`` (0 without a face);
- ``portrait``: ``p * min(1, a / portrait_area)`` when ``n == 1``, else 0;
- ``group``: ``min(1, (n - 1) / (group_size - 1))``.

The recognisers look at the whole photo, not at the tower's crop: a copy reduced
(box filter, integer factor) to no less than 384 px on its longer side, then
letterboxed to 192x192 for faces (a face near the edge the tower's centre crop
drops still counts) and resized to at most 64 px a side for colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from device.errors import ModelInvalid
from device.model import RecognisersSpec
from device.recognisers import colours as colour_terms
from device.recognisers.faces import INPUT_SIZE, Face, FaceDetector, FaceDetectorOptions

CHROMATIC = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")


def face_gates(faces: list[Face], spec) -> dict[str, float]:
    """The gate of each face concept (see the module docstring) for ``faces`` under a ``FacesSpec``."""
    kept = [f for f in faces if f.score >= spec.min_score]
    if not kept:
        return {"person": 0.0, "portrait": 0.0, "group": 0.0}
    best = max(f.score for f in kept)
    largest = max(f.area for f in kept)
    return {
        "person": best,
        "portrait": best * min(1.0, largest / spec.portrait_area) if len(kept) == 1 else 0.0,
        "group": min(1.0, (len(kept) - 1) / (spec.group_size - 1)),
    }


def concept_sum(spec: RecognisersSpec, concepts: dict, faces: list[Face] | None,
                shares: np.ndarray | None) -> np.ndarray:
    """What the recognisers add to the tower's vector (before normalising), per the formula above.

    Args:
        spec: the model's recognisers.
        concepts: the concepts file's arrays (``faces``, ``faces_names``, ``colours``, ``black_and_white``).
        faces: the detector's faces (ignored when the model has no face recogniser).
        shares: the 11 colour terms' shares (ignored when the model has no colour recogniser).
    """
    dim = concepts["colours"].shape[1] if "colours" in concepts else concepts["faces"].shape[1]
    out = np.zeros(dim, dtype=np.float64)
    if spec.faces is not None:
        gates = face_gates(faces or [], spec.faces)
        for name, row in zip(concepts["faces_names"], concepts["faces"]):
            out += spec.faces.weights.get(str(name), 0.0) * gates.get(str(name), 0.0) * row
    if spec.colours is not None:
        c = spec.colours
        vectors = concepts["colours"]
        if c.centred:
            vectors = vectors - vectors.mean(axis=0, keepdims=True)
        mask = np.array([t in c.terms for t in colour_terms.COLOUR_TERMS], dtype=np.float64)
        weights = np.where(shares > c.min_coverage, shares, 0.0) * mask
        out += c.weight * (weights @ vectors)
        chromatic = sum(float(shares[colour_terms.COLOUR_TERMS.index(t)]) for t in CHROMATIC)
        if chromatic < c.bw_max_chromatic:
            out += c.bw_weight * concepts["black_and_white"]
    return out


def recogniser_input(image):
    """The copy of a PIL image the recognisers read: reduced by an integer factor to >= 384 px a side.

    Build and ingest decode photos for a 1280 px preview; one copy reduced by an integer
    box filter keeps the detector's and the colours' resizes small for any photo size
    (on the evaluation set's photos it costs about what resizing the decode twice does).
    """
    factor = max(image.size) // (2 * INPUT_SIZE)
    return image.reduce(factor) if factor > 1 else image


def fuse(tower: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``normalise(tower + added)`` as float32."""
    v = np.asarray(tower, dtype=np.float64) + added
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else v).astype(np.float32)


class PhotoRecognisers:
    """A model's recognisers, loaded once: the face detector (its own lock) and the concept vectors.

    Thread-safe: the detector serialises its interpreter; the rest is read-only numpy.
    """

    def __init__(self, spec: RecognisersSpec, concepts: dict, detector: FaceDetector | None):
        self.spec = spec
        self._concepts = concepts
        self._detector = detector
        if spec.colours is not None:
            colour_terms.lookup_table()  # build the colour table now, not on the first photo

    @classmethod
    def create_from_model_dir(cls, model_dir: Path, spec: RecognisersSpec, dim: int,
                              num_threads: int = 1) -> "PhotoRecognisers":
        """Load the recognisers a model directory names.

        Raises:
            ModelInvalid: the concepts file is missing or malformed, or the face model is not BlazeFace.
        """
        path = Path(model_dir) / spec.concepts
        try:
            with np.load(path, allow_pickle=False) as data:
                concepts = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise ModelInvalid(f"{path}: unreadable concepts file: {exc}") from None
        need = (["faces", "faces_names"] if spec.faces else []) + (["colours", "black_and_white"] if spec.colours else [])
        missing = [k for k in need if k not in concepts]
        if missing:
            raise ModelInvalid(f"{path}: concepts file lacks {', '.join(missing)}")
        if spec.colours is not None and concepts["colours"].shape != (len(colour_terms.COLOUR_TERMS), dim):
            raise ModelInvalid(f"{path}: colours must be ({len(colour_terms.COLOUR_TERMS)}, {dim})")
        if spec.faces is not None and (concepts["faces"].ndim != 2 or concepts["faces"].shape[1] != dim):
            raise ModelInvalid(f"{path}: faces must be (k, {dim})")
        detector = None
        if spec.faces is not None:
            detector = FaceDetector.create_from_options(FaceDetectorOptions(
                model_path=Path(model_dir) / spec.faces.file, num_threads=num_threads,
                min_score=spec.faces.min_score))
        return cls(spec, {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in concepts.items()},
                   detector)

    def added(self, image) -> np.ndarray:
        """What the recognisers add to the tower's vector for a PIL image (RGB, upright)."""
        small = recogniser_input(image)
        found = self._detector.detect(small) if self._detector is not None else None
        shares = (np.array(list(colour_terms.photo_colours(small).values()))
                  if self.spec.colours is not None else None)
        return concept_sum(self.spec, self._concepts, found, shares)

    def close(self) -> None:
        """Release the face detector."""
        if self._detector is not None:
            self._detector.close()
