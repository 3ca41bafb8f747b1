"""What a strong match is, per model: candidate rules compared, the chosen one fitted and checked.

Every (query, photo) pair of the evaluation set (``bench/eval``, all nine
languages) is labelled relevant or not. Each candidate rule turns a pair into a
number; its AUC says how well it separates relevant from irrelevant pairs, and a
threshold fitted on the **tuning half only** at the target precision
(``provisioning.models.calibration.fit_threshold``) is then applied unchanged to the
test half:

- ``score``: the cosine score itself (the rule ``provisioning.models.calibration`` records);
- ``library z``: the score's z-score over the query's scores for every photo of the library;
- ``to best``: score minus the query's best score in the library;
- ``score + to best`` and ``library z + to best``: logistic regressions on both, fitted on the tuning half.

Then, for the chosen rule, per half and language: how many queries get a strong
match, and how often the first result is right when it is strong and when it is not.
Find-similar's threshold (a percentile of all photo pairs) is checked against photo
pairs that answer a common query of each half.

    python -m bench.calibrate --model models/glimpse-default [--write]

``--write`` records the fitted rule in the model's model.json (``relevance``).
Run it in the host venv (``make eval-deps``): it needs the set's photos and scikit-learn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench import eval_set, multilingual_eval
from provisioning.models import calibration


def _features(scores: np.ndarray) -> dict[str, np.ndarray]:
    mean = scores.mean(axis=1, keepdims=True)
    spread = scores.std(axis=1, keepdims=True) + 1e-9
    return {"score": scores, "library z": (scores - mean) / spread,
            "to best": scores - scores.max(axis=1, keepdims=True)}


#: The fixed cut the help page gave before calibration ("above 0.5 a strong one").
OLD_RULE = 0.5

RULES = {"score": ["score"], "library z": ["library z"], "to best": ["to best"],
         "score + to best": ["score", "to best"], "library z + to best": ["library z", "to best"]}


def _half(model_dir: Path, photos, photo_vectors, half: str):
    groups = eval_set.queries(half)
    queries = multilingual_eval.flatten(groups)
    query_vectors = multilingual_eval.embed_texts(model_dir, [text for _, _, text in queries])
    scores, relevant = calibration.labelled_pairs(query_vectors, photo_vectors, [p.id for p in photos],
                                                  [g["relevant"] for g, _, _ in queries])
    return scores, relevant, np.array([lang for _, lang, _ in queries]), groups


def _image_pairs(photo_vectors, ids, groups):
    together = np.zeros((len(ids), len(ids)), dtype=bool)
    for group in groups:
        rows = [ids.index(i) for i in group["relevant"]]
        together[np.ix_(rows, rows)] = True
    upper = np.triu_indices(len(ids), 1)
    return (photo_vectors @ photo_vectors.T)[upper], together[upper]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a Glimpse model directory")
    parser.add_argument("--target-precision", type=float, default=calibration.TARGET_PRECISION)
    parser.add_argument("--write", action="store_true", help="record the fitted rule in the model's model.json")
    args = parser.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from device.model import read_spec

    try:
        photos = eval_set.photos()
    except eval_set.PhotoMissing as exc:
        print(f"calibrate: error: {exc}", file=sys.stderr)
        return 1
    spec = read_spec(args.model, verify=True)
    ids = [p.id for p in photos]
    photo_vectors = multilingual_eval.embed_photos(args.model, photos)
    halves = {half: _half(args.model, photos, photo_vectors, half) for half in ("tune", "test")}
    tune_s, tune_r, _, _ = halves["tune"]
    print(f"model {spec.full_id}; {len(photos)} photos; pairs tune {tune_r.size} ({tune_r.sum()} relevant), "
          f"test {halves['test'][1].size} ({halves['test'][1].sum()} relevant); "
          f"threshold fitted on tune at precision >= {args.target_precision}\n")
    print(f"{'rule':<22}{'AUC tune':>9}{'AUC test':>9}   {'P / R tune':>12}   {'P / R test':>12}"
          f"   {'P / R test, en':>14}")
    tune_f = _features(tune_s)
    for name, keys in RULES.items():
        def stack(feats):
            return np.stack([feats[k].ravel() for k in keys], axis=1)
        if len(keys) == 1:
            value = {half: _features(h[0])[keys[0]] for half, h in halves.items()}
        else:
            fit = LogisticRegression().fit(stack(tune_f), tune_r.ravel())
            value = {half: fit.decision_function(stack(_features(h[0]))).reshape(h[0].shape)
                     for half, h in halves.items()}
        try:
            threshold = calibration.fit_threshold(value["tune"], tune_r, args.target_precision)
        except calibration.CalibrationFailed:
            print(f"{name:<22}  target precision never reached on tune")
            continue
        cells = []
        for half, (_, rel, langs, _) in halves.items():
            got = calibration.separation(value[half], rel, threshold)
            cells.append(f"{got.precision:.2f} / {got.recall:.2f}")
        _, rel, langs, _ = halves["test"]
        en = calibration.separation(value["test"][langs == "en"], rel[langs == "en"], threshold)
        aucs = [roc_auc_score(h[1].ravel(), value[half].ravel()) for half, h in halves.items()]
        print(f"{name:<22}{aucs[0]:>9.3f}{aucs[1]:>9.3f}   {cells[0]:>12}   {cells[1]:>12}"
              f"   {en.precision:.2f} / {en.recall:.2f}")

    # What the help page used to promise: "above 0.5 a strong one", for every model and for find-similar.
    cells = [calibration.separation(h[0], h[1], OLD_RULE) for h in halves.values()]
    _, rel, langs, _ = halves["test"]
    en = calibration.separation(halves["test"][0][langs == "en"], rel[langs == "en"], OLD_RULE)
    print(f"{'old: score >= 0.5':<22}{'':>9}{'':>9}   " + "   ".join(
        f"{c.precision:.2f} / {c.recall:.2f}".rjust(12) for c in cells) + f"   {en.precision:.2f} / {en.recall:.2f}")

    doc = calibration.relevance_doc(tune_s, tune_r, photo_vectors, "", args.target_precision)
    strong = doc["text_strong"]
    got = [calibration.separation(h[0], h[1], strong) for h in halves.values()]
    print(f"\nchosen rule: score >= {strong} is strong (text to photo; recorded halfway to the next lower tuning "
          f"score): P / R tune {got[0].precision:.2f} / {got[0].recall:.2f}, test {got[1].precision:.2f} / "
          f"{got[1].recall:.2f}; queries per half and language:")
    print(f"{'':<10}{'queries':>8}{'any strong':>11}{'top-1 right | strong':>22}{'top-1 right | no strong':>25}")
    for half, (scores, rel, langs, _) in halves.items():
        for label, select in (("en", langs == "en"), ("non-en", langs != "en"), ("all", langs == langs)):
            s, r = scores[select], rel[select]
            top = np.argmax(s, axis=1)
            right = r[np.arange(len(s)), top]
            any_strong = s.max(axis=1) >= strong
            def share(mask):
                return f"{right[mask].mean():.2f} ({mask.sum()})" if mask.any() else "-"
            print(f"{half + ' ' + label:<10}{len(s):>8}{any_strong.mean():>11.2f}{share(any_strong):>22}"
                  f"{share(~any_strong):>25}")

    image = doc["image_strong"]
    print(f"\nfind similar: similarity >= {image} (percentile {doc['image_percentile']:g} of all photo pairs) "
          "is strong; photo pairs that answer a common query:")
    for half, (_, _, _, groups) in halves.items():
        sims, together = _image_pairs(photo_vectors, ids, groups)
        got = calibration.separation(sims, together, image)
        old = calibration.separation(sims, together, OLD_RULE)
        print(f"{half:<6} AUC {roc_auc_score(together, sims):.3f}  P {got.precision:.2f}  R {got.recall:.2f} "
              f"({got.pairs} pairs, {got.relevant} together); old rule >= 0.5: P {old.precision:.2f} "
              f"R {old.recall:.2f}, {old.strong_share:.0%} of pairs strong")
    if args.write:
        relevance = calibration.calibrate(args.model, args.target_precision)
        path = calibration.write_calibration(args.model, relevance)
        print(f"\nwrote relevance to {path}: text_strong {relevance['text_strong']}, "
              f"image_strong {relevance['image_strong']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
