"""What a strong match is, per model: the ``relevance`` key of ``model.json``.

A ConSE model's cosine scores cluster (every photo scores 0.29-0.32 for
"people" with glimpse-default 1.1.0), so the raw score alone says little to a
user. This module fits, on the *tuning* half of the evaluation set
(``bench/eval``) only, the score above which a result is called **strong**:

* text to photo (``/api/search``): the lowest cosine score at which, over every
  (query, photo) pair of the tuning half in all nine languages, at least
  ``target_precision`` of the pairs scoring that high are right answers
  (:func:`fit_threshold`). Measured on the tuning half against per-query rules
  (z-score over the library, margin to the query's best photo, fits combining
  them; ``python -m bench.calibrate``), the plain threshold kept its precision
  on the test half best, needs nothing but the score, and keeps strong results
  ahead of weak ones on every page, so it is the rule (bench/RESULTS.md);
* photo to photo (find similar): the evaluation set has no judged photo pairs,
  so the threshold is the ``image_percentile`` percentile of the similarities of
  all pairs of different photos of the set: a strong match is closer than that
  share of unrelated pairs (:func:`background_threshold`).

The model build (``provisioning.models.default``) and ``python -m bench.calibrate
--model DIR --write`` call :func:`calibrate` then :func:`write_calibration`;
``device.model.Relevance`` reads the result.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from device.errors import CalibrationFailed
from device.wording import plural

#: Share of "strong" (query, photo) pairs of the tuning half that must be right answers.
TARGET_PRECISION = 0.5
#: Fewest strong pairs a threshold must keep (a threshold above all but a handful of
#: pairs would reach any precision by luck).
MIN_SUPPORT = 10
#: Percentile of photo-to-photo similarities above which find-similar calls a photo strong.
IMAGE_PERCENTILE = 99.0
#: Decimals kept in model.json: far below the towers' int8 noise, so a rebuild writes the same file.
DECIMALS = 3


@dataclasses.dataclass(frozen=True)
class Separation:
    """How well a threshold splits relevant from irrelevant pairs.

    Attributes:
        precision: share of pairs at or above the threshold that are relevant.
        recall: share of relevant pairs at or above the threshold.
        strong_share: share of all pairs at or above the threshold.
        pairs, relevant: counts.
    """

    precision: float
    recall: float
    strong_share: float
    pairs: int
    relevant: int

    def to_json(self) -> dict:
        """Rounded figures for model.json and tables."""
        return {"precision": round(self.precision, 3), "recall": round(self.recall, 3),
                "strong_share": round(self.strong_share, 4), "pairs": self.pairs, "relevant": self.relevant}


def fit_threshold(scores, relevant, target_precision: float = TARGET_PRECISION,
                  min_support: int = MIN_SUPPORT) -> float:
    """The lowest score at which the pairs scoring at least that much are at least
    ``target_precision`` relevant (and number at least ``min_support``).

    Args:
        scores: one score per (query, photo) pair, any shape.
        relevant: booleans of the same shape: whether the photo answers the query.
        target_precision: the precision "strong" must have on these pairs.
        min_support: fewest pairs the threshold must keep.

    Returns:
        The threshold: a pair is strong when its score is at least this.

    Raises:
        CalibrationFailed: no relevant pair, or no threshold reaches the target.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    relevant = np.asarray(relevant, dtype=bool).ravel()
    if scores.shape != relevant.shape or not relevant.any():
        raise CalibrationFailed("calibration needs scores and labels of the same shape, with relevant pairs")
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.cumsum(relevant[order])
    kept = np.arange(1, len(ranked) + 1)
    # A threshold keeps every pair scoring at least it: only the last pair of a run of ties is a cut.
    cut = np.r_[ranked[1:] < ranked[:-1], True]
    ok = np.flatnonzero(cut & (hits / kept >= target_precision) & (kept >= min_support))
    if not len(ok):
        raise CalibrationFailed(f"no score threshold keeps {min_support}+ pairs at precision {target_precision}")
    return float(ranked[ok.max()])


def separation(scores, relevant, threshold: float) -> Separation:
    """Precision and recall of "strong" (score at least ``threshold``) on labelled pairs."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    relevant = np.asarray(relevant, dtype=bool).ravel()
    strong = scores >= threshold
    tp = int(np.sum(strong & relevant))
    return Separation(precision=tp / max(int(strong.sum()), 1), recall=tp / max(int(relevant.sum()), 1),
                      strong_share=float(strong.mean()) if len(strong) else 0.0,
                      pairs=int(len(scores)), relevant=int(relevant.sum()))


def background_threshold(photo_vectors, percentile: float = IMAGE_PERCENTILE) -> float:
    """The ``percentile`` of the similarities of all pairs of different photos.

    Raises:
        CalibrationFailed: fewer than two photos.
    """
    vectors = np.asarray(photo_vectors, dtype=np.float64)
    if len(vectors) < 2:
        raise CalibrationFailed("photo-to-photo calibration needs at least two photos")
    upper = np.triu_indices(len(vectors), 1)
    return float(np.percentile((vectors @ vectors.T)[upper], percentile))


def labelled_pairs(query_vectors, photo_vectors, photo_ids: list[str], relevant_sets: list[list[str]]):
    """Scores of every (query, photo) pair and whether the photo answers the query.

    Args:
        query_vectors: (queries, dim), unit rows.
        photo_vectors: (photos, dim), unit rows.
        photo_ids: the photos' ids, in row order.
        relevant_sets: per query, the ids of the photos that answer it.

    Returns:
        ``(scores, relevant)``, both (queries, photos).
    """
    scores = np.asarray(query_vectors) @ np.asarray(photo_vectors).T
    relevant = np.array([np.isin(photo_ids, answers) for answers in relevant_sets], dtype=bool)
    return scores, relevant


def relevance_doc(text_scores, text_relevant, photo_vectors, source: str,
                  target_precision: float = TARGET_PRECISION, percentile: float = IMAGE_PERCENTILE,
                  min_support: int = MIN_SUPPORT) -> dict:
    """The ``relevance`` object of model.json from labelled tuning pairs and the tuning photos.

    Raises:
        CalibrationFailed: see :func:`fit_threshold` and :func:`background_threshold`.
    """
    cut = fit_threshold(text_scores, text_relevant, target_precision, min_support)
    # Recorded halfway to the next lower score, so that the pairs the fit kept stay strong
    # when a rebuilt tower moves scores by a hair (and the rounding does not drop the last one).
    below = np.asarray(text_scores, dtype=np.float64)
    below = below[below < cut]
    text = round((cut + below.max()) / 2 if len(below) else cut, DECIMALS)
    image = round(background_threshold(photo_vectors, percentile), DECIMALS)
    return {
        "method": "score-threshold",
        "text_strong": text,
        "image_strong": image,
        "target_precision": target_precision,
        "image_percentile": percentile,
        "fitted_on": source,
        "tune": separation(text_scores, text_relevant, text).to_json(),
    }


def calibrate(model_dir: Path, target_precision: float = TARGET_PRECISION,
              percentile: float = IMAGE_PERCENTILE) -> dict:
    """Fit ``model_dir``'s relevance on the evaluation set's tuning half (never the test half).

    Runs the model's own towers with LiteRT, as the device does, over the set's
    photos (installed by ``make eval-deps``) and every tuning query in every language.

    Returns:
        The ``relevance`` object for model.json (see docs/models.md).

    Raises:
        bench.eval_set.PhotoMissing: the set's photos are not installed.
        CalibrationFailed: the target precision cannot be reached.
    """
    from bench import eval_set, multilingual_eval  # the evaluation set lives with the benchmarks

    photos = eval_set.photos()
    groups = eval_set.queries("tune")
    queries = multilingual_eval.flatten(groups)
    photo_vectors = multilingual_eval.embed_photos(Path(model_dir), photos)
    query_vectors = multilingual_eval.embed_texts(Path(model_dir), [text for _, _, text in queries])
    scores, relevant = labelled_pairs(query_vectors, photo_vectors, [p.id for p in photos],
                                      [group["relevant"] for group, _, _ in queries])
    source = (f"bench/eval tune half: {len(queries)} queries ({len(groups)} groups x "
              f"{len(eval_set.LANGUAGES)} languages) x {plural(len(photos), 'photo')}")
    return relevance_doc(scores, relevant, photo_vectors, source, target_precision, percentile)


def write_calibration(model_dir: Path, relevance: dict) -> Path:
    """Record ``relevance`` in ``model_dir``'s model.json; the model's files are untouched.

    Raises:
        ModelInvalid: the directory's model.json is missing or malformed.
    """
    from device.model import read_spec, write_spec

    spec = read_spec(Path(model_dir), verify=False)
    spec = dataclasses.replace(spec, extra={**spec.extra, "relevance": relevance})
    return write_spec(Path(model_dir), spec)
