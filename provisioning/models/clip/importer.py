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

The sources it reads are in :mod:`provisioning.models.clip.sources`, the
tokenizer in :mod:`~provisioning.models.clip.tokenizer`, the tower wrappers in
:mod:`~provisioning.models.clip.towers`; what every model maker writes in
:mod:`provisioning.models.modeldir`.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from device import ownership
from device.errors import ParityFailed
from device.model import REFERENCE_FILE, TOKENIZER_FILE, ModelSpec, sha256_file
from device.wording import plural
from provisioning import hostextra
from provisioning.models import convert, modeldir
from provisioning.models.clip.sources import LoadedSource, load_source

#: Parity floors (minimum cosine against PyTorch float32) per variant.
PARITY_FLOOR = {"float32": 0.9999, "int8": 0.99}

#: Texts the parity check and ``reference.npz`` use: the default model's set plus
#: ones that exercise the tokenizer (case, punctuation, digits, accents, other
#: scripts, and one longer than CLIP's 77-token context, so truncation is checked).
REFERENCE_TEXTS = modeldir.REFERENCE_TEXTS + [
    "A RED Car, parked!!", "it's the dog's ball", "3 cats & 12 dogs",
    "café crème on a naïve table", "日本の桜", "a   tab\tand\nnewline",
    " ".join(["a very long caption about a dog running on a beach at sunset"] * 12),
]

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
        force: replace ``out`` if it exists and is a model directory (or empty).
    """

    source: Path
    out: Path
    arch: str | None = None
    variant: str = "int8"
    model_id: str | None = None
    version: str = "1.0.0"
    licence: str | None = None
    source_url: str | None = None
    force: bool = False


def import_model(options: ImportOptions, log=print) -> ModelSpec:
    """Import ``options.source`` into a Glimpse model directory at ``options.out``.

    Returns the written spec; ``extra['parity']`` holds the minimum cosines.

    Raises:
        HostToolsMissing: PyTorch, litert-torch or open_clip is not installed.
        ModelSourceMissing, ModelSourceInvalid, ArchitectureUnknown: a bad source.
        ParityFailed: the tokenizer or a converted tower does not reproduce the source.
        OutputRefused: ``out`` is, holds or lies inside the source, or exists and is
            not a model directory ``force`` may replace.
        ValueError: unknown variant.
    """
    final = ownership.real(options.out)
    inputs = [("the source model", Path(options.source))]
    # Refused before anything is loaded: the source is never the output, nor inside or around it.
    ownership.check_apart(final, inputs)
    ownership.check_replaceable(final, ["model"], options.force, "a model directory")
    require_host_tools()
    import torch

    if options.variant not in convert.VARIANTS:
        raise ValueError(f"unknown variant {options.variant!r}; choose from {', '.join(convert.VARIANTS)}")
    torch.manual_seed(0)
    log(f"loading {options.source}")
    src = load_source(options.source, options.arch)
    log(f"{src.kind} {src.arch}: {src.dim}-d, {src.max_tokens} tokens, {src.image_size} px")
    if not options.licence:
        log("warning: no --licence given; the model card will say the licence is unknown")
    # Written beside `out` and swapped in when complete: a failed import leaves an old model as it was.
    with ownership.replacing(final, ["model"], "a model directory", force=options.force, inputs=inputs) as out:
        spec = _convert_into(out, src, options, log)
    log(f"wrote {final}")
    return spec


def _convert_into(out: Path, src: LoadedSource, options: ImportOptions, log) -> ModelSpec:
    """Convert ``src`` into the (new, empty) directory ``out`` and check its parity."""
    from tokenizers import Tokenizer

    tokenizer_file = out / TOKENIZER_FILE
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

    text_file, image_file = modeldir.export_towers(src.text_tower.eval(), src.image_tower.eval(), out,
                                                   options.variant, src.max_tokens, src.image_size, log)

    log("checking parity against the source model in PyTorch float32")
    ref_text = src.source_embed_text(ids, masks).astype(np.float32)
    photo_names, photo_inputs = modeldir.reference_inputs(src.image_size)
    ref_image = np.concatenate([src.source_embed_image(p[None].astype(np.float32)) for p in photo_inputs])
    parity = modeldir.tower_parity(out / text_file, out / image_file, [i[None] for i in ids],
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
            f"{options.variant} floor {parity['floor']}; nothing was written to {options.out} "
            "(try --variant float32, or report the architecture)")
    modeldir.save_reference(out, REFERENCE_TEXTS, ref_text, photo_names, photo_inputs, ref_image)

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
    spec = modeldir.write_model(
        out, model_id=options.model_id or _slug(src.arch), version=options.version, dim=src.dim,
        variant=options.variant, text_file=text_file, image_file=image_file, max_tokens=src.max_tokens,
        size=src.image_size,
        extra={"imported": provenance, "parity": parity, "reference": REFERENCE_FILE,
               "licence": provenance["licence"]},
        card=card)
    return spec


def card(spec: ModelSpec) -> str:
    """The model card (Markdown) of an imported model: provenance, licence, parity."""
    imported, parity = spec.extra["imported"], spec.extra["parity"]
    files = "".join(f"| `{name}` | `{digest[:16]}…` |\n" for name, digest in sorted(spec.files.items()))
    summary = f"Imported with `glimpse-provision import-model` from a local {imported['source_kind']} checkpoint."
    provenance = f"""| | |
|---|---|
| architecture | {imported['architecture']} |
| source | {imported['source']} |
| checkpoint | `{imported['checkpoint']}` (sha256 `{imported['checkpoint_sha256']}`) |
| licence of the weights | {imported['licence']} |

The licence is what the person who imported the model stated; check the model's
own page before shipping it in a product (docs/models.md lists common ones)."""
    io = f"""Text: CLIP BPE token ids and attention mask, int32 (1, {spec.text.max_tokens}), from `{spec.text.tokenizer}`
(start and end of text added, truncated keeping the end-of-text token). Image: float32 RGB 0..255,
(1, {spec.image.size}, {spec.image.size}, 3), shorter side resized then centre-cropped; the model's mean
{tuple(round(v, 4) for v in imported['image_mean'])} and std {tuple(round(v, 4) for v in imported['image_std'])}
are applied inside the graph. Output: {spec.dim}-d unit vectors; the score is the cosine similarity.

Quantisation: `{spec.quantization}` (int8 is dynamic-range: int8 weights, activations quantised at run time)."""
    parity_text = f"""Minimum cosine over `reference.npz` ({plural(len(REFERENCE_TEXTS), 'text')}, {plural(len(modeldir.REFERENCE_PHOTOS), 'photo')});
the import refuses a model below {parity['floor']}.

{modeldir.parity_table(parity)}"""
    files_table = f"""| file | sha256 |
|---|---|
{files.rstrip()}"""
    return modeldir.model_card(spec, summary, [
        ("Provenance", provenance), ("Inputs and outputs", io),
        ("Parity against the source model (PyTorch float32)", parity_text), ("Files", files_table)])


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "imported-clip"


