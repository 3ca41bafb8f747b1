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
#: The newest format this Glimpse writes and reads. Version 2 adds the optional
#: ``recognisers`` section and ``text.multilingual`` (a second text route); a spec with
#: neither is written as version 1, byte for byte as before, so older devices still read it.
MODEL_FORMAT_VERSION = 2
#: Versions this Glimpse reads. Version 1 has neither ``recognisers`` nor ``text.multilingual``.
READABLE_FORMAT_VERSIONS = (1, 2)
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
class MultilingualRoute:
    """A second text tower for queries that are not English (``text.multilingual``, format 2).

    Its output is in the primary text tower's space (a projection is part of its
    graph), so photo vectors and search are the same for both routes.

    Attributes:
        file: the tower (``.tflite``): int32 ids and mask of shape (1, max_tokens) in, unit vector out.
        tokenizer: a SentencePiece ``.model``; the device adds ``<s>``/``</s>`` and pads with ``<pad>``.
        max_tokens: the tower's sequence length.
        query_prefix: text put before every query (e5's ``query: ``).
        router: how the device decides a query is not English (``device.language.ROUTERS``).
    """

    file: str
    tokenizer: str
    max_tokens: int
    query_prefix: str = ""
    router: str = "heuristic"


@dataclasses.dataclass(frozen=True)
class TextTowerSpec:
    """How to feed the text tower: its file, tokenizer and sequence length, and an
    optional multilingual route (format 2)."""

    file: str
    tokenizer: str
    max_tokens: int
    multilingual: MultilingualRoute | None = None

    @classmethod
    def from_json(cls, doc) -> "TextTowerSpec":
        """Parse the ``text`` object; raises ``TypeError``/``KeyError``/``ValueError`` if malformed."""
        if not isinstance(doc, dict):
            raise TypeError("text must be an object")
        doc = dict(doc)
        route = doc.pop("multilingual", None)
        if route is not None:
            if not isinstance(route, dict):
                raise TypeError("text.multilingual must be an object")
            route = MultilingualRoute(**route)
        return cls(**doc, multilingual=route)

    def to_json(self) -> dict:
        """The ``text`` object (without ``multilingual`` when there is none)."""
        doc = dataclasses.asdict(self)
        if self.multilingual is None:
            del doc["multilingual"]
        return doc


@dataclasses.dataclass(frozen=True)
class ImageTowerSpec:
    """How to feed the image tower: its file and input size.

    The tower takes float32 RGB pixels in 0..255, NHWC, ``size`` x ``size``;
    scaling to the network's own range happens inside the graph.
    """

    file: str
    size: int


@dataclasses.dataclass(frozen=True)
class FacesSpec:
    """The face recogniser of a model (``recognisers.faces`` in model.json).

    Attributes:
        file: the BlazeFace full-range ``.tflite`` file (its sha256 in ``files``).
        min_score: faces scoring below this are not counted.
        weights: concept name -> weight; names are rows of the concepts file's ``faces`` array
            (``person``, ``portrait``, ``group``), each gated as docs/models.md says.
        portrait_area: share of the photo a single face must cover to count fully as a portrait.
        group_size: faces at which the group concept counts fully.
    """

    file: str
    min_score: float
    weights: dict
    portrait_area: float
    group_size: int


@dataclasses.dataclass(frozen=True)
class ColoursSpec:
    """The colour-term recogniser of a model (``recognisers.colours`` in model.json).

    Attributes:
        weight: weight of the colour-term concepts.
        min_coverage: a term counts only when it covers more than this share of the pixels.
        terms: the terms whose concepts are added (the chromatic ones; black, white and grey
            cover most real photos and say little alone).
        centred: subtract the mean of the 11 term vectors from each (keeps what tells
            one colour from another, drops the "a colour" direction they share).
        bw_weight: weight of the black-and-white concept.
        bw_max_chromatic: a photo is black and white when its chromatic terms cover less than this.
    """

    weight: float
    min_coverage: float
    terms: tuple
    centred: bool
    bw_weight: float
    bw_max_chromatic: float


@dataclasses.dataclass(frozen=True)
class RecognisersSpec:
    """What a model fuses into each photo vector beyond the image tower (format version 2).

    Attributes:
        concepts: the ``.npz`` of concept vectors in the text tower's space: ``faces``
            (k, dim) with names ``faces_names``, ``colours`` (11, dim) in
            ``device.recognisers.colours.COLOUR_TERMS`` order, ``black_and_white`` (dim,).
        faces, colours: each recogniser, or ``None`` when the model lacks it.
    """

    concepts: str
    faces: FacesSpec | None
    colours: ColoursSpec | None

    @classmethod
    def from_json(cls, doc) -> "RecognisersSpec":
        """Parse the ``recognisers`` object; raises ``ValueError``/``TypeError``/``KeyError`` if malformed."""
        if not isinstance(doc, dict):
            raise TypeError("recognisers must be an object")
        faces = colours = None
        if doc.get("faces") is not None:
            f = doc["faces"]
            faces = FacesSpec(file=str(f["file"]), min_score=float(f["min_score"]),
                              weights={str(k): float(v) for k, v in dict(f["weights"]).items()},
                              portrait_area=float(f["portrait_area"]), group_size=int(f["group_size"]))
            if faces.group_size < 2 or faces.portrait_area <= 0:
                raise ValueError("faces: group_size must be >= 2 and portrait_area > 0")
        if doc.get("colours") is not None:
            c = doc["colours"]
            colours = ColoursSpec(weight=float(c["weight"]), min_coverage=float(c["min_coverage"]),
                                  terms=tuple(str(t) for t in c["terms"]), centred=bool(c["centred"]),
                                  bw_weight=float(c["bw_weight"]), bw_max_chromatic=float(c["bw_max_chromatic"]))
        if faces is None and colours is None:
            raise ValueError("recognisers names neither faces nor colours")
        return cls(concepts=str(doc["concepts"]), faces=faces, colours=colours)

    def to_json(self) -> dict:
        """The ``recognisers`` object."""
        doc = {"concepts": self.concepts}
        if self.faces is not None:
            doc["faces"] = dataclasses.asdict(self.faces)
        if self.colours is not None:
            doc["colours"] = dict(dataclasses.asdict(self.colours), terms=list(self.colours.terms))
        return doc

    @property
    def file_names(self) -> list[str]:
        """The files this section names (each needs a sha256 in ``files``)."""
        return [self.concepts] + ([self.faces.file] if self.faces else [])


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
        recognisers: what is fused into each photo vector besides the image tower
            (format version 2); ``None`` for a tower-only model.
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
    recognisers: RecognisersSpec | None = None

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
        key = f"{self.full_id}#{self.files[self.image.file][:16]}"
        if self.recognisers is not None:
            # The fused vector also depends on the recognisers' files and settings.
            blob = json.dumps(self.recognisers.to_json(), sort_keys=True) + "".join(
                self.files[name] for name in self.recognisers.file_names)
            key += "+" + hashlib.sha256(blob.encode()).hexdigest()[:16]
        return key

    def to_json(self) -> dict:
        """The ``model.json`` document for this spec."""
        doc = {
            "format": MODEL_FORMAT,
            "format_version": (1 if self.recognisers is None and self.text.multilingual is None
                               else MODEL_FORMAT_VERSION),
            "id": self.id,
            "version": self.version,
            "dim": self.dim,
            "distance": self.distance,
            "quantization": self.quantization,
            "text": self.text.to_json(),
            "image": dataclasses.asdict(self.image),
            "files": dict(sorted(self.files.items())),
        }
        if self.recognisers is not None:
            doc["recognisers"] = self.recognisers.to_json()
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
    version = doc.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise ModelInvalid(
            f"{spec_path}: model format version {version!r} is not supported "
            f"(this Glimpse reads versions {', '.join(map(str, READABLE_FORMAT_VERSIONS))})"
        )
    if version == 1 and "recognisers" in doc:
        raise ModelInvalid(f"{spec_path}: a version-1 model spec cannot have recognisers (write format_version 2)")
    try:
        recognisers = None if doc.get("recognisers") is None else RecognisersSpec.from_json(doc["recognisers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelInvalid(f"{spec_path}: malformed recognisers: {exc!r}") from None
    if version == 1 and isinstance(doc.get("text"), dict) and "multilingual" in doc["text"]:
        raise ModelInvalid(f"{spec_path}: text.multilingual needs model format version 2")
    try:
        known = {"format", "format_version", "id", "version", "dim", "distance",
                 "quantization", "text", "image", "files", "recognisers"}
        spec = ModelSpec(
            id=str(doc["id"]),
            version=str(doc["version"]),
            dim=int(doc["dim"]),
            distance=str(doc["distance"]),
            quantization=str(doc["quantization"]),
            text=TextTowerSpec.from_json(doc["text"]),
            image=ImageTowerSpec(**doc["image"]),
            files=dict(doc["files"]),
            extra={k: v for k, v in doc.items() if k not in known},
            recognisers=recognisers,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelInvalid(f"{spec_path}: malformed model spec: {exc!r}") from None
    try:
        spec.relevance  # an optional key, but a malformed one is refused
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelInvalid(f"{spec_path}: malformed relevance: {exc!r}") from None
    if spec.distance != "cosine":
        raise ModelInvalid(f"{spec_path}: distance {spec.distance!r} is not supported (only cosine)")
    named = [spec.text.file, spec.text.tokenizer, spec.image.file,
             *(spec.recognisers.file_names if spec.recognisers else ())]
    if spec.text.multilingual is not None:
        named += [spec.text.multilingual.file, spec.text.multilingual.tokenizer]
    for name in named:
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
