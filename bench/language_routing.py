"""How a model with a multilingual text route should route queries: measured on the TUNING half only.

For a model directory with ``text.multilingual`` (format 2), embeds every query of
the chosen half through both text routes (as the device runs them) and scores
these options by R@1/R@5 (English, non-English, all; ``bench.multilingual_eval``'s
measure), with each router's accuracy at telling English from the rest, its
time per query and the memory it adds:

- ``primary``: every query through the primary (English) tower, i.e. the model without the route;
- ``multilingual``: every query through the multilingual tower;
- ``route:<router>``: English (as ``device.language``'s router decides) to the primary tower, the rest
  to the multilingual one; ``route:oracle`` uses the set's own language label (an upper bound);
- ``fuse``: both towers for every query, vectors averaged.

    python -m bench.language_routing var/glimpse-ml --half tune

Run it in the host venv (``make eval-deps``: the photos' packages).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench import eval_set, multilingual_eval


def _routers(model_dir: Path):
    from device.encoders import TextEncoder
    from device.language import ROUTERS, create_router

    with TextEncoder.create_from_model_dir(model_dir) as encoder:
        vocabulary = encoder._tokenizer.get_vocab()
    return {name: create_router(name, lambda: vocabulary) for name in ROUTERS}


def router_rss(model_dir: Path, name: str) -> float:
    """MB of VmRSS that loading router ``name`` and routing one query adds, in a fresh process."""
    code = (
        "import json,sys\n"
        "from tokenizers import Tokenizer\n"
        "from device.model import read_spec\n"
        "from device.language import create_router\n"
        "d=sys.argv[1]; spec=read_spec(d, verify=False)\n"
        "tok=Tokenizer.from_file(d+'/'+spec.text.tokenizer)\n"
        "def rss():\n"
        "    return int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])/1024\n"
        "before=rss(); r=create_router(sys.argv[2], tok.get_vocab); r.is_english('un gato'); "
        "print(json.dumps(rss()-before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(model_dir), name], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model directory with a multilingual route")
    parser.add_argument("--half", choices=("tune", "test"), default="tune")
    args = parser.parse_args(argv)
    from device.encoders import MULTILINGUAL_ROUTE, PRIMARY_ROUTE, TextEncoder
    from device.model import read_spec

    spec = read_spec(args.model)
    if spec.text.multilingual is None:
        print(f"language_routing: error: {args.model} has no multilingual route", file=sys.stderr)
        return 1
    photos = eval_set.photos()
    groups = eval_set.queries(args.half)
    flat = multilingual_eval.flatten(groups)
    texts = [text for _, _, text in flat]
    photo_vectors = multilingual_eval.embed_photos(args.model, photos)
    with TextEncoder.create_from_model_dir(args.model) as encoder:
        primary = np.stack([encoder.embed(t, PRIMARY_ROUTE) for t in texts])
        multi = np.stack([encoder.embed(t, MULTILINGUAL_ROUTE) for t in texts])
    english = np.array([lang == "en" for _, lang, _ in flat])
    routers = _routers(args.model)
    decisions, costs = {"oracle": english}, {}
    for name, router in routers.items():
        router.is_english("warm up")
        times = []
        out = []
        for t in texts:
            start = time.perf_counter()
            out.append(router.is_english(t))
            times.append(time.perf_counter() - start)
        decisions[name] = np.array(out)
        costs[name] = (statistics.median(times) * 1e3, router_rss(args.model, name))
    fused = primary + multi
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    options = {"primary": primary, "multilingual": multi, "fuse": fused}
    for name, is_en in decisions.items():
        options[f"route:{name}"] = np.where(is_en[:, None], primary, multi)
    ids = [p.id for p in photos]
    print(f"half: {args.half}; model {spec.full_id} ({args.model}); {len(groups)} groups, {len(texts)} queries")
    print()
    print(f"| option | R@1 en | R@1 non-en | R@1 all | R@5 all | agreement |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, vectors in options.items():
        s = multilingual_eval.summary(multilingual_eval.rank_queries(name, vectors, photo_vectors, ids, groups))
        print(f"| {name} | {s['en'][0]:.2f} | {s['non-en'][0]:.2f} | {s['all'][0]:.2f} | {s['all'][1]:.2f} "
              f"| {s['agree/all']:.2f} |")
    print()
    print("| router | English kept on primary | non-English sent to multilingual | ms per query (p50) "
          "| RSS added MB |")
    print("|---|---:|---:|---:|---:|")
    for name, is_en in decisions.items():
        if name == "oracle":
            continue
        ms, rss = costs[name]
        print(f"| {name} | {np.mean(is_en[english]):.2f} | {np.mean(~is_en[~english]):.2f} | {ms:.3f} "
              f"| {rss:.1f} |")
    wrong = [(lang, text) for (_, lang, text), e in zip(flat, decisions["heuristic"]) if e != (lang == "en")]
    print()
    print("heuristic misrouted:", json.dumps(wrong, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
