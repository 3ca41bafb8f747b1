"""``glimpse-provision``: the host's command line.

    glimpse-provision build --images DIR --out BUNDLE_DIR [--model DIR] [--index auto|exact|ivfpq] [--force]
    glimpse-provision demo --out BUNDLE_DIR          (scikit-image's photos)
    glimpse-provision model default --out DIR [--variant int8|float32]   (needs PyTorch)

Errors print ``glimpse-provision: error: ...`` and exit 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from device.errors import GlimpseError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glimpse-provision",
                                     description="Build Glimpse models and bundles on a host.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="build a bundle from a folder of photos")
    build.add_argument("--images", required=True, type=Path, help="photo folder (walked recursively)")
    build.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    _build_options(build)

    demo = commands.add_parser("demo", help="build the demo bundle from scikit-image's photographs")
    demo.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    _build_options(demo)

    model = commands.add_parser("model", help="build a model from pretrained weights (needs the host extra)")
    model.add_argument("name", choices=["default"], help="which model: default (glimpse-default)")
    model.add_argument("--out", required=True, type=Path, help="model directory to write")
    model.add_argument("--variant", choices=["int8", "float32"], default="int8",
                       help="tower precision (default int8)")
    return parser


def _build_options(parser) -> None:
    parser.add_argument("--model", type=Path, help="model directory (default: the committed glimpse-default)")
    parser.add_argument("--thumb-size", type=int, default=320, help="thumbnail longest side (default 320)")
    parser.add_argument("--thumb-format", choices=["jpeg", "webp"], default="jpeg", help="thumbnail format")
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (default: CPU count)")
    parser.add_argument("--index", choices=["auto", "exact", "ivfpq"], default="auto",
                        help="search index: exact, ivfpq (partitioned, quantized) or auto, by photo count "
                             "(default auto: exact up to 20000 photos)")
    parser.add_argument("--target-recall", type=float, default=0.95,
                        help="recall@10 the ivfpq index is calibrated for (default 0.95)")
    parser.add_argument("--force", action="store_true", help="replace the output bundle if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``glimpse-provision``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except GlimpseError as exc:
        if args.debug:
            raise
        print(f"glimpse-provision: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glimpse-provision: interrupted; nothing was written", file=sys.stderr)
        return 130


def _run_build(args, images: Path) -> int:
    from provisioning.build import BuildOptions, build
    from provisioning.index import IndexOptions

    if not 0 < args.target_recall <= 1:
        raise GlimpseError("--target-recall must be above 0 and at most 1")
    report = build(BuildOptions(images=images, out=args.out, model_dir=args.model,
                                thumb_size=args.thumb_size, thumb_format=args.thumb_format,
                                workers=args.workers, force=args.force, progress=not args.quiet,
                                index=IndexOptions(kind=args.index, target_recall=args.target_recall)))
    print(f"bundle {report['bundle_id']}: {report['items']} photos in {args.out} "
          f"({report['seconds']}s, model {report['model']}, index {report['index']})")
    if report["duplicates"]:
        print(f"{len(report['duplicates'])} duplicate files kept once")
    for entry in report["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    return 0


def _build(args) -> int:
    return _run_build(args, args.images)


def _demo(args) -> int:
    from provisioning import demo

    with tempfile.TemporaryDirectory(prefix="glimpse-demo-") as tmp:
        library = Path(tmp) / "photos"
        demo.gather(library)
        return _run_build(args, library)


def _model(args) -> int:
    from provisioning import default_model

    spec = default_model.build(args.out, variant=args.variant)
    print(json.dumps(spec.extra["parity"]))
    return 0


_COMMANDS = {"build": _build, "demo": _demo, "model": _model}
