"""Approximate nearest-neighbour engines side by side, one search thread.

    python -m bench.ann --items N --queries Q --json [--dataset fashion|random]
                        [--engines exact,scann,faiss-fastscan,hnswlib,glimpse,glimpse-query]

Prints one JSON object per engine (``--json``) or a Markdown table, with
``engine``, ``items``, ``recall_at_10`` (against exact search), ``p50_ms``,
``p95_ms``, ``qps``, ``bytes_per_item`` (index files only), ``rss_mb`` (process
RSS after loading the index), ``build_s`` and ``first_answer_ms`` (process start
to first answer, including imports and loading).

Every engine builds in one subprocess (all cores) and is then loaded and timed
in a fresh one (one thread), so RSS and start-up are not polluted by the build
or by other engines. Each engine's accuracy knob (partitions or leaves to
visit, HNSW ``ef``) is swept; the row shown is the cheapest setting reaching
``--target-recall`` (or the most accurate one if none does), and ``sweep`` holds
every point. The partitioned engines return a short list of ``--rerank``
candidates that is re-scored exactly against the float32 embeddings, as Glimpse
does, so every engine's final scores are exact.

Engines:
  exact           numpy matrix-vector product over memory-mapped embeddings (device.index.ExactIndex)
  scann           ScaNN tree + anisotropic AH (dims_per_block 2, threshold 0.2); x86 host only
  faiss-fastscan  faiss IVF-PQ fast-scan (PQ96x4fs: 48 code bytes, L2), in RAM; short list 4x --rerank
  hnswlib         HNSW graph (M 16, ef_construction 100), full float32 vectors
  glimpse         the bundle index as glimpse-provision builds and the device opens it (--kind, default
                  ivfpq: faiss IVF-PQ PQ48x8, memory-mapped, nprobe and rerank calibrated at build time)
  glimpse-query   a whole Glimpse bundle of these items: Searcher.search(text) = text tower + index
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()

import numpy as np  # noqa: E402  (after START: first_answer_ms counts imports)

ENGINES = ("exact", "scann", "faiss-fastscan", "hnswlib", "glimpse", "glimpse-query")


# ----------------------------------------------------------------------------- helpers

def _rss_mb(field: str = "VmRSS") -> float:
    """Resident memory in MB: ``VmRSS`` (all), ``RssAnon`` (private) or ``RssFile`` (mapped files)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _one_thread() -> None:
    """Pin every numeric library of this process to one thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rerank(embeddings: np.ndarray, query: np.ndarray, rows: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact re-scoring of a short list, as Glimpse does it."""
    rows = np.sort(rows[rows >= 0])
    scores = embeddings[rows] @ query
    top = np.argsort(-scores, kind="stable")[:k]
    return rows[top]


def ground_truth(items: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact top-``k`` rows per query (blocks of queries, all threads)."""
    truth = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 64):
        scores = queries[start:start + 64] @ items.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        truth[start:start + 64] = np.take_along_axis(part, order, 1)
    return truth


def _probe_values(limit: int) -> list[int]:
    values, value = [], 1
    while value < limit:
        values.append(value)
        value = max(value + 1, int(value * 1.5))
    return values + [limit]


# ----------------------------------------------------------------------------- engines
# Each engine: build(work, items, args) -> info dict (saved to disk under work/<engine>)
#              load(work, items, args) -> (search(query, knob) -> top-10 rows, knobs, default knob)

def build_exact(work: Path, items, args) -> dict:
    return {"bytes": items.nbytes, "params": {}}


def load_exact(work: Path, items, args):
    from device.index import ExactIndex

    index = ExactIndex(items)
    return (lambda q, knob: index.search(q, 10)[0]), [None], None


def _nlist(n: int) -> int:
    return max(1, round(2 * math.sqrt(n)))


def build_scann(work: Path, items, args) -> dict:
    import scann

    nlist = _nlist(len(items))
    searcher = (scann.scann_ops_pybind.builder(items, args.rerank, "dot_product")
                .tree(num_leaves=nlist, num_leaves_to_search=max(1, nlist // 20),
                      training_sample_size=min(len(items), 250_000))
                .score_ah(2, anisotropic_quantization_threshold=0.2)
                .build())
    out = work / "scann"
    out.mkdir()
    searcher.serialize(str(out))
    return {"bytes": _dir_bytes(out), "params": {"num_leaves": nlist, "dims_per_block": 2,
                                                 "anisotropic_quantization_threshold": 0.2}}


def load_scann(work: Path, items, args):
    import scann

    searcher = scann.scann_ops_pybind.load_searcher(str(work / "scann"))
    nlist = _nlist(len(items))

    def search(query, leaves):
        rows, _ = searcher.search(query, final_num_neighbors=args.rerank, leaves_to_search=leaves)
        return _rerank(items, query, np.asarray(rows, np.int64))
    return search, _probe_values(nlist), None


def build_faiss_fastscan(work: Path, items, args) -> dict:
    import faiss

    nlist = _nlist(len(items))
    # L2, not inner product: on unit rows the ranking is the same, and faiss
    # 1.15.1's fast-scan with inner product and residuals loses recall as
    # nprobe grows (0.40 at 100k Fashion-MNIST items, measured; L2: 0.82).
    index = faiss.index_factory(items.shape[1], f"IVF{nlist},PQ{items.shape[1] // 4}x4fs", faiss.METRIC_L2)
    train = items if len(items) <= 100_000 else items[np.random.default_rng(0).choice(len(items), 100_000, False)]
    index.train(np.ascontiguousarray(train))
    index.add(items)
    faiss.write_index(index, str(work / "fastscan.faiss"))
    return {"bytes": _dir_bytes(work / "fastscan.faiss"),
            "params": {"factory": f"IVF{nlist},PQ{items.shape[1] // 4}x4fs", "metric": "L2",
                       "rerank": 4 * args.rerank}}


def load_faiss_fastscan(work: Path, items, args):
    import faiss

    # Fast-scan's block-packed inverted lists cannot be memory-mapped: they are read.
    index = faiss.read_index(str(work / "fastscan.faiss"))

    def search(query, nprobe):
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        # 4-bit codes with 8-bit look-up tables rank coarsely: a 4x longer short list.
        _, rows = index.search(query[None, :], 4 * args.rerank, params=params)
        return _rerank(items, query, rows[0])
    return search, _probe_values(_nlist(len(items))), None


def build_hnswlib(work: Path, items, args) -> dict:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.init_index(max_elements=len(items), M=16, ef_construction=100, random_seed=0)
    index.add_items(items, np.arange(len(items)), num_threads=os.cpu_count())
    index.save_index(str(work / "hnsw.bin"))
    return {"bytes": _dir_bytes(work / "hnsw.bin"), "params": {"M": 16, "ef_construction": 100}}


def load_hnswlib(work: Path, items, args):
    import hnswlib

    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.load_index(str(work / "hnsw.bin"), max_elements=len(items))
    index.set_num_threads(1)

    def search(query, ef):
        index.set_ef(max(ef, 10))
        rows, _ = index.knn_query(query[None, :], k=10, num_threads=1)
        return rows[0].astype(np.int64)
    return search, [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512], None


def build_glimpse(work: Path, items, args) -> dict:
    from device.model import default_model_dir
    from provisioning.bundles.index import IndexOptions, build_index, text_queries

    out = work / "glimpse"
    out.mkdir()
    np.save(out / "embeddings.npy", items)
    # As glimpse-provision builds it: calibrated on its generic captions, not on the benchmark's queries.
    record = build_index(out, np.load(out / "embeddings.npy", mmap_mode="r"),
                         IndexOptions(kind=args.kind, target_recall=args.target_recall),
                         queries=text_queries(default_model_dir()))
    (out / "index.json").write_text(json.dumps(record))
    size = _dir_bytes(out / record["file"]) if record["kind"] != "exact" else items.nbytes
    return {"bytes": size, "params": record}


def load_glimpse(work: Path, items, args):
    from device.index import open_index

    folder = work / "glimpse"
    record = json.loads((folder / "index.json").read_text())
    embeddings = np.load(folder / "embeddings.npy", mmap_mode="r")
    index = open_index(folder, record, embeddings, {record.get("file"): {}})
    if record["kind"] == "exact":
        return (lambda q, knob: index.search(q, 10)[0]), [None], None
    knobs = sorted(set(_probe_values(index.nlist)) | {record["nprobe"]})
    return (lambda q, nprobe: index.search(q, 10, nprobe=nprobe)[0]), knobs, record["nprobe"]


def build_glimpse_query(work: Path, items, args) -> dict:
    """A real bundle of these items (placeholder metadata, one shared thumbnail)."""
    from device import bundle as bundle_format
    from device.model import default_model_dir, read_spec
    from provisioning.bundles.build import _copy_model
    from provisioning.bundles.index import IndexOptions, build_index, text_queries

    out = work / "bundle"
    out.mkdir()
    spec = read_spec(default_model_dir(), verify=False)
    _copy_model(default_model_dir(), out / bundle_format.MODEL_DIR)
    np.save(out / bundle_format.EMBEDDINGS, items)
    (out / bundle_format.THUMBS).mkdir()
    (out / bundle_format.THUMBS / "shared.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    with open(out / bundle_format.ITEMS, "w", encoding="utf-8") as handle:
        for row in range(len(items)):
            digest = f"{row:064x}"
            handle.write(json.dumps({"id": digest[-16:], "path": f"bench/{row}.jpg", "size": 1, "sha256": digest,
                                     "width": 28, "height": 28, "taken": None,
                                     "thumb": f"{bundle_format.THUMBS}/shared.jpg"}) + "\n")
    record = build_index(out, np.load(out / bundle_format.EMBEDDINGS, mmap_mode="r"),
                         IndexOptions(kind=args.kind, target_recall=args.target_recall),
                         queries=text_queries(default_model_dir()))
    bundle_format.write_manifest(out, spec, len(items), extra={"index": record})
    size = _dir_bytes(out / record["file"]) if record["kind"] != "exact" else items.nbytes
    return {"bytes": size, "params": {"kind": record["kind"], "nprobe": record.get("nprobe")}}


def time_glimpse_query(work: Path, args) -> dict:
    """Whole queries through :class:`device.search.Searcher`, as the daemon runs them."""
    from bench.datasets import CAPTIONS, FASHION_CLASSES
    from device.index import ExactIndex
    from device.search import Searcher

    searcher = Searcher.from_bundle(work / "bundle", verify="quick", num_threads=1)
    searcher.search("a photo of a sneaker", k=10)
    first = (time.perf_counter() - START) * 1000
    rss = _rss_mb()
    texts = [c.format(n) for c in CAPTIONS for n in FASHION_CLASSES]
    samples, answers = [], []
    for i in range(args.queries):
        text = texts[i % len(texts)]
        t0 = time.perf_counter()
        results = searcher.search(text, k=10)
        samples.append(time.perf_counter() - t0)
        if i < len(texts):
            answers.append({searcher.bundle.row(r.item.id) for r in results})
    # Before the recall check below: its exact scans page in every embedding.
    # Re-scoring maps embedding pages (and the kernel maps their neighbours):
    # file-backed, clean and reclaimable, unlike the private (anonymous) part.
    rss_after = {"rss_after_queries_mb": round(_rss_mb(), 1), "rss_anon_mb": round(_rss_mb("RssAnon"), 1),
                 "rss_file_mb": round(_rss_mb("RssFile"), 1)}
    exact = ExactIndex(searcher.bundle.embeddings)
    hits = sum(len(found & set(exact.search(searcher.encoder.embed(text), 10)[0].tolist()))
               for text, found in zip(texts, answers))
    samples.sort()
    result = {"recall_at_10": round(hits / (10 * len(answers)), 4),
              "p50_ms": round(float(np.median(samples)) * 1000, 3),
              "p95_ms": round(samples[int(0.95 * (len(samples) - 1))] * 1000, 3),
              "qps": round(len(samples) / sum(samples), 1), "rss_mb": round(rss, 1),
              **rss_after, "first_answer_ms": round(first, 1)}
    searcher.close()
    return result


BUILDERS = {"exact": build_exact, "scann": build_scann, "faiss-fastscan": build_faiss_fastscan,
            "hnswlib": build_hnswlib, "glimpse": build_glimpse, "glimpse-query": build_glimpse_query}
LOADERS = {"exact": load_exact, "scann": load_scann, "faiss-fastscan": load_faiss_fastscan,
           "hnswlib": load_hnswlib, "glimpse": load_glimpse}


# ----------------------------------------------------------------------------- worker (subprocess)

def worker(args) -> None:
    work = Path(args.work)
    items = np.load(work / "items.npy", mmap_mode="r")
    if args.phase == "build":
        started = time.perf_counter()
        info = BUILDERS[args.worker](work, np.ascontiguousarray(items), args)
        info["build_s"] = round(time.perf_counter() - started, 2)
        print(json.dumps(info))
        return
    _one_thread()
    if args.worker == "glimpse-query":
        print(json.dumps(time_glimpse_query(work, args)))
        return
    queries = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    search, knobs, default = LOADERS[args.worker](work, items, args)
    rss = _rss_mb()
    search(queries[0], default if default is not None else knobs[0])
    first = (time.perf_counter() - START) * 1000
    sweep = []
    for knob in knobs:
        samples, hits = [], 0
        for query, expected in zip(queries, truth):
            t0 = time.perf_counter()
            rows = search(query, knob)
            samples.append(time.perf_counter() - t0)
            hits += len(set(rows[:10].tolist()) & set(expected.tolist()))
        samples.sort()
        point = {"knob": knob, "recall_at_10": round(hits / truth.size, 4),
                 "p50_ms": round(float(np.median(samples)) * 1000, 3),
                 "p95_ms": round(samples[int(0.95 * (len(samples) - 1))] * 1000, 3),
                 "qps": round(len(samples) / sum(samples), 1)}
        sweep.append(point)
        if point["recall_at_10"] >= max(args.sweep_until, args.target_recall) and knob != default \
                and (default is None or knob > default):
            break
    print(json.dumps({"rss_mb": round(rss, 1), "first_answer_ms": round(first, 1), "sweep": sweep,
                      "default_knob": default}))


def _run_worker(engine: str, phase: str, work: Path, args) -> dict:
    command = [sys.executable, "-m", "bench.ann", "--worker", engine, "--phase", phase, "--work", str(work),
               "--rerank", str(args.rerank), "--target-recall", str(args.target_recall), "--kind", args.kind,
               "--queries", str(args.queries), "--sweep-until", str(args.sweep_until), "--items", str(args.items)]
    env = dict(os.environ)
    if phase == "search":
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return {"error": f"{phase} failed (exit {proc.returncode}): {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _pick(sweep: list[dict], target: float, default) -> dict:
    if default is not None:
        return next(p for p in sweep if p["knob"] == default)
    for point in sweep:
        if point["recall_at_10"] >= target:
            return point
    return max(sweep, key=lambda p: p["recall_at_10"])


def run_engine(engine: str, work: Path, args) -> dict:
    row = {"engine": engine, "items": args.items, "dataset": args.dataset}
    built = _run_worker(engine, "build", work, args)
    if "error" in built:
        return {**row, **built}
    row.update(build_s=built["build_s"], bytes_per_item=round(built["bytes"] / args.items, 1),
               params=built["params"])
    timed = _run_worker(engine, "search", work, args)
    if "error" in timed:
        return {**row, **timed}
    if engine == "glimpse-query":
        return {**row, **timed}
    point = _pick(timed["sweep"], args.target_recall, timed["default_knob"])
    at_target = _pick(timed["sweep"], args.target_recall, None)
    row.update(recall_at_10=point["recall_at_10"], p50_ms=point["p50_ms"], p95_ms=point["p95_ms"],
               qps=point["qps"], rss_mb=timed["rss_mb"], first_answer_ms=timed["first_answer_ms"],
               knob=point["knob"], at_target=at_target, sweep=timed["sweep"])
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="items indexed")
    parser.add_argument("--queries", type=int, default=500, help="queries timed per setting")
    parser.add_argument("--dataset", choices=["fashion", "random"], default="fashion")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ", ".join(ENGINES))
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--sweep-until", type=float, default=0.99, help="stop sweeping a knob at this recall")
    parser.add_argument("--rerank", type=int, default=100,
                        help="short list re-scored exactly by scann and faiss-fastscan (Glimpse calibrates its own)")
    parser.add_argument("--kind", default="ivfpq", help="Glimpse index kind (default ivfpq; auto, exact)")
    parser.add_argument("--json", action="store_true", help="one JSON object per engine")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    parser.add_argument("--table", nargs="+", type=Path, metavar="JSONL",
                        help="only print the Markdown table of rows saved from earlier --json runs")
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["build", "search"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.table:
        rows = [json.loads(line) for path in args.table for line in path.read_text().splitlines() if line.strip()]
        print(table(rows))
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines: {', '.join(sorted(unknown))}")

    # --keep DIR is swapped in at the end: only over a directory an earlier run kept (its
    # marker) or an empty one, never over anything else of the user's.
    keep = contextlib.nullcontext(None)
    if args.keep:
        from device import ownership
        from device.errors import OutputRefused

        try:
            ownership.check_replaceable(ownership.real(args.keep), ["marked"], True,
                                        "an ANN benchmark work directory", markers=[KEEP_MARKER])
        except OutputRefused as exc:
            parser.error(str(exc))
        keep = ownership.replacing(args.keep, ["marked"], "an ANN benchmark work directory", force=True,
                                   markers=[KEEP_MARKER], modes=None)
    with keep as kept:
        _run(args, engines, kept)


#: Marks a --keep directory as this benchmark's own.
KEEP_MARKER = (".glimpse-bench-ann", "glimpse-bench-ann")


def _run(args, engines: list[str], kept: Path | None) -> None:
    from bench import datasets

    work = kept or Path(tempfile.mkdtemp(prefix="glimpse-ann-"))
    if kept:
        (work / KEEP_MARKER[0]).write_text(json.dumps({"format": KEEP_MARKER[1]}) + "\n")
    try:
        items, queries = datasets.load(args.dataset, args.items, args.queries, workers=os.cpu_count() or 1)
        np.save(work / "items.npy", items)
        np.save(work / "queries.npy", queries)
        np.save(work / "truth.npy", ground_truth(items, queries))
        del items
        rows = []
        for engine in engines:
            row = run_engine(engine, work, args)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            for leftover in ("scann", "glimpse", "bundle"):
                if (work / leftover).is_dir():
                    shutil.rmtree(work / leftover)
            for leftover in ("fastscan.faiss", "hnsw.bin"):
                (work / leftover).unlink(missing_ok=True)
        if not args.json:
            print(table(rows))
    finally:
        if not kept:
            shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| engine | dataset | items | recall@10 | p50 ms | p95 ms | QPS | bytes/item | RSS MB | build s "
             "| first answer ms | setting |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['engine']} | {row['dataset']} | {row['items']} | {row['error']} |")
            continue
        knob = row.get("knob")
        if row["engine"] == "glimpse-query":
            knob = f"Searcher.search(text), {row['params']['kind']} nprobe {row['params'].get('nprobe')}"
        lines.append(
            f"| {row['engine']} | {row['dataset']} | {row['items']} | {row['recall_at_10']:.3f} | "
            f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['qps']:.0f} | {row['bytes_per_item']:.1f} | "
            f"{row['rss_mb']:.0f} | {row['build_s']:.1f} | {row['first_answer_ms']:.0f} | "
            f"{'' if knob is None else knob} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
