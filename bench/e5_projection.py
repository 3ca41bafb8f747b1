"""Cross-lingual check of the e5 -> MiniLM ridge projection (PyTorch, float32).

For the 12 concepts of ``provisioning.models.e5.samples.TRANSLATIONS`` and their
translations into 8 languages (none of them used to fit the projection or to
choose its penalty: the fit sees English ImageNet texts only): how often a
query lands nearest its own concept's English MiniLM vector among the 12, with
MiniLM alone (today's text tower) and with e5 projected into MiniLM's space.
A small sanity check of the mapping, not a photo-retrieval figure.

    .venv-host/bin/python -m provisioning.models.e5.projection var/e5/projection-full.npz
    .venv-host/bin/python -m bench.e5_projection var/e5/projection-full.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projection", type=Path, help="an .npz from provisioning.models.e5.projection")
    parser.add_argument("--variant", choices=("full", "enpt"), default="full")
    args = parser.parse_args(argv)

    from provisioning.models import default as default_model
    from provisioning.models.e5 import packed, samples, tokenizer, tower
    from provisioning.models.e5.projection import Projection

    projection = Projection.load(args.projection)
    model = packed.read_packed(packed.bundled_path(args.variant))
    e5_tower, e5_tok = tower.load_text_tower(model), tokenizer.build_tokenizer(model.vocab)
    minilm, minilm_tok = default_model.load_text_tower(), default_model.load_tokenizer(64)
    english = list(samples.TRANSLATIONS)
    anchors = default_model.embed_texts(minilm, minilm_tok, english)
    languages = ["en", *next(iter(samples.TRANSLATIONS.values()))]
    print(f"projection: {args.projection} (alpha {projection.alpha}, {projection.nbytes / 1e6:.2f} MB float32); "
          f"e5 {args.variant}; {len(english)} concepts\n")
    print("| language | MiniLM top-1 | e5 projected top-1 |")
    print("|---|---:|---:|")
    totals = {"minilm": [], "e5": []}
    for lang in languages:
        texts = english if lang == "en" else [samples.TRANSLATIONS[e][lang] for e in english]
        direct = default_model.embed_texts(minilm, minilm_tok, texts)
        mapped = projection(tower.embed(e5_tower, e5_tok, texts))
        right = np.arange(len(texts))
        hits_minilm = float((np.argmax(direct @ anchors.T, axis=1) == right).mean())
        hits_e5 = float((np.argmax(mapped @ anchors.T, axis=1) == right).mean())
        if lang != "en":
            totals["minilm"].append(hits_minilm)
            totals["e5"].append(hits_e5)
        print(f"| {lang} | {hits_minilm:.2f} | {hits_e5:.2f} |")
    print(f"| mean of the 8 non-English | {np.mean(totals['minilm']):.2f} | {np.mean(totals['e5']):.2f} |")


if __name__ == "__main__":
    main()
