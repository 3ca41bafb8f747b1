"""Import a real CLIP-class model (OpenCLIP or Hugging Face ``CLIPModel``) from local files.

The user downloads the weights on a machine with internet (docs/models.md);
this module turns them into a normal Glimpse model directory:

* both towers wrapped to the device's contract (text: int32 ids and mask in,
  image: NHWC float32 RGB 0..255 in, the model's own mean/std inside the graph;
  both L2-normalised) and converted with litert-torch, int8 or float32;
* a ``tokenizer.json`` for the device's ``tokenizers`` library that gives the
  same token ids as the source model's own tokenizer;
* parity against the source model in PyTorch float32 (refused below the floor),
  ``reference.npz``, ``model.json`` and a model card with licence and provenance.

Sources, detected by :func:`detect_source`:

* ``openclip-file``: a bare OpenCLIP checkpoint (``.pt``, ``.pth``, ``.bin``,
  ``.safetensors``) plus ``arch``, an architecture open_clip defines (``ViT-B-32``);
* ``openclip-dir``: a hub-style OpenCLIP directory (``open_clip_config.json`` and
  ``open_clip_pytorch_model.bin`` or ``open_clip_model.safetensors``);
* ``hf-clip``: a Hugging Face ``CLIPModel`` directory (``config.json`` with
  ``model_type: clip``, weights, tokenizer files).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from device.errors import (
    ArchitectureUnknown,
    ModelSourceInvalid,
    ModelSourceMissing,
    ParityFailed,
)
from device.model import SPEC_NAME, ImageTowerSpec, ModelSpec, TextTowerSpec, sha256_file, write_spec
from provisioning import hostextra
from provisioning.models import convert
from provisioning.models import default as default_model

#: Parity floors (minimum cosine against PyTorch float32) per variant.
PARITY_FLOOR = {"float32": 0.9999, "int8": 0.99}

#: Texts the parity check and ``reference.npz`` use: the default model's set plus
#: ones that exercise the tokenizer (case, punctuation, digits, accents, other
#: scripts, and one longer than CLIP's 77-token context, so truncation is checked).
REFERENCE_TEXTS = default_model.REFERENCE_TEXTS + [
    "A RED Car, parked!!", "it's the dog's ball", "3 cats & 12 dogs",
    "café crème on a naïve table", "日本の桜", "a   tab\tand\nnewline",
    " ".join(["a very long caption about a dog running on a beach at sunset"] * 12),
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
OPENCLIP_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                        "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
#: CLIP's pre-processing when a source names none (OpenAI's ImageNet-like mean/std).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
UNKNOWN_LICENCE = "unknown: not given to import-model; check the weights' licence before shipping"


def require_host_tools() -> None:
    """Check that the host tools the import needs are installed, before any work.

    Raises:
        HostToolsMissing: naming what is missing and how to install it.
    """
    hostextra.require("import-model", ("torch", "litert_torch", "open_clip", "transformers"))


@dataclasses.dataclass
class ImportOptions:
    """What to import and how.

    Attributes:
        source: checkpoint file or model directory (local; nothing is downloaded).
        out: model directory to write.
        arch: open_clip architecture for a bare checkpoint file (e.g. ``ViT-B-32``);
            a directory carries its own configuration, and ``arch`` only names it.
        variant: ``int8`` (dynamic-range) or ``float32`` towers.
        model_id: ``model.json`` id (default: derived from the architecture or directory).
        version: the model's version.
        licence: the weights' licence, as the user read it on the model's page.
        source_url: where the weights came from (default: the local path).
    """

    source: Path
    out: Path
    arch: str | None = None
    variant: str = "int8"
    model_id: str | None = None
    version: str = "1.0.0"
    licence: str | None = None
    source_url: str | None = None


@dataclasses.dataclass
class LoadedSource:
    """A source model loaded in PyTorch, with what the device contract needs.

    Attributes:
        kind: ``openclip-file``, ``openclip-dir`` or ``hf-clip``.
        arch: architecture name (open_clip's, or the HF config's ``_name_or_path``/dir name).
        weights: the weights file (its sha256 goes into ``model.json``).
        model: the source model, eval mode.
        text_tower, image_tower: the device-contract wrappers (torch modules).
        tokenizer_json: the ``tokenizer.json`` text for the device.
        max_tokens: context length; image_size: square input side; dim: embedding size.
        mean, std: the model's own pixel normalisation (0..1 scale).
        source_tokenize: the source's own tokenizer: texts -> (ids, mask) int arrays.
        source_embed_text: the source's own text embedding: ids, mask -> unit vectors.
        source_embed_image: the source's own image embedding: NHWC 0..255 -> unit vectors.
    """

    kind: str
    arch: str
    weights: Path
    model: object
    text_tower: object
    image_tower: object
    tokenizer_json: str
    max_tokens: int
    image_size: int
    dim: int
    mean: tuple
    std: tuple
    source_tokenize: object
    source_embed_text: object
    source_embed_image: object


def import_open_clip():
    """Import open_clip (and torchvision under it) on the CPU-only PyTorch; returns the module.

    torchvision's C++ ops do not load beside the CPU torch wheel; the finder
    ``provisioning.models.torch_compat`` installs makes its pure-Python parts, all CLIP
    needs, importable when open_clip imports it.
    """
    with warnings.catch_warnings():
        # Where torchvision.io gets imported, it warns that its image extension (the
        # same CUDA build) did not load: known, see torch_compat, and CLIP decodes no images with it.
        warnings.filterwarnings("ignore", message="Failed to load image Python extension", category=UserWarning)
        import open_clip
    return open_clip


def detect_source(source: Path, arch: str | None) -> str:
    """The kind of ``source``: ``openclip-file``, ``openclip-dir`` or ``hf-clip``.

    Raises:
        ModelSourceMissing: ``source`` does not exist.
        ModelSourceInvalid: neither a checkpoint file nor a known model directory.
        ArchitectureUnknown: a bare checkpoint file without ``arch``.
    """
    source = Path(source)
    if not source.exists():
        raise ModelSourceMissing(f"{source}: no such file or directory")
    if source.is_file():
        if source.suffix not in CHECKPOINT_SUFFIXES:
            raise ModelSourceInvalid(
                f"{source}: not a checkpoint file (expected {', '.join(CHECKPOINT_SUFFIXES)}) "
                "or a model directory")
        if not arch:
            raise ArchitectureUnknown(
                f"{source} is a bare checkpoint: name its open_clip architecture with --arch (e.g. ViT-B-32)")
        return "openclip-file"
    if (source / "open_clip_config.json").is_file():
        return "openclip-dir"
    config = source / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError) as exc:
            raise ModelSourceInvalid(f"{config}: unreadable config: {exc}") from None
        if model_type == "clip":
            return "hf-clip"
        raise ModelSourceInvalid(f"{source}: a {model_type!r} model, not a CLIP model (model_type 'clip')")
    raise ModelSourceInvalid(
        f"{source}: not a CLIP model directory (no open_clip_config.json, no config.json)")


def load_source(source: Path, arch: str | None = None) -> LoadedSource:
    """Load ``source`` in PyTorch float32 and wrap it for the device.

    Raises:
        ModelSourceMissing, ModelSourceInvalid, ArchitectureUnknown: as :func:`detect_source`,
            plus corrupt weights, weights of another architecture, or an unsupported tokenizer.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kind = detect_source(source, arch)
    if kind == "hf-clip":
        return _load_hf(Path(source))
    return _load_open_clip(Path(source), kind, arch)


# --------------------------------------------------------------------------- OpenCLIP

def _load_open_clip(source: Path, kind: str, arch: str | None) -> LoadedSource:
    import torch

    from provisioning.models.clip import towers as clip_towers

    open_clip = import_open_clip()
    if kind == "openclip-dir":
        weights = next((source / name for name in OPENCLIP_DIR_WEIGHTS if (source / name).is_file()), None)
        if weights is None:
            raise ModelSourceMissing(
                f"{source}: open_clip_config.json but no weights ({' or '.join(OPENCLIP_DIR_WEIGHTS)})")
        try:
            config = json.loads((source / "open_clip_config.json").read_text(encoding="utf-8"))
            model_cfg = config["model_cfg"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelSourceInvalid(f"{source / 'open_clip_config.json'}: no usable model_cfg: {exc!r}") from None
        preprocess = config.get("preprocess_cfg", {})
        arch = arch or source.name
        name, pretrained = f"local-dir:{source}", None
    else:
        weights = source
        if arch not in open_clip.list_models():
            close = [m for m in open_clip.list_models() if m.lower().startswith(str(arch).lower()[:5])]
            raise ArchitectureUnknown(
                f"--arch {arch!r} is not an open_clip architecture"
                + (f" (close: {', '.join(close[:8])})" if close else "; see open_clip.list_models()"))
        model_cfg = open_clip.get_model_config(arch)
        preprocess = _tag_preprocess(open_clip, arch)
        name, pretrained = arch, str(source)
    if model_cfg.get("text_cfg", {}).get("hf_tokenizer_name") or model_cfg.get("text_cfg", {}).get("hf_model_name"):
        raise ModelSourceInvalid(
            f"{source}: its text tower uses a Hugging Face tokenizer/model "
            f"({model_cfg['text_cfg'].get('hf_tokenizer_name') or model_cfg['text_cfg'].get('hf_model_name')}); "
            "import-model reads CLIP-BPE text towers only")
    _check_readable(weights)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, load_weights=True,
                                       pretrained_image=False, pretrained_text=False,
                                       require_pretrained=True)
    except Exception as exc:  # open_clip/torch raise RuntimeError, KeyError, pickle and zip errors alike
        raise ModelSourceInvalid(
            f"{weights}: cannot load these weights as {arch} ({type(exc).__name__}: {_short(exc, 160)}); "
            "is the architecture right?") from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer) or tokenizer.reduction_fn is not None \
            or tokenizer.clean_fn is not open_clip.tokenizer._clean_lower:
        raise ModelSourceInvalid(f"{source}: tokenizer {type(tokenizer).__name__} is not CLIP's plain BPE")
    max_tokens = int(tokenizer.context_length)
    text_module = model.text if hasattr(model, "text") else model
    pool_attr = "pool_type" if hasattr(model, "text") else "text_pool_type"
    pooling = getattr(text_module, pool_attr, None)
    if pooling not in ("argmax", "eos") or getattr(text_module, "cls_emb", None) is not None:
        raise ModelSourceInvalid(f"{source}: text pooling {pooling!r} is not CLIP's end-of-text pooling")
    size = _square(getattr(model.visual, "image_size", None) or model_cfg["vision_cfg"]["image_size"])
    mean = tuple(float(v) for v in preprocess.get("mean", OPENAI_MEAN))
    std = tuple(float(v) for v in preprocess.get("std", OPENAI_STD))
    dim = int(model_cfg["embed_dim"])

    def source_tokenize(texts):
        ids = tokenizer(texts).numpy()
        # open_clip pads with 0 after the end-of-text token and feeds no mask.
        mask = np.zeros_like(ids)
        for row, eot in enumerate((ids == tokenizer.eot_token_id).argmax(axis=1)):
            mask[row, :eot + 1] = 1
        return ids, mask

    def source_embed_text(ids, mask):
        with torch.no_grad():
            return model.encode_text(torch.as_tensor(ids, dtype=torch.long), normalize=True).numpy()

    source_image = clip_towers.PixelsTo(model.visual, mean, std).eval()

    def source_embed_image(pixels):
        with torch.no_grad():
            return source_image(torch.as_tensor(pixels, dtype=torch.float32)).numpy()

    return LoadedSource(
        kind=kind, arch=arch, weights=weights, model=model,
        text_tower=clip_towers.OpenClipText(text_module, pool_attr),
        image_tower=clip_towers.PixelsTo(_reparameterized(model.visual), mean, std),
        tokenizer_json=clip_bpe_tokenizer(tokenizer, max_tokens),
        max_tokens=max_tokens, image_size=size, dim=dim, mean=mean, std=std,
        source_tokenize=source_tokenize, source_embed_text=source_embed_text,
        source_embed_image=source_embed_image)


def _reparameterized(visual):
    """An inference copy of a timm image tower with train-time branches folded
    (MobileCLIP's FastViT/MobileOne blocks: as Apple's model cards do before use;
    fewer, larger convolutions run faster on the Pi). Other towers are returned as they are.
    The parity check compares the copy with the unfolded original."""
    if not any(hasattr(m, "reparameterize") for m in visual.modules()):
        return visual
    from timm.utils import reparameterize_model

    return reparameterize_model(visual, inplace=False).eval()


def _tag_preprocess(open_clip, arch: str) -> dict:
    """mean/std for a bare checkpoint: the ones all of open_clip's published weights
    for ``arch`` agree on (MobileCLIP: 0 and 1), else CLIP's (OpenAI) defaults."""
    seen = {(tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)))
            for tag in open_clip.list_pretrained_tags_by_model(arch)
            if (cfg := open_clip.get_pretrained_cfg(arch, tag))}
    if len(seen) == 1:
        mean, std = seen.pop()
        return {"mean": mean, "std": std}
    return {}


def clip_bpe(simple_tokenizer) -> tuple[dict, list]:
    """CLIP's BPE vocabulary (token -> id) and merges (pairs, by rank) from open_clip's
    ``SimpleTokenizer``: the tables every CLIP checkpoint's tokenizer is made of."""
    merges = sorted(simple_tokenizer.bpe_ranks, key=simple_tokenizer.bpe_ranks.get)
    return dict(simple_tokenizer.encoder), merges


def clip_bpe_tokenizer(simple_tokenizer, max_tokens: int) -> str:
    """A ``tokenizer.json`` reproducing open_clip's ``SimpleTokenizer`` (CLIP's BPE).

    The same vocabulary and merges, the same pre-tokenising regex, byte-level
    symbols, ``</w>`` word ends; lower-casing and whitespace folding as its
    ``clean='lower'``; start- and end-of-text around every text; truncation that
    keeps the end-of-text token; padding with id 0, as open_clip pads.

    open_clip first cleans text with ftfy and HTML unescaping; the parts of that a
    query can meet are reproduced (:func:`_ftfy_like_normalizers`). Not reproduced:
    ftfy's repair of mis-decoded text (mojibake, "cafÃ©"), halfwidth katakana, and
    HTML entities other than the five common ones: such texts may tokenize differently.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = clip_bpe(simple_tokenizer)
    sot = simple_tokenizer.decoder[simple_tokenizer.sot_token_id]
    eot = simple_tokenizer.decoder[simple_tokenizer.eot_token_id]
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", continuing_subword_prefix="",
                              fuse_unk=False))
    tokenizer.normalizer = normalizers.Sequence([
        *_ftfy_like_normalizers(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Lowercase(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        # SimpleTokenizer's pattern: each match is a word, the rest (whitespace) is dropped.
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([sot, eot])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, vocab[sot]), (eot, vocab[eot])])
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(length=max_tokens, pad_id=0, pad_token=simple_tokenizer.decoder[0])
    return tokenizer.to_str()


def _ftfy_like_normalizers() -> list:
    """``tokenizers`` normalizers doing what ftfy.fix_text (default settings) and
    open_clip's double ``html.unescape`` do to text a person types: NFC, curly
    quotes straightened, Latin ligatures split, fullwidth ASCII made ASCII, control
    characters removed, and the common HTML entities unescaped (``&amp;`` first, so
    ``&amp;lt;`` becomes ``<`` as after two unescapes)."""
    from tokenizers import Regex, normalizers

    replace = normalizers.Replace
    ligatures = {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                 "\ufb05": "st", "\ufb06": "st", "\u0132": "IJ", "\u0133": "ij", "\u01c7": "LJ", "\u01c8": "Lj",
                 "\u01c9": "lj", "\u01ca": "NJ", "\u01cb": "Nj", "\u01cc": "nj"}
    entities = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&nbsp;": "\u00a0"}
    return [
        normalizers.NFC(),
        replace(Regex("[\u2018\u2019\u201a\u201b]"), "'"),
        replace(Regex("[\u201c\u201d\u201e\u201f]"), '"'),
        *(replace(char, plain) for char, plain in ligatures.items()),
        *(replace(chr(code), chr(code - 0xFEE0)) for code in range(0xFF01, 0xFF5F)),  # fullwidth ASCII
        replace("\u3000", " "),
        replace(Regex("[\x00-\x08\x0b\x0e-\x1f\x7f]"), ""),
        replace("&amp;", "&"),
        *(replace(entity, char) for entity, char in entities.items()),
    ]


# --------------------------------------------------------------------------- Hugging Face

def _load_hf(source: Path) -> LoadedSource:
    import torch

    from provisioning.models.clip import towers as clip_towers

    try:
        from transformers import AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        model = CLIPModel.from_pretrained(str(source), local_files_only=True,
                                          attn_implementation="eager").eval()
    except OSError as exc:
        raise ModelSourceInvalid(f"{source}: cannot load the CLIP weights ({_short(exc)})") from None
    except Exception as exc:  # safetensors/torch raise their own types for corrupt files
        raise ModelSourceInvalid(f"{source}: corrupt or mismatched CLIP weights ({type(exc).__name__}: "
                                 f"{_short(exc)})") from None
    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        backend = hf_tokenizer.backend_tokenizer
    except Exception as exc:
        raise ModelSourceInvalid(f"{source}: no usable CLIP tokenizer (tokenizer.json or vocab.json + "
                                 f"merges.txt): {_short(exc)}") from None
    config = model.config
    max_tokens = int(config.text_config.max_position_embeddings)
    size = int(config.vision_config.image_size)
    mean, std = OPENAI_MEAN, OPENAI_STD
    processor_file = source / "preprocessor_config.json"
    if processor_file.is_file():
        try:
            processor = json.loads(processor_file.read_text(encoding="utf-8"))
            mean = tuple(float(v) for v in processor.get("image_mean", mean))
            std = tuple(float(v) for v in processor.get("image_std", std))
        except (OSError, ValueError, TypeError) as exc:
            raise ModelSourceInvalid(f"{processor_file}: unreadable: {exc}") from None
    pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
    backend = type(backend).from_str(backend.to_str())  # a copy: the source keeps its own settings
    backend.enable_truncation(max_length=max_tokens)
    backend.enable_padding(length=max_tokens, pad_id=pad_id, pad_token=hf_tokenizer.convert_ids_to_tokens(pad_id))

    def source_tokenize(texts):
        batch = hf_tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens)
        return np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])

    def source_embed_text(ids, mask):
        with torch.no_grad():
            out = model.get_text_features(input_ids=torch.as_tensor(ids, dtype=torch.long),
                                          attention_mask=torch.as_tensor(mask, dtype=torch.long))
            out = getattr(out, "pooler_output", out)
            return torch.nn.functional.normalize(out, dim=-1).numpy()

    image_tower = clip_towers.PixelsTo(clip_towers.HfClipImage(model), mean, std).eval()

    def source_embed_image(pixels):
        with torch.no_grad():
            return image_tower(torch.as_tensor(pixels, dtype=torch.float32)).numpy()

    arch = str(getattr(config, "_name_or_path", "") or source.name)
    weights = next((source / n for n in ("model.safetensors", "pytorch_model.bin") if (source / n).is_file()),
                   None) or next(iter(sorted(source.glob("*.safetensors"))), source / "config.json")
    return LoadedSource(
        kind="hf-clip", arch=Path(arch).name or source.name, weights=weights, model=model,
        text_tower=clip_towers.HfClipText(model), image_tower=image_tower, tokenizer_json=backend.to_str(),
        max_tokens=max_tokens, image_size=size, dim=int(config.projection_dim), mean=mean, std=std,
        source_tokenize=source_tokenize, source_embed_text=source_embed_text,
        source_embed_image=source_embed_image)


# --------------------------------------------------------------------------- the import

def import_model(options: ImportOptions, log=print) -> ModelSpec:
    """Import ``options.source`` into a Glimpse model directory at ``options.out``.

    Returns the written spec; ``extra['parity']`` holds the minimum cosines.

    Raises:
        HostToolsMissing: PyTorch, litert-torch or open_clip is not installed.
        ModelSourceMissing, ModelSourceInvalid, ArchitectureUnknown: a bad source.
        ParityFailed: the tokenizer or a converted tower does not reproduce the source.
        ValueError: unknown variant.
    """
    require_host_tools()
    import torch
    from tokenizers import Tokenizer

    if options.variant not in convert.VARIANTS:
        raise ValueError(f"unknown variant {options.variant!r}; choose from {', '.join(convert.VARIANTS)}")
    torch.manual_seed(0)
    log(f"loading {options.source}")
    src = load_source(options.source, options.arch)
    log(f"{src.kind} {src.arch}: {src.dim}-d, {src.max_tokens} tokens, {src.image_size} px")
    if not options.licence:
        log("warning: no --licence given; the model card will say the licence is unknown")
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    # A model.json from an earlier import would make a half-written directory look usable.
    (out / SPEC_NAME).unlink(missing_ok=True)
    tokenizer_file = out / default_model.TOKENIZER_FILE
    tokenizer_file.write_text(src.tokenizer_json, encoding="utf-8")

    # The device's tokenizer must give the source's ids, padding included.
    device_tokenizer = Tokenizer.from_file(str(tokenizer_file))
    encodings = device_tokenizer.encode_batch(REFERENCE_TEXTS)
    ids = np.asarray([e.ids for e in encodings], np.int32)
    masks = np.asarray([e.attention_mask for e in encodings], np.int32)
    source_ids, _ = src.source_tokenize(REFERENCE_TEXTS)
    wrong = [t for t, a, b in zip(REFERENCE_TEXTS, ids, source_ids) if list(a) != list(b)]
    if wrong:
        raise ParityFailed(f"the converted tokenizer gives other token ids than the source's for {wrong[0]!r}")

    text_file = default_model.TEXT_FILE.format(variant=options.variant)
    image_file = default_model.IMAGE_FILE.format(variant=options.variant)
    sample_ids = torch.zeros((1, src.max_tokens), dtype=torch.int32)
    sample_mask = torch.ones((1, src.max_tokens), dtype=torch.int32)
    log(f"converting the text tower ({options.variant})")
    convert.export_tflite(src.text_tower.eval(), (sample_ids, sample_mask), out / text_file, options.variant)
    log(f"converting the image tower ({options.variant})")
    convert.export_tflite(src.image_tower.eval(), (torch.zeros((1, src.image_size, src.image_size, 3)),),
                          out / image_file, options.variant)

    log("checking parity against the source model in PyTorch float32")
    ref_text = src.source_embed_text(ids, masks).astype(np.float32)
    photo_names, photo_inputs = default_model.reference_inputs(src.image_size)
    ref_image = np.concatenate([src.source_embed_image(p[None].astype(np.float32)) for p in photo_inputs])
    parity = default_model.tower_parity(out / text_file, out / image_file, [i[None] for i in ids],
                                        [m[None] for m in masks], ref_text, photo_inputs, ref_image)
    parity["floor"] = PARITY_FLOOR[options.variant]
    log(f"parity ({options.variant} vs PyTorch float32): text {parity['text_min_cosine']:.6f}, "
        f"image {parity['image_min_cosine']:.6f}")
    low = [tower for tower in ("text", "image") if parity[f"{tower}_min_cosine"] < parity["floor"]]
    if low:
        raise ParityFailed(
            f"the converted {' and '.join(low)} tower{'s' if len(low) > 1 else ''} of {src.arch} "
            f"reach{'' if len(low) > 1 else 'es'} cosine "
            f"{min(parity[f'{t}_min_cosine'] for t in low):.6f} against PyTorch, below the "
            f"{options.variant} floor {parity['floor']}; the model in {out} is incomplete "
            "(try --variant float32, or report the architecture)")
    default_model.save_reference(out, REFERENCE_TEXTS, ref_text, photo_names, photo_inputs, ref_image)

    provenance = {
        "source_kind": src.kind,
        "architecture": src.arch,
        "checkpoint": src.weights.name,
        "checkpoint_sha256": sha256_file(src.weights),
        "source": options.source_url or f"local file {Path(options.source).resolve()}",
        "licence": options.licence or UNKNOWN_LICENCE,
        "image_mean": list(src.mean),
        "image_std": list(src.std),
    }
    files = {name: sha256_file(out / name) for name in (text_file, image_file, default_model.TOKENIZER_FILE,
                                                          default_model.REFERENCE_FILE)}
    spec = ModelSpec(
        id=options.model_id or _slug(src.arch), version=options.version, dim=src.dim, distance="cosine",
        quantization=options.variant,
        text=TextTowerSpec(file=text_file, tokenizer=default_model.TOKENIZER_FILE, max_tokens=src.max_tokens),
        image=ImageTowerSpec(file=image_file, size=src.image_size),
        files=files,
        extra={"imported": provenance, "parity": parity, "reference": default_model.REFERENCE_FILE,
               "licence": provenance["licence"]},
    )
    write_spec(out, spec)
    (out / default_model.CARD_FILE).write_text(model_card(spec), encoding="utf-8")
    log(f"wrote {out}")
    return spec


def model_card(spec: ModelSpec) -> str:
    """The model card (Markdown) of an imported model: provenance, licence, parity."""
    imported, parity = spec.extra["imported"], spec.extra["parity"]
    files = "".join(f"| `{name}` | `{digest[:16]}…` |\n" for name, digest in sorted(spec.files.items()))
    return f"""# Model card: {spec.id} {spec.version} ({spec.quantization})

Imported with `glimpse-provision import-model` from a local {imported['source_kind']} checkpoint.

## Provenance

| | |
|---|---|
| architecture | {imported['architecture']} |
| source | {imported['source']} |
| checkpoint | `{imported['checkpoint']}` (sha256 `{imported['checkpoint_sha256']}`) |
| licence of the weights | {imported['licence']} |

The licence is what the person who imported the model stated; check the model's
own page before shipping it in a product (docs/models.md lists common ones).

## Inputs and outputs

Text: CLIP BPE token ids and attention mask, int32 (1, {spec.text.max_tokens}), from `{spec.text.tokenizer}`
(start and end of text added, truncated keeping the end-of-text token). Image: float32 RGB 0..255,
(1, {spec.image.size}, {spec.image.size}, 3), shorter side resized then centre-cropped; the model's mean
{tuple(round(v, 4) for v in imported['image_mean'])} and std {tuple(round(v, 4) for v in imported['image_std'])}
are applied inside the graph. Output: {spec.dim}-d unit vectors; the score is the cosine similarity.

Quantisation: `{spec.quantization}` (int8 is dynamic-range: int8 weights, activations quantised at run time).

## Parity against the source model (PyTorch float32)

Minimum cosine over `reference.npz` ({len(REFERENCE_TEXTS)} texts, {len(default_model.REFERENCE_PHOTOS)} photos);
the import refuses a model below {parity['floor']}.

| tower | min cosine |
|---|---|
| text | {parity['text_min_cosine']:.6f} |
| image | {parity['image_min_cosine']:.6f} |

## Files

| file | sha256 |
|---|---|
{files}"""


def _check_readable(weights: Path) -> None:
    """Refuse a checkpoint file that is not one (truncated download, wrong file) before
    loading it, so that error is not mistaken for weights of another architecture.
    Cheap: reads the safetensors header, or checks for a zip archive (PyTorch's format
    since 1.6, complete only with its central directory at the end) or a pickle.

    Raises:
        ModelSourceInvalid: the file is not a readable checkpoint.
    """
    import zipfile

    problem = None
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own SafetensorError
            problem = _short(exc, 120)
    elif not zipfile.is_zipfile(weights):
        with open(weights, "rb") as handle:
            if handle.read(1) != b"\x80":  # not a legacy (pre-1.6) pickle either
                problem = "neither a zip archive nor a pickle"
    if problem:
        raise ModelSourceInvalid(f"{weights}: not a readable checkpoint ({problem}); is the download complete?")


def _square(size) -> int:
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            raise ModelSourceInvalid(f"image size {tuple(size)} is not square")
        size = size[0]
    return int(size)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "imported-clip"


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"
