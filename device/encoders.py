"""The two towers of the dual encoder, run with LiteRT.

Shaped like MediaPipe Tasks: an options dataclass, ``create_from_options``
that validates up front, ``close()`` and context-manager support. Both towers
return L2-normalised float32 vectors in the same space, so a dot product is the
cosine similarity.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path

import numpy as np

from device import images
from device.errors import ModelInvalid, QueryInvalid
from device.model import ModelSpec, MultilingualRoute, read_spec
from device.runtime import load_interpreter


@dataclasses.dataclass
class EncoderOptions:
    """Options shared by both towers.

    Attributes:
        model_dir: a model directory (``model.json`` and its files).
        num_threads: interpreter threads; 1 keeps a Pi responsive while serving.
        verify: check the sha256 of every model file before loading.
    """

    model_dir: Path
    num_threads: int = 1
    verify: bool = True


class _Tower:
    """What both towers share: spec, interpreter, lock, close."""

    def __init__(self, spec: ModelSpec, interpreter):
        self.spec = spec
        self._interpreter = interpreter
        # One interpreter is not safe to invoke from two threads at once.
        self._lock = threading.Lock()
        self._inputs = interpreter.get_input_details()
        self._output = interpreter.get_output_details()[0]
        if int(self._output["shape"][-1]) != spec.dim:
            raise ModelInvalid(
                f"{spec.id}: tower outputs {int(self._output['shape'][-1])} dimensions, "
                f"model.json says {spec.dim}"
            )

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.spec.dim

    def _run(self, *arrays: np.ndarray) -> np.ndarray:
        if self._interpreter is None:
            raise ValueError("encoder is closed")
        with self._lock:
            for detail, array in zip(self._inputs, arrays):
                self._interpreter.set_tensor(detail["index"], array)
            self._interpreter.invoke()
            out = self._interpreter.get_tensor(self._output["index"])[0].astype(np.float32)
        # The graph normalises already; renormalising guards against int8 drift.
        norm = float(np.linalg.norm(out))
        return out / norm if norm > 0 else out

    def close(self) -> None:
        """Release the interpreter. Further calls raise ``ValueError``."""
        self._interpreter = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


#: The two text routes (``TextEncoder.route_of``).
PRIMARY_ROUTE = "primary"
MULTILINGUAL_ROUTE = "multilingual"


def _check_text(text) -> None:
    if not isinstance(text, str):
        raise QueryInvalid("a query must be text")
    if not text.strip():
        raise QueryInvalid("the query is empty")


class MultilingualTower(_Tower):
    """The second text tower of a format-2 model (``text.multilingual``), fed by SentencePiece.

    Its graph ends in a projection into the primary text tower's space, so its
    vectors search the same photo vectors. Loaded by :class:`TextEncoder` on the
    first query that is not English.
    """

    def __init__(self, spec: ModelSpec, interpreter, processor):
        super().__init__(spec, interpreter)
        self.route: MultilingualRoute = spec.text.multilingual
        self._processor = processor
        shapes = [tuple(d["shape"]) for d in self._inputs]
        if len(shapes) != 2 or any(s != (1, self.route.max_tokens) for s in shapes):
            raise ModelInvalid(f"{spec.id}: multilingual text tower inputs {shapes} do not match "
                               f"2 x (1, {self.route.max_tokens})")
        self._inputs = sorted(self._inputs, key=lambda d: d["name"])

    @classmethod
    def load(cls, model_dir: Path, spec: ModelSpec, num_threads: int = 1) -> "MultilingualTower":
        """Load the route ``spec.text.multilingual`` of the model in ``model_dir``.

        Raises:
            ModelInvalid: the tokenizer or the tower cannot be loaded, or its shapes are wrong.
        """
        import sentencepiece  # only when a model has this route and a query needs it

        route = spec.text.multilingual
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.LoadFromFile(str(Path(model_dir) / route.tokenizer))
        except (OSError, RuntimeError) as exc:
            raise ModelInvalid(f"{model_dir}: cannot load {route.tokenizer}: {exc}") from None
        interpreter = load_interpreter(Path(model_dir) / route.file, num_threads)
        return cls(spec, interpreter, processor)

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, int32 (1, max_tokens): ``<s>`` prefix+text ``</s>``, padded.

        Runs of spaces are collapsed first, as the tokenizer the tower was checked
        with does (the SentencePiece model keeps them: provisioning's e5 tokenizer).
        """
        p, length = self._processor, self.route.max_tokens
        pieces = p.encode(re.sub(" {2,}", " ", self.route.query_prefix + text))[:length - 2]
        ids = [p.bos_id(), *pieces, p.eos_id()]
        padded = np.full((1, length), p.pad_id(), dtype=np.int32)
        padded[0, :len(ids)] = ids
        mask = np.zeros((1, length), dtype=np.int32)
        mask[0, :len(ids)] = 1
        return padded, mask

    def embed(self, text: str) -> np.ndarray:
        """Embed one text (checked by the caller)."""
        return self._run(*self.tokenize(text))


class TextEncoder(_Tower):
    """Encodes a query into the shared embedding space.

    A model with a multilingual route (format 2) has two text towers: English
    queries take the primary one, others the multilingual one, as the model's
    router decides (``device.language``); both output the same space. The router
    and the second tower load on first use, so a daemon that only ever sees
    English queries never holds them.

    Use :meth:`create_from_options` or :meth:`create_from_model_dir`.
    """

    def __init__(self, spec: ModelSpec, interpreter, tokenizer, model_dir: Path | None = None,
                 num_threads: int = 1):
        super().__init__(spec, interpreter)
        self._tokenizer = tokenizer
        self._model_dir = None if model_dir is None else Path(model_dir)
        self._num_threads = num_threads
        self._router = None
        self._multilingual: MultilingualTower | None = None
        self._load_lock = threading.Lock()
        shapes = [tuple(d["shape"]) for d in self._inputs]
        if len(shapes) != 2 or any(s != (1, spec.text.max_tokens) for s in shapes):
            raise ModelInvalid(
                f"{spec.id}: text tower inputs {shapes} do not match "
                f"2 x (1, {spec.text.max_tokens})"
            )
        # Input order in the graph follows the converter's names (args_0, args_1).
        self._inputs = sorted(self._inputs, key=lambda d: d["name"])

    @classmethod
    def create_from_options(cls, options: EncoderOptions) -> "TextEncoder":
        """Load the text tower and tokenizer named by ``options.model_dir``.

        Raises:
            ModelInvalid: bad model directory, altered file, or a tower whose
                shapes do not match ``model.json``.
        """
        from tokenizers import Tokenizer  # heavy-ish import, only when a tower loads

        model_dir = Path(options.model_dir)
        spec = read_spec(model_dir, verify=options.verify)
        try:
            tokenizer = Tokenizer.from_file(str(model_dir / spec.text.tokenizer))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise ModelInvalid(f"{model_dir}: cannot load tokenizer: {exc}") from None
        tokenizer.enable_truncation(max_length=spec.text.max_tokens)
        # Pad with the tokenizer's own pad token when it names one: a text tower may
        # attend to the padding (or find its end-of-text by id), so the ids must be
        # the ones it was trained with (CLIP: 0 in OpenCLIP, end-of-text in many HF models).
        padding = tokenizer.padding or {}
        tokenizer.enable_padding(length=spec.text.max_tokens, pad_id=padding.get("pad_id", 0),
                                 pad_token=padding.get("pad_token", "[PAD]"))
        interpreter = load_interpreter(model_dir / spec.text.file, options.num_threads)
        if spec.text.multilingual is not None:
            from device.language import create_router

            # Refuse an unknown router now rather than on the first foreign query.
            create_router(spec.text.multilingual.router, tokenizer.get_vocab)
        return cls(spec, interpreter, tokenizer, model_dir, options.num_threads)

    @classmethod
    def create_from_model_dir(cls, model_dir: Path, num_threads: int = 1) -> "TextEncoder":
        """Shortcut for :meth:`create_from_options` with default options."""
        return cls.create_from_options(EncoderOptions(model_dir=model_dir, num_threads=num_threads))

    @property
    def multilingual(self) -> bool:
        """True when the model has a multilingual route."""
        return self.spec.text.multilingual is not None and self._model_dir is not None

    @property
    def multilingual_loaded(self) -> bool:
        """True once the multilingual tower has been loaded (by a query that needed it)."""
        return self._multilingual is not None

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask for the primary tower, each int32 of shape (1, max_tokens)."""
        encoding = self._tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int32)
        mask = np.asarray([encoding.attention_mask], dtype=np.int32)
        return ids, mask

    def route_of(self, text: str) -> str:
        """``primary`` or ``multilingual``: the route :meth:`embed` takes for ``text``."""
        if not self.multilingual:
            return PRIMARY_ROUTE
        if self._router is None:
            from device.language import create_router

            with self._load_lock:
                if self._router is None:
                    self._router = create_router(self.spec.text.multilingual.router, self._tokenizer.get_vocab)
        return PRIMARY_ROUTE if self._router.is_english(text) else MULTILINGUAL_ROUTE

    def _multilingual_tower(self) -> MultilingualTower:
        if self._interpreter is None:
            raise ValueError("encoder is closed")
        if self._multilingual is None:
            with self._load_lock:
                if self._multilingual is None:
                    self._multilingual = MultilingualTower.load(self._model_dir, self.spec, self._num_threads)
        return self._multilingual

    def embed(self, text: str, route: str | None = None) -> np.ndarray:
        """Embed one text through its route.

        Args:
            text: the query.
            route: force ``primary`` or ``multilingual`` (benchmarks); ``None``: :meth:`route_of`.

        Raises:
            QueryInvalid: ``text`` is not a string or has no content.
            ModelInvalid: the multilingual route is needed and cannot be loaded.
            ValueError: ``route`` is unknown, or ``multilingual`` for a model without it.
        """
        _check_text(text)
        route = self.route_of(text) if route is None else route
        if route == MULTILINGUAL_ROUTE:
            if not self.multilingual:
                raise ValueError(f"{self.spec.full_id} has no multilingual text route")
            return self._multilingual_tower().embed(text)
        if route != PRIMARY_ROUTE:
            raise ValueError(f"unknown text route {route!r}")
        return self._run(*self.tokenize(text))

    def close(self) -> None:
        """Release both towers. Further calls raise ``ValueError``."""
        super().close()
        if self._multilingual is not None:
            self._multilingual.close()
            self._multilingual = None


class ImageEncoder(_Tower):
    """Encodes a photo into the shared embedding space: ONE vector per photo.

    For a model with recognisers (model.json format 2) the vector is the image
    tower's fused with the recognisers' concepts (``device.recognisers.fusion``);
    every ``embed_*`` method returns that same fused vector, so the host's build,
    the device's ingest and find-similar agree. Use :meth:`create_from_options`
    or :meth:`create_from_model_dir`.
    """

    def __init__(self, spec: ModelSpec, interpreter, recognisers=None):
        super().__init__(spec, interpreter)
        self._recognisers = recognisers
        size = spec.image.size
        shape = tuple(self._inputs[0]["shape"]) if len(self._inputs) == 1 else None
        if shape != (1, size, size, 3):
            raise ModelInvalid(f"{spec.id}: image tower input {shape} is not (1, {size}, {size}, 3)")

    @classmethod
    def create_from_options(cls, options: EncoderOptions) -> "ImageEncoder":
        """Load the image tower named by ``options.model_dir``.

        Raises:
            ModelInvalid: bad model directory, altered file, or wrong input shape.
        """
        model_dir = Path(options.model_dir)
        spec = read_spec(model_dir, verify=options.verify)
        interpreter = load_interpreter(model_dir / spec.image.file, options.num_threads)
        recognisers = None
        if spec.recognisers is not None:
            from device.recognisers.fusion import PhotoRecognisers

            recognisers = PhotoRecognisers.create_from_model_dir(model_dir, spec.recognisers, spec.dim,
                                                                 options.num_threads)
        return cls(spec, interpreter, recognisers)

    @classmethod
    def create_from_model_dir(cls, model_dir: Path, num_threads: int = 1) -> "ImageEncoder":
        """Shortcut for :meth:`create_from_options` with default options."""
        return cls.create_from_options(EncoderOptions(model_dir=model_dir, num_threads=num_threads))

    @property
    def input_size(self) -> int:
        """Side of the square input, in pixels."""
        return self.spec.image.size

    @property
    def has_recognisers(self) -> bool:
        """Whether photo vectors fuse recognisers' concepts into the tower's."""
        return self._recognisers is not None

    def embed_image(self, image) -> np.ndarray:
        """Embed a PIL image (RGB, upright): the tower's vector, fused with the recognisers' if any."""
        tower = self._run(images.tower_input(image, self.input_size))
        if self._recognisers is None:
            return tower
        from device.recognisers.fusion import fuse

        return fuse(tower, self._recognisers.added(image))

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a prepared input: (size, size, 3) RGB in 0..255, any numeric dtype.

        With recognisers, they see only these pixels (the tower's crop), not the whole
        photo: pass a photo to :meth:`embed_image` when you have one.
        """
        array = np.asarray(pixels, dtype=np.float32).reshape(1, self.input_size, self.input_size, 3)
        tower = self._run(array)
        if self._recognisers is None:
            return tower
        from PIL import Image

        from device.recognisers.fusion import fuse

        image = Image.fromarray(np.clip(array[0], 0, 255).astype(np.uint8), "RGB")
        return fuse(tower, self._recognisers.added(image))

    def tower_vector(self, pixels: np.ndarray) -> np.ndarray:
        """The image tower's own vector of a prepared input, without recognisers (tower parity checks)."""
        return self._run(np.asarray(pixels, dtype=np.float32).reshape(1, self.input_size, self.input_size, 3))

    def close(self) -> None:
        """Release the interpreters. Further calls raise ``ValueError``."""
        super().close()
        if self._recognisers is not None:
            self._recognisers.close()

    def embed_file(self, path: Path) -> np.ndarray:
        """Open, orient and embed the photo at ``path``.

        Raises:
            ImageUnreadable: the file is not a usable photo.
        """
        photo = images.open_photo(path, min_side=self.input_size)
        return self.embed_image(photo.image)
