"""The model directory: a dual encoder as the device runs it.

A model directory holds ``model.json`` (this module's :class:`ModelSpec`), the
text tower, the image tower (both ``.tflite``) and the tokenizer. The device
reads it; ``provisioning`` writes it with :func:`write_spec`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from device.errors import ModelInvalid

MODEL_FORMAT = "glimpse-model"
MODEL_FORMAT_VERSION = 1
SPEC_NAME = "model.json"
#: The files a model directory holds besides ``model.json``, as the host names them
#: (``model.json`` records the actual names, which is what the device reads).
TEXT_FILE = "text_{variant}.tflite"
IMAGE_FILE = "image_{variant}.tflite"
TOKENIZER_FILE = "tokenizer.json"
#: Files a model directory may hold besides model.json and the files it names: the
#: model card, and a trained model's history and text weights (for export-tasklib).
#: Anything else in a directory means it is not Glimpse's alone (device.ownership).
CARD_FILE = "MODEL_CARD.md"
HISTORY_FILE = "training.json"
#: What training changed on the text side (the text head and any unfrozen layers), kept
#: in the model directory so the host can rebuild the text tower in PyTorch (export-tasklib).
TEXT_WEIGHTS_FILE = "text_weights.safetensors"
COMPANION_FILES = (CARD_FILE, HISTORY_FILE, TEXT_WEIGHTS_FILE)
#: Inputs and PyTorch float32 embeddings any runtime checks itself against
#: (``glimpse selftest``): arrays :data:`REFERENCE_KEYS` of one ``.npz`` file.
REFERENCE_FILE = "reference.npz"
REFERENCE_KEYS = ("texts", "text_embeddings", "photos", "photo_inputs", "photo_embeddings")


@dataclasses.dataclass(frozen=True)
class TextTowerSpec:
    """How to feed the text tower: its file, tokenizer and sequence length."""

    file: str
    tokenizer: str
    max_tokens: int


@dataclasses.dataclass(frozen=True)
class ImageTowerSpec:
    """How to feed the image tower: its file and input size.

    The tower takes float32 RGB pixels in 0..255, NHWC, ``size`` x ``size``;
    scaling to the network's own range happens inside the graph.
    """

    file: str
    size: int


@dataclasses.dataclass(frozen=True)
class Relevance:
    """What a strong match is for this model (``model.json``'s optional ``relevance``).

    A result whose cosine score is at least the threshold is *strong*, any other
    *weak*. The thresholds are fitted per model on the evaluation set's tuning half
    (``provisioning/models/calibration.py``; docs/models.md), because one model's scores
    cluster where another's spread: a fixed cut such as 0.5 means nothing across models.

    Attributes:
        text_strong: threshold for a text query against photos (search).
        image_strong: threshold for a photo against photos (find similar).
    """

    text_strong: float
    image_strong: float

    @classmethod
    def from_json(cls, doc) -> "Relevance":
        """Parse the ``relevance`` object; raises ``ValueError``/``TypeError``/``KeyError`` if malformed."""
        if not isinstance(doc, dict):
            raise TypeError("relevance must be an object")
        values = {name: float(doc[name]) for name in ("text_strong", "image_strong")}
        if not all(-1.0 <= v <= 1.0 for v in values.values()):
            raise ValueError("relevance thresholds must be cosine scores between -1 and 1")
        return cls(**values)

    def strength(self, score: float, kind: str = "text") -> str:
        """``strong`` or ``weak`` for a result's ``score``; ``kind`` is ``text`` or ``image``."""
        return "strong" if score >= (self.text_strong if kind == "text" else self.image_strong) else "weak"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What ``model.json`` says about a dual encoder.

    Attributes:
        id: model name, e.g. ``glimpse-default``.
        version: the model's own version; a bundle records it.
        dim: embedding dimension shared by both towers.
        distance: always ``cosine`` (towers output L2-normalised vectors).
        quantization: ``int8`` (dynamic-range) or ``float32``.
        text, image: how to feed each tower.
        files: sha256 of every file the spec names.
        extra: everything else the builder recorded (recipe, parity figures).
    """

    id: str
    version: str
    dim: int
    distance: str
    quantization: str
    text: TextTowerSpec
    image: ImageTowerSpec
    files: dict
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def relevance(self) -> Relevance | None:
        """The model's calibrated strong-match thresholds; ``None`` when model.json has none."""
        doc = self.extra.get("relevance")
        return None if doc is None else Relevance.from_json(doc)

    @property
    def full_id(self) -> str:
        """``id@version``, the string results and bundles carry."""
        return f"{self.id}@{self.version}"

    @property
    def embedding_key(self) -> str:
        """What photo embeddings depend on: ``id@version`` and the image tower's sha256.

        Stored photo vectors (the host's build cache, photos added on the device)
        are reused only under the same key, so a model rebuilt or retrained under
        an unchanged id and version (``glimpse-trained@1.0.0`` twice) embeds again
        instead of mixing two embedding spaces.
        """
        return f"{self.full_id}#{self.files[self.image.file][:16]}"

    def to_json(self) -> dict:
        """The ``model.json`` document for this spec."""
        doc = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "id": self.id,
            "version": self.version,
            "dim": self.dim,
            "distance": self.distance,
            "quantization": self.quantization,
            "text": dataclasses.asdict(self.text),
            "image": dataclasses.asdict(self.image),
            "files": dict(sorted(self.files.items())),
        }
        doc.update(self.extra)
        return doc


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (memory stays flat for large files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_spec(model_dir: Path, verify: bool = True) -> ModelSpec:
    """Read and check ``model.json`` in ``model_dir``.

    Args:
        model_dir: the model directory.
        verify: also check that every named file exists with its recorded sha256.

    Raises:
        ModelInvalid: missing or malformed spec, unknown format version, missing
            or altered file.
    """
    model_dir = Path(model_dir)
    spec_path = model_dir / SPEC_NAME
    try:
        doc = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelInvalid(f"{spec_path}: no model spec (is this a model directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInvalid(f"{spec_path}: unreadable model spec: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FORMAT:
        raise ModelInvalid(f"{spec_path}: not a {MODEL_FORMAT} spec")
    if doc.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelInvalid(
            f"{spec_path}: model format version {doc.get('format_version')!r} is not supported "
            f"(this Glimpse reads version {MODEL_FORMAT_VERSION})"
        )
    try:
        known = {"format", "format_version", "id", "version", "dim", "distance",
                 "quantization", "text", "image", "files"}
        spec = ModelSpec(
            id=str(doc["id"]),
            version=str(doc["version"]),
            dim=int(doc["dim"]),
            distance=str(doc["distance"]),
            quantization=str(doc["quantization"]),
            text=TextTowerSpec(**doc["text"]),
            image=ImageTowerSpec(**doc["image"]),
            files=dict(doc["files"]),
            extra={k: v for k, v in doc.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelInvalid(f"{spec_path}: malformed model spec: {exc!r}") from None
    try:
        spec.relevance  # an optional key, but a malformed one is refused
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelInvalid(f"{spec_path}: malformed relevance: {exc!r}") from None
    if spec.distance != "cosine":
        raise ModelInvalid(f"{spec_path}: distance {spec.distance!r} is not supported (only cosine)")
    for name in (spec.text.file, spec.text.tokenizer, spec.image.file):
        if name not in spec.files:
            raise ModelInvalid(f"{spec_path}: {name} has no recorded sha256")
    if verify:
        for name, expected in spec.files.items():
            path = model_dir / name
            if not path.is_file():
                raise ModelInvalid(f"{model_dir}: missing model file {name}")
            if sha256_file(path) != expected:
                raise ModelInvalid(f"{model_dir}: model file {name} was altered (sha256 mismatch)")
    return spec


def write_spec(model_dir: Path, spec: ModelSpec) -> Path:
    """Write ``model.json`` for ``spec`` into ``model_dir``; returns its path."""
    path = Path(model_dir) / SPEC_NAME
    path.write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def default_model_dir() -> Path:
    """The committed default model (``models/glimpse-default`` in the source tree).

    Raises:
        ModelInvalid: when Glimpse runs from an installed wheel without the models
            directory; pass ``--model`` then.
    """
    path = Path(__file__).resolve().parent.parent / "models" / "glimpse-default"
    if not (path / SPEC_NAME).is_file():
        raise ModelInvalid(f"the default model is not at {path}; pass --model DIR")
    return path


def relevance_of(spec: ModelSpec) -> Relevance | None:
    """The strong-match thresholds for ``spec``: its own, or else, for a copy of the
    committed default model made before it was calibrated (a bundle built earlier
    carries such a copy), the default model's; ``None`` for an uncalibrated model.

    Only the same towers qualify: the same embedding key (id, version, image tower)
    and the same text tower.
    """
    if spec.relevance is not None:
        return spec.relevance
    try:
        default = read_spec(default_model_dir(), verify=False)
    except ModelInvalid:
        return None
    same = (default.embedding_key == spec.embedding_key
            and default.files.get(default.text.file) == spec.files.get(spec.text.file))
    return default.relevance if same else None
