"""provisioning.models.calibration: fitting what a strong match is, on small synthetic cases."""

import json
import shutil

import numpy as np
import pytest

from device.model import default_model_dir, read_spec
from provisioning.models import calibration


def test_the_threshold_is_the_lowest_score_keeping_the_target_precision():
    # Best first: R R I R I I I I; precision at each cut: 1, 1, .67, .75, .6, .5, .43, .375.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    relevant = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=bool)
    assert calibration.fit_threshold(scores, relevant, 0.75, min_support=1) == 0.6
    assert calibration.fit_threshold(scores, relevant, 0.5, min_support=1) == 0.4
    assert calibration.fit_threshold(scores, relevant, 1.0, min_support=1) == 0.8
    # At least 5 pairs must be kept: the 0.75 cut (4 pairs) is too few.
    with pytest.raises(calibration.CalibrationFailed):
        calibration.fit_threshold(scores, relevant, 0.75, min_support=5)


def test_ties_are_kept_or_dropped_together():
    # Three pairs tie at 0.5: a threshold of 0.5 keeps all three (precision 2/4), never two of them.
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    relevant = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert calibration.fit_threshold(scores, relevant, 0.5, min_support=1) == 0.5
    assert calibration.fit_threshold(scores, relevant, 0.6, min_support=1) == 0.9


def test_per_query_matrices_and_their_separation():
    queries = np.eye(3, 4)
    photos = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0]], dtype=float)
    scores, relevant = calibration.labelled_pairs(queries, photos, ["a", "b", "c"], [["a"], ["b"], ["c"]])
    assert scores.shape == relevant.shape == (3, 3)
    assert relevant.tolist() == [[True, False, False], [False, True, False], [False, False, True]]
    threshold = calibration.fit_threshold(scores, relevant, 0.75, min_support=1)
    assert threshold == pytest.approx(0.6)
    got = calibration.separation(scores, relevant, threshold)
    # Scores >= 0.6: (q0,a)=1, (q0,b)=0.8 irrelevant, (q1,b)=0.6, (q2,c)=1: 3 of 4 relevant.
    assert (got.precision, got.recall, got.pairs, got.relevant) == (0.75, 1.0, 9, 3)


def test_no_relevant_pair_cannot_be_calibrated():
    with pytest.raises(calibration.CalibrationFailed):
        calibration.fit_threshold([0.3, 0.2], [False, False])


def test_the_photo_threshold_is_a_percentile_of_pairs_of_different_photos():
    photos = np.array([[1, 0], [0, 1], [np.sqrt(0.5), np.sqrt(0.5)]])
    # Pairs: 0, 0.707, 0.707 (the photo with itself is left out).
    assert calibration.background_threshold(photos, 50) == pytest.approx(np.sqrt(0.5))
    assert calibration.background_threshold(photos, 0) == pytest.approx(0.0)
    with pytest.raises(calibration.CalibrationFailed):
        calibration.background_threshold(photos[:1])


def test_the_relevance_object_is_written_into_model_json_and_the_model_still_verifies(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    doc = calibration.relevance_doc(np.array([[0.9, 0.1], [0.2, 0.8]]), np.eye(2, dtype=bool),
                                    np.eye(2), "synthetic", target_precision=1.0, min_support=1)
    calibration.write_calibration(model, doc)
    spec = read_spec(model, verify=True)  # the towers' sha256 still match
    # The fit keeps both relevant pairs (0.9, 0.8); the next score down is 0.2: recorded halfway.
    assert spec.extra["relevance"]["text_strong"] == 0.5
    assert spec.extra["relevance"]["tune"]["precision"] == 1.0
    assert json.loads((model / "model.json").read_text())["relevance"]["fitted_on"] == "synthetic"
