"""The CLIP checkpoints ``import-model`` reads, loaded in PyTorch and wrapped for the device.

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
import warnings
from pathlib import Path

import numpy as np

from device.errors import ArchitectureUnknown, ModelSourceInvalid, ModelSourceMissing
from provisioning.models.clip.tokenizer import clip_bpe_tokenizer

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
OPENCLIP_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                        "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
#: CLIP's pre-processing when a source names none (OpenAI's ImageNet-like mean/std).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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


def _short(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"
