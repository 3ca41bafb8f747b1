"""Tune, on the tuning half only, how a model's recognisers are fused into its photo vectors.

The fusion is the device's own (``device/recognisers/fusion.py``, documented in
docs/models.md): the image tower's ConSE vector plus face concepts (person,
portrait, group; gated by the faces' best score, the largest face's size and
their count) and colour-term concepts (each chromatic term's pixel share above a
threshold, concept vectors optionally centred on their mean) and a black-and-white
concept. The concept vectors are the ones ``provisioning.recognisers`` writes
(the model's own text tower over averaged prompts). The grid is searched on
``queries_tune.json`` only, choosing by English R@1, then R@1 over all
languages, then R@5 (non-English queries depend on the text side, tuned apart).
The chosen configuration is checked to give exactly the device's
``concept_sum``; the test half is printed only with ``--report-test``, once.

    python -m bench.tune_fusion --model models/glimpse-default                 # tuning half only
    python -m bench.tune_fusion --model models/glimpse-default --report-test   # then, once, the test half
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np

from bench import eval_set, multilingual_eval

GRID = {
    "w_person": (0.0, 0.3, 0.5, 0.8),
    "w_portrait": (0.0, 0.3, 0.6),
    "w_group": (0.0, 0.3, 0.6),
    "w_colour": (0.0, 0.3, 0.5, 0.7, 1.0, 1.4),
    "tau": (0.05, 0.15),
    "centred": (False, True),
    "terms": ("chromatic", "all"),  # "all": black, white and grey too ("something white", "a black background")
    "w_bw": (0.0, 0.3, 0.6),
}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def photo_signals(model_dir: Path, photos):
    """Tower vectors (n, dim), faces per photo, colour-term shares (n, 11) of ``photos``.

    Photos are decoded as the device decodes them; the recognisers see the whole photo.
    """
    from device import images
    from device.encoders import ImageEncoder
    from device.recognisers import colours, faces, fusion

    tower_vectors, found, shares = [], [], []
    with ImageEncoder.create_from_model_dir(model_dir, num_threads=1) as tower, \
            faces.FaceDetector.create_from_model_path(faces.packaged_model_path()) as detector:
        if tower.has_recognisers:
            raise SystemExit("tune_fusion: pass a model without recognisers (its towers are fused here)")
        for photo in photos:
            image = images.open_photo(photo.path, min_side=tower.input_size).image
            tower_vectors.append(tower.embed_image(image))
            small = fusion.recogniser_input(image)  # what the device's recognisers read
            found.append(detector.detect(small))
            shares.append(list(colours.photo_colours(small).values()))
    return np.stack(tower_vectors), found, np.array(shares)


def spec_of(config: dict):
    """The ``RecognisersSpec`` a grid point stands for."""
    from device.model import RecognisersSpec
    from provisioning.recognisers import CONCEPTS_FILE, DEFAULT_COLOURS, DEFAULT_FACES

    faces_spec = dataclasses.replace(DEFAULT_FACES, weights={
        "person": config["w_person"], "portrait": config["w_portrait"], "group": config["w_group"]})
    from device.recognisers.colours import COLOUR_TERMS
    from device.recognisers.fusion import CHROMATIC

    colours_spec = dataclasses.replace(DEFAULT_COLOURS, weight=config["w_colour"], min_coverage=config["tau"],
                                       centred=config["centred"], bw_weight=config["w_bw"],
                                       terms=CHROMATIC if config["terms"] == "chromatic" else COLOUR_TERMS)
    return RecognisersSpec(concepts=CONCEPTS_FILE, faces=faces_spec, colours=colours_spec)


class Fuser:
    """The device's fusion, vectorised over photos for a fast grid search (checked against it)."""

    def __init__(self, tower, found, shares, concepts):
        from device.recognisers import fusion
        from device.recognisers.colours import COLOUR_TERMS
        from provisioning.recognisers import DEFAULT_FACES

        self.tower, self.found, self.shares, self.concepts = tower, found, shares, concepts
        gates = [fusion.face_gates(f, DEFAULT_FACES) for f in found]
        names = [str(n) for n in concepts["faces_names"]]
        self.face_terms = {name: np.array([g[name] for g in gates])[:, None] * concepts["faces"][names.index(name)]
                           for name in names}
        mask = np.array([t in fusion.CHROMATIC for t in COLOUR_TERMS], dtype=float)
        masks = {"chromatic": mask, "all": np.ones(len(COLOUR_TERMS))}
        self.colour_terms = {}
        for tau, centred, terms in itertools.product(GRID["tau"], GRID["centred"], GRID["terms"]):
            vectors = concepts["colours"] - concepts["colours"].mean(0) if centred else concepts["colours"]
            self.colour_terms[tau, centred, terms] = (np.where(shares > tau, shares, 0.0) * masks[terms]) @ vectors
        self.bw = (shares @ mask < 0.02)[:, None] * concepts["black_and_white"][None]

    def __call__(self, c: dict) -> np.ndarray:
        out = (self.tower + c["w_person"] * self.face_terms["person"] + c["w_portrait"] * self.face_terms["portrait"]
               + c["w_group"] * self.face_terms["group"] + c["w_colour"] * self.colour_terms[c["tau"], c["centred"], c["terms"]]
               + c["w_bw"] * self.bw)
        return _unit(out)

    def device(self, config: dict) -> np.ndarray:
        """The same vectors through ``device.recognisers.fusion`` itself."""
        from device.recognisers import fusion

        spec = spec_of(config)
        return np.stack([fusion.fuse(t, fusion.concept_sum(spec, self.concepts, f, s))
                         for t, f, s in zip(self.tower, self.found, self.shares)])


def main(argv=None) -> int:
    from device.encoders import TextEncoder
    from provisioning.recognisers import concept_vectors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/glimpse-default"))
    parser.add_argument("--show", type=int, default=8, help="best tuning configurations to list")
    parser.add_argument("--report-test", action="store_true",
                        help="also print the chosen configuration on the test half (once tuning is over)")
    args = parser.parse_args(argv)
    photos = eval_set.photos()
    ids = [p.id for p in photos]
    tower, found, shares = photo_signals(args.model, photos)
    with TextEncoder.create_from_model_dir(args.model, num_threads=1) as text:
        concepts = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v)
                    for k, v in concept_vectors(text).items()}
        halves = {half: eval_set.queries(half) for half in ("tune", "test")}
        query_vectors = {half: np.stack([text.embed(q) for _, _, q in multilingual_eval.flatten(groups)])
                         for half, groups in halves.items()}
    fuser = Fuser(tower, found, shares, concepts)

    def score(vectors, half):
        return multilingual_eval.summary(multilingual_eval.rank_queries("fused", query_vectors[half], vectors,
                                                                        ids, halves[half]))

    results = []
    for values in itertools.product(*GRID.values()):
        config = dict(zip(GRID, values))
        s = score(fuser(config), "tune")
        results.append(((s["en"][0], s["all"][0], s["all"][1]), config))
    results.sort(key=lambda r: r[0], reverse=True)
    print(f"{len(results)} configurations on the tuning half; best by English R@1, then R@1 (all languages), R@5")
    print(f"{'R@1 en':>7} {'R@1 all':>8} {'R@5 all':>8}  configuration")
    for key, config in results[: args.show]:
        print(f"{key[0]:7.3f} {key[1]:8.3f} {key[2]:8.3f}  {config}")
    best = results[0][1]
    gap = float(np.abs(fuser(best) - fuser.device(best)).max())
    assert gap < 1e-5, f"grid fusion differs from the device's by {gap}"
    print(f"\nchosen: {best}\n(equals device.recognisers.fusion to {gap:.1e})\n")
    for half in ("tune", "test") if args.report_test else ("tune",):
        print(multilingual_eval.table([("1.1.0 (ConSE)", score(tower, half)),
                                       ("1.1.0 + recognisers", score(fuser.device(best), half))], half, len(photos)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
