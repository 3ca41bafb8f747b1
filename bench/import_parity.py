"""Parity, size and speed of imported CLIP architectures at their real size.

No weights are downloaded: each architecture is created with random weights at
its published size (open_clip's ViT-B-32 and MobileCLIP-S1 configs, Hugging Face's
default ``CLIPConfig``, which is ViT-B/32), saved in the format users download,
and imported with ``glimpse-provision import-model``'s code. Prints, per
architecture and variant: parity (min cosine against PyTorch float32), the
``.tflite`` sizes, and one-thread text and image tower latency on this machine.
Random weights are not trained weights: int8 parity of real checkpoints can be
a little lower (trained weights have wider ranges), which the import re-checks.

    python -m bench.import_parity [--arch ViT-B-32 --arch MobileCLIP-S1 --arch hf-clip] [--variant int8 ...]
                                  [--keep DIR]

``--keep DIR`` keeps the imported model directories, e.g. to time them again
under the device's pinned LiteRT (``python -m bench.import_parity --time DIR...``
in the device environment, which has no PyTorch).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ARCHS = ("ViT-B-32", "MobileCLIP-S1", "MobileCLIP2-S0", "hf-clip")


def save_source(arch: str, root: Path) -> tuple[Path, str | None]:
    """``arch`` with random weights, saved as users get it; returns (source, --arch)."""
    import torch

    from provisioning.models import clip as clip_import

    open_clip = clip_import.import_open_clip()
    torch.manual_seed(0)
    if arch == "hf-clip":
        from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

        path = root / "clip-vit-base-patch32"
        path.mkdir()
        vocab, merges = clip_import.clip_bpe(open_clip.tokenizer.SimpleTokenizer())
        vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
        vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
        (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                         encoding="utf-8")
        CLIPTokenizer(vocab=str(path / "vocab.json"), merges=str(path / "merges.txt")).save_pretrained(path)
        CLIPModel(CLIPConfig()).eval().save_pretrained(path)
        return path, None
    model = open_clip.create_model(arch).eval()
    if arch.startswith("MobileCLIP"):
        from safetensors.torch import save_file

        path = root / f"{arch}-OpenCLIP"
        path.mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(path / "open_clip_model.safetensors"))
        config = {"model_cfg": open_clip.get_model_config(arch),
                  "preprocess_cfg": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}
        (path / "open_clip_config.json").write_text(json.dumps(config))
        return path, None
    path = root / f"{arch}.pt"
    torch.save(model.state_dict(), path)
    return path, arch


def tower_ms(path: Path, repeats: int = 20) -> float:
    """Median one-thread latency of a ``.tflite`` tower on zero inputs, in ms."""
    import numpy as np

    from device.runtime import load_interpreter

    interpreter = load_interpreter(path, 1)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _rss_mb() -> float:
    """This process's resident memory now (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_models(model_dirs) -> int:
    """Print each model's tower latency and the memory its text tower takes once loaded."""
    import ai_edge_litert

    from device.encoders import TextEncoder
    from device.model import read_spec

    print(f"ai-edge-litert {ai_edge_litert.__version__}, {platform.machine()}, one interpreter thread\n")
    print("| model | text ms | image ms | RSS after loading the text tower, MB |")
    print("|---|---|---|---|")
    for model_dir in model_dirs:
        spec = read_spec(model_dir)
        before = _rss_mb()
        with TextEncoder.create_from_model_dir(model_dir) as encoder:
            encoder.embed("a dog on a beach")
            grown = _rss_mb() - before
        print(f"| {Path(model_dir).name} | {tower_ms(Path(model_dir) / spec.text.file):.1f} | "
              f"{tower_ms(Path(model_dir) / spec.image.file):.1f} | +{grown:.0f} |", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=ARCHS, help="architecture (default: all)")
    parser.add_argument("--variant", action="append", choices=["int8", "float32"], help="variant (default: both)")
    parser.add_argument("--keep", type=Path, help="keep the imported model directories here")
    parser.add_argument("--time", type=Path, nargs="+", metavar="MODEL_DIR",
                        help="only time these model directories' towers (no PyTorch needed)")
    args = parser.parse_args(argv)
    if args.time:
        return time_models(args.time)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from device.model import read_spec
    from provisioning.models import clip as clip_import

    rows = []
    with tempfile.TemporaryDirectory(prefix="glimpse-import-bench-") as tmp:
        for arch in args.arch or ARCHS:
            source, arch_option = save_source(arch, Path(tmp))
            for variant in args.variant or ["int8", "float32"]:
                out = (args.keep or Path(tmp)) / f"{arch}-{variant}"
                start = time.perf_counter()
                clip_import.import_model(clip_import.ImportOptions(source=source, out=out, arch=arch_option,
                                                                   variant=variant), log=lambda *_: None)
                seconds = time.perf_counter() - start
                spec = read_spec(out)
                rows.append([arch, variant, f"{spec.extra['parity']['text_min_cosine']:.6f}",
                             f"{spec.extra['parity']['image_min_cosine']:.6f}",
                             f"{(out / spec.text.file).stat().st_size / 1e6:.1f}",
                             f"{(out / spec.image.file).stat().st_size / 1e6:.1f}",
                             f"{tower_ms(out / spec.text.file):.1f}", f"{tower_ms(out / spec.image.file):.1f}",
                             f"{seconds:.0f}"])
                print(" | ".join(rows[-1]), flush=True)
    header = ["architecture", "variant", "text min cos", "image min cos", "text MB", "image MB",
              "text ms", "image ms", "import s"]
    print(f"\n{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, one interpreter thread\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
