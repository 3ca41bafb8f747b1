"""Retrieval quality per category and per language on the multilingual evaluation set.

Embeds the set's photos (``bench/eval_set.py``) with each model's image tower and
every query of one half with its text tower, both run by LiteRT as on the device,
and prints, for several models side by side:

- R@1 and R@5 per category and per language (a query is a hit at K when one of
  its relevant photos is among the first K; a photo scoring as high as the best
  relevant one counts against it);
- cross-lingual agreement: the share of translated queries whose top-1 photo is
  the English query's top-1;
- issue 15's targets per language (R@1 within 0.1 of English on the same queries) and,
  for a model with a multilingual text route (model.json format 2), the share of each
  language's queries its router sent to the multilingual tower.

    python -m bench.multilingual_eval --half test --model models/glimpse-default [--model DIR2 ...]

Run it in the host venv (``make eval-deps``), where every photo's package is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from bench import eval_set


@dataclasses.dataclass
class Ranked:
    """One model's answers on one half: per query, the rank of its best relevant photo and its top-1."""

    label: str
    rows: list[dict]  # group, category, lang, rank, top1
    routes: dict | None = None  # language -> share of queries routed to the multilingual tower


def embed_photos(model_dir: Path, photos: list[eval_set.EvalPhoto]) -> np.ndarray:
    """The image tower's vectors of ``photos`` (rows in order), decoded as the device decodes them."""
    from device import images
    from device.encoders import ImageEncoder

    with ImageEncoder.create_from_model_dir(model_dir, num_threads=1) as tower:
        return np.stack([tower.embed_image(images.open_photo(p.path, min_side=tower.input_size).image)
                         for p in photos])


def embed_texts(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The text tower's vectors of ``texts`` (each through the route the device would take)."""
    from device.encoders import TextEncoder

    with TextEncoder.create_from_model_dir(model_dir, num_threads=1) as tower:
        return np.stack([tower.embed(text) for text in texts])


def route_shares(model_dir: Path, groups: list[dict]) -> dict | None:
    """Per language, the share of queries the model's router sends to the multilingual tower (None: no route)."""
    from device.encoders import MULTILINGUAL_ROUTE, TextEncoder

    with TextEncoder.create_from_model_dir(model_dir, num_threads=1) as tower:
        if not tower.multilingual:
            return None
        routed = {}
        for _, lang, text in flatten(groups):
            routed.setdefault(lang, []).append(tower.route_of(text) == MULTILINGUAL_ROUTE)
    return {lang: float(np.mean(v)) for lang, v in routed.items()}


def flatten(groups: list[dict]) -> list[tuple[dict, str, str]]:
    """(group, language, query text) for every language of every group."""
    return [(g, lang, g["queries"][lang]) for g in groups for lang in eval_set.LANGUAGES]


def rank_queries(label: str, query_vectors: np.ndarray, photo_vectors: np.ndarray, ids: list[str],
                 groups: list[dict]) -> Ranked:
    """Rank every photo for every query of ``flatten(groups)`` (rows of ``query_vectors``)."""
    scores = query_vectors @ photo_vectors.T
    rows = []
    for (group, lang, _), row in zip(flatten(groups), scores):
        relevant = np.isin(ids, group["relevant"])
        best = row[relevant].max()
        rank = 1 + int(np.sum(row[~relevant] >= best))
        rows.append({"group": group["group"], "category": group["category"], "lang": lang, "rank": rank,
                     "top1": ids[int(np.argmax(row))]})
    return Ranked(label, rows)


def summary(ranked: Ranked) -> dict:
    """R@1/R@5 per category and language, overall, and cross-lingual agreement per language."""
    out = {}
    rows = ranked.rows
    for key, select in ([("all", lambda r: True)]
                        + [(c, lambda r, c=c: r["category"] == c) for c in eval_set.CATEGORIES]
                        + [(lang, lambda r, lang=lang: r["lang"] == lang) for lang in eval_set.LANGUAGES]
                        + [(f"en/{c}", lambda r, c=c: r["lang"] == "en" and r["category"] == c)
                           for c in eval_set.CATEGORIES]
                        + [("non-en", lambda r: r["lang"] != "en")]):
        ranks = np.array([r["rank"] for r in rows if select(r)])
        out[key] = (float(np.mean(ranks <= 1)), float(np.mean(ranks <= 5)), len(ranks))
    english = {r["group"]: r["top1"] for r in rows if r["lang"] == "en"}
    for lang in eval_set.LANGUAGES[1:]:
        same = [r["top1"] == english[r["group"]] for r in rows if r["lang"] == lang]
        out[f"agree/{lang}"] = float(np.mean(same))
    out["agree/all"] = float(np.mean([r["top1"] == english[r["group"]] for r in rows if r["lang"] != "en"]))
    return out


def table(results: list[tuple[str, dict]], half: str, n_photos: int) -> str:
    """Models side by side: R@1 and R@5 per row (category, language), then agreement."""
    lines = [f"half: {half}; photos: {n_photos}; queries per model: {results[0][1]['all'][2]}", ""]
    header = f"{'':<16}" + "".join(f"{label[:22]:>24}" for label, _ in results)
    lines += [header, f"{'R@1 / R@5':<16}" + "".join(f"{'':>24}" for _ in results)]
    keys = (["all"] + list(eval_set.CATEGORIES) + [f"en/{c}" for c in eval_set.CATEGORIES]
            + list(eval_set.LANGUAGES) + ["non-en"])
    for key in keys:
        n = results[0][1][key][2]
        lines.append(f"{key + f' ({n})':<16}" + "".join(f"{s[key][0]:>14.2f} / {s[key][1]:.2f}" for _, s in results))
    lines += ["", "cross-lingual agreement (top-1 equals the English query's top-1)"]
    for lang in list(eval_set.LANGUAGES[1:]) + ["all"]:
        key = f"agree/{lang}"
        lines.append(f"{lang:<16}" + "".join(f"{s[key]:>24.2f}" for _, s in results))
    lines += ["", "target: each language's R@1 within 0.1 of English's (R@1 minus English's R@1)"]
    for lang in eval_set.LANGUAGES[1:]:
        lines.append(f"{lang:<16}" + "".join(
            f"{s[lang][0] - s['en'][0]:>+20.2f} {'ok' if s[lang][0] >= s['en'][0] - 0.1 else 'no':>3}"
            for _, s in results))
    if any(s.get("routes") for _, s in results):
        lines += ["", "share of queries routed to the multilingual tower"]
        for lang in eval_set.LANGUAGES:
            lines.append(f"{lang:<16}" + "".join(
                f"{s['routes'][lang]:>24.2f}" if s.get("routes") else f"{'-':>24}" for _, s in results))
    return "\n".join(lines)


def evaluate_model(model_dir: Path, photos: list[eval_set.EvalPhoto], groups: list[dict]) -> Ranked:
    """Embed photos and queries with ``model_dir`` and rank."""
    from device.model import read_spec

    spec = read_spec(model_dir, verify=True)
    photo_vectors = embed_photos(model_dir, photos)
    query_vectors = embed_texts(model_dir, [text for _, _, text in flatten(groups)])
    label = spec.full_id + ("+multilingual" if spec.text.multilingual is not None else "")
    ranked = rank_queries(label, query_vectors, photo_vectors, [p.id for p in photos], groups)
    ranked.routes = route_shares(model_dir, groups)
    return ranked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, required=True,
                        help="a Glimpse model directory (repeat to compare models side by side)")
    parser.add_argument("--half", choices=("tune", "test", "all"), default="test")
    parser.add_argument("--misses", action="store_true", help="also list the English queries missed at 1")
    args = parser.parse_args(argv)
    try:
        photos = eval_set.photos()
    except eval_set.PhotoMissing as exc:
        print(f"multilingual_eval: error: {exc}", file=sys.stderr)
        return 1
    groups = eval_set.queries(args.half)
    results = []
    for model_dir in args.model:
        ranked = evaluate_model(model_dir, photos, groups)
        results.append((ranked.label, {**summary(ranked), "routes": ranked.routes}))
        if args.misses:
            for r in ranked.rows:
                if r["lang"] == "en" and r["rank"] > 1:
                    print(f"{ranked.label}: {r['group']}: rank {r['rank']}, top-1 {r['top1']}")
    print(table(results, args.half, len(photos)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
