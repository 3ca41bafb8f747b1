"""Tune, on the tuning half only, a fusion of the ConSE photo vector with face and colour concepts.

A glimpse-default photo vector is ConSE: the softmax-weighted mean of the text
tower's vectors of the top ImageNet classes of EfficientNet-Lite0. The fusion
adds more concepts *in the same text space*, so a photo keeps one vector::

    v = normalise(conse + w_person * face_score * t("person concepts")
                        + w_colour * sum over terms with coverage > tau of coverage * t(colour prompt)
                          (optionally "centred": minus the mean of the 11 colour prompts' vectors)
                        + w_bw * [chromatic coverage < 0.02] * t("a black and white photo"))

where ``t`` is the text tower, ``face_score`` the best BlazeFace full-range face
(0 without a face above 0.5) and coverage a colour term's share of the photo's
pixels (``device/recognisers``). The grid is searched on ``queries_tune.json``;
the configuration with the best mean R@1 over all languages of the tuning half
is then reported on both halves beside the unfused model (1.1.0). Test-half
figures are printed for the chosen configuration only, once.

    python -m bench.tune_fusion --model models/glimpse-default                 # tuning half only
    python -m bench.tune_fusion --model models/glimpse-default --report-test   # then, once, the test half
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from bench import eval_set, multilingual_eval

PERSON_PROMPTS = ("a photo of a person.", "people.", "a human face.", "a portrait of a person.")
COLOUR_TEMPLATES = {"something": "something {term}.", "photo": "a {term} photo.", "colour": "the colour {term}."}
BW_PROMPT = "a black and white photo."
CHROMATIC = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")

GRID = {
    "w_person": (0.0, 0.3, 0.5, 0.8, 1.2),
    "w_colour": (0.0, 0.2, 0.4, 0.7, 1.0),
    "tau": (0.05, 0.15, 0.3),
    "template": tuple(COLOUR_TEMPLATES),
    "w_bw": (0.0, 0.3, 0.6),
    "centred": (False, True),
}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def photo_signals(model_dir: Path, photos) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ConSE vectors (n, dim), best face score (n,), colour-term shares (n, 11) of ``photos``."""
    from device import images
    from device.encoders import ImageEncoder
    from device.recognisers import colours, faces

    conse, face_score, shares = [], [], []
    with ImageEncoder.create_from_model_dir(model_dir, num_threads=1) as tower, \
            faces.FaceDetector.create_from_model_path(faces.packaged_model_path()) as detector:
        for photo in photos:
            image = images.open_photo(photo.path, min_side=tower.input_size).image
            conse.append(tower.embed_image(image))
            found = detector.detect(image)
            face_score.append(max((f.score for f in found), default=0.0))
            shares.append(list(colours.photo_colours(image).values()))
    return np.stack(conse), np.array(face_score), np.array(shares)


def fuse(conse, face_score, shares, concepts, config) -> np.ndarray:
    """Fused photo vectors for one configuration (see the module docstring)."""
    from device.recognisers.colours import COLOUR_TERMS

    out = conse.copy()
    out += config["w_person"] * face_score[:, None] * concepts["person"][None]
    colour_vectors = concepts["colours"][config["template"]]  # (11, dim)
    if config["centred"]:
        # The colour prompts share a large "colour" direction: without it a red photo
        # also gains on "something yellow". Keep what tells one term from the others.
        colour_vectors = colour_vectors - colour_vectors.mean(axis=0, keepdims=True)
    weights = np.where(shares > config["tau"], shares, 0.0)
    chromatic = [COLOUR_TERMS.index(t) for t in CHROMATIC]
    mask = np.zeros(len(COLOUR_TERMS))
    mask[chromatic] = 1.0  # black/white/grey say little alone; black-and-white has its own concept
    out += config["w_colour"] * (weights * mask) @ colour_vectors
    is_bw = shares[:, chromatic].sum(1) < 0.02
    out += config["w_bw"] * is_bw[:, None] * concepts["bw"][None]
    return _unit(out)


def main(argv=None) -> int:
    from device.encoders import TextEncoder
    from device.recognisers.colours import COLOUR_TERMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/glimpse-default"))
    parser.add_argument("--show", type=int, default=8, help="best tuning configurations to list")
    parser.add_argument("--report-test", action="store_true",
                        help="also print the chosen configuration on the test half (once tuning is over)")
    args = parser.parse_args(argv)
    photos = eval_set.photos()
    ids = [p.id for p in photos]
    conse, face_score, shares = photo_signals(args.model, photos)
    with TextEncoder.create_from_model_dir(args.model, num_threads=1) as text:
        concepts = {
            "person": _unit(np.mean([text.embed(p) for p in PERSON_PROMPTS], axis=0)),
            "bw": text.embed(BW_PROMPT),
            "colours": {name: np.stack([text.embed(tpl.format(term=t)) for t in COLOUR_TERMS])
                        for name, tpl in COLOUR_TEMPLATES.items()},
        }
        halves = {half: eval_set.queries(half) for half in ("tune", "test")}
        query_vectors = {half: np.stack([text.embed(q) for _, _, q in multilingual_eval.flatten(groups)])
                         for half, groups in halves.items()}

    def score(config, half):
        ranked = multilingual_eval.rank_queries("fused", query_vectors[half], fuse(conse, face_score, shares,
                                                concepts, config), ids, halves[half])
        return multilingual_eval.summary(ranked)

    results = []
    for values in itertools.product(*GRID.values()):
        config = dict(zip(GRID, values))
        s = score(config, "tune")
        results.append(((s["all"][0], s["en"][0], s["all"][1]), config, s))
    results.sort(key=lambda r: r[0], reverse=True)
    print(f"{len(results)} configurations on the tuning half; best by R@1 (all languages), then English R@1, R@5")
    print(f"{'R@1 all':>8} {'R@1 en':>7} {'R@5 all':>8}  configuration")
    for key, config, _ in results[: args.show]:
        print(f"{key[0]:8.3f} {key[1]:7.3f} {key[2]:8.3f}  {config}")
    best = results[0][1]
    baseline = {"w_person": 0.0, "w_colour": 0.0, "w_bw": 0.0}
    unfused = dict(best, **baseline)
    print(f"\nchosen: {best}\n")
    for half in ("tune", "test") if args.report_test else ("tune",):
        print(multilingual_eval.table([("1.1.0 (ConSE)", score(unfused, half)),
                                       ("1.1.0 + faces + colours", score(best, half))], half, len(photos)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
