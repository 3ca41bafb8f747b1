"""``glimpse-provision``: the host's command line.

    glimpse-provision build --images DIR --out BUNDLE_DIR [--model DIR] [--index auto|exact|ivfpq] [--force]
                      [--private]   (--force replaces only a bundle; bundles are 0755/0644 unless --private)
    glimpse-provision demo --out BUNDLE_DIR          (scikit-image's photos)
    glimpse-provision model default --out DIR [--variant int8|float32] [--force]   (needs PyTorch)
    glimpse-provision import-model SOURCE --out DIR [--force] [--arch NAME] [--variant int8|float32] [--id NAME]
                      [--version V] [--licence TEXT] [--source-url URL]
                      a real CLIP model (OpenCLIP checkpoint or directory, Hugging Face CLIPModel
                      directory) as a Glimpse model directory (needs PyTorch, open_clip)
    glimpse-provision eval --captions FILE --images DIR [--model DIR] [--split NAME] [--limit N] [--json]
                      text-to-image Recall@1/5/10 of a model on captioned photos (COCO JSON, CSV, JSONL)
    glimpse-provision train --captions FILE --images DIR --out MODEL_DIR [--val-split NAME | --val-fraction F]
                      [--epochs N] [--batch-size N] [--dim N] [--unfreeze-text N] [--unfreeze-image N]
                      [--seed N] [--resume] [--variant int8|float32]   (needs PyTorch)
                      train projection heads on captioned photos; a model directory for build --model
    glimpse-provision wheelhouse --platform linux_aarch64 --python 3.11 [--python 3.13 ...] --out DIR
    glimpse-provision push HOST --bundle DIR [--port 22] [--user U] [--identity KEY] [--keep 3]
                      [--install [--wheelhouse DIR] [--hostname NAME]]   send, verify, switch, check, or roll back
    glimpse-provision fleet --inventory FILE --bundle DIR   push to every host (ansible-playbook)
    glimpse-provision export-tasklib --bundle DIR --out FILE.tflite [--index exact|partitioned]
                      [--leaves N] [--search-fraction F] [--quantize] [--force]
                      the bundle as a TFLite Task Library TextSearcher model (needs PyTorch)

Errors print ``glimpse-provision: error: ...`` and exit 2; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from device.datadir import DEFAULT_DATA_DIR
from device.commandline import CommandParser, run_command
from device.errors import GlimpseError
from device.wording import plural


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="glimpse-provision",
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
    model.add_argument("--force", action="store_true",
                       help="replace OUT if it is a model directory (nothing else is replaced)")

    imported = commands.add_parser(
        "import-model", help="import a CLIP model from local files: OpenCLIP or Hugging Face (needs the host extra)")
    imported.add_argument("source", type=Path,
                          help="OpenCLIP checkpoint (.pt/.pth/.bin/.safetensors, with --arch), OpenCLIP directory "
                               "(open_clip_config.json) or Hugging Face CLIPModel directory (config.json)")
    imported.add_argument("--out", required=True, type=Path, metavar="DIR", help="model directory to write")
    imported.add_argument("--arch", metavar="NAME",
                          help="open_clip architecture of a bare checkpoint file, e.g. ViT-B-32")
    imported.add_argument("--variant", choices=["int8", "float32"], default="int8",
                          help="tower precision (default int8)")
    imported.add_argument("--id", dest="model_id", metavar="NAME",
                          help="model id in model.json (default: from the architecture)")
    imported.add_argument("--version", default="1.0.0", metavar="V", help="model version (default 1.0.0)")
    imported.add_argument("--licence", metavar="TEXT",
                          help="the weights' licence, as their model page states it (e.g. MIT)")
    imported.add_argument("--source-url", metavar="URL", help="where the weights came from (default: the local path)")
    imported.add_argument("--force", action="store_true",
                          help="replace OUT if it is a model directory (nothing else is replaced)")

    evaluate = commands.add_parser(
        "eval", help="measure a model's text-to-image Recall@1/5/10 on captioned photos")
    evaluate.add_argument("--captions", required=True, type=Path,
                          help="captions: COCO-format .json (images, annotations), .csv (image,caption) or .jsonl")
    evaluate.add_argument("--images", required=True, type=Path, help="folder the image names are relative to")
    evaluate.add_argument("--model", type=Path, help="model directory (default: the committed glimpse-default)")
    evaluate.add_argument("--split", help="only images whose 'split' field is this (COCO .json)")
    evaluate.add_argument("--limit", type=int, help="only the first N photos (and their captions)")
    evaluate.add_argument("--threads", type=int, default=1, help="interpreter threads per tower (default 1)")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")

    _train_parser(commands)

    wheelhouse = commands.add_parser(
        "wheelhouse", help="download every wheel a device needs, for installing without internet")
    wheelhouse.add_argument("--platform", default="linux_aarch64",
                            help="device platform (default linux_aarch64: 64-bit Raspberry Pi OS)")
    wheelhouse.add_argument("--python", action="append", required=True, metavar="X.Y",
                            help="device Python version; repeat for several (3.11: Bookworm, 3.13: Trixie)")
    wheelhouse.add_argument("--glibc", default=None, metavar="X.Y",
                            help="oldest device glibc (default 2.36, Pi OS Bookworm)")
    wheelhouse.add_argument("--out", required=True, type=Path, help="wheelhouse directory to fill")
    wheelhouse.add_argument("--source", type=Path,
                            help="Glimpse source tree to build the wheel from (default: this checkout)")

    push = commands.add_parser(
        "push", help="send a bundle to a device over ssh, switch to it, roll back if anything fails")
    push.add_argument("host", help="the device's host name or address")
    push.add_argument("--bundle", required=True, type=Path, help="bundle directory to send")
    _push_options(push)

    fleet = commands.add_parser("fleet", help="push a bundle to every host of an Ansible inventory")
    fleet.add_argument("--inventory", required=True, type=Path, help="Ansible inventory (see provisioning/deploy/ansible)")
    fleet.add_argument("--bundle", required=True, type=Path, help="bundle directory to send")
    fleet.add_argument("--limit", help="only these hosts (Ansible pattern)")
    fleet.add_argument("--forks", type=int, default=5, help="devices pushed to at once (default 5)")
    tasklib = commands.add_parser(
        "export-tasklib", help="write the bundle as a TFLite Task Library TextSearcher model (needs PyTorch)")
    tasklib.add_argument("--bundle", required=True, type=Path, help="bundle directory to export")
    tasklib.add_argument("--out", required=True, type=Path, help=".tflite file to write")
    tasklib.add_argument("--index", choices=["exact", "partitioned"], default="exact",
                         help="ScaNN index layout: exact (every photo scanned) or partitioned "
                              "(k-means leaves; default exact)")
    tasklib.add_argument("--leaves", type=int, default=0,
                         help="k-means leaves of a partitioned index (default: square root of the photo count)")
    tasklib.add_argument("--search-fraction", type=float, default=0.25,
                         help="share of leaves a query scans in a partitioned index (default 0.25)")
    tasklib.add_argument("--quantize", action="store_true",
                         help="store each photo as uint8 codes (ScaNN asymmetric hashing, one dimension per "
                              "block): a quarter of the index size, approximate scores (default: float32, exact)")
    tasklib.add_argument("--force", action="store_true", help="replace the output file if it exists")
    return parser


def _train_parser(commands) -> None:
    train = commands.add_parser(
        "train", help="train a dual encoder's projection heads on captioned photos (needs the host extra)")
    data = train.add_argument_group("data")
    data.add_argument("--captions", required=True, type=Path,
                      help="captions: COCO-format .json (images, annotations), .csv (image,caption) or .jsonl")
    data.add_argument("--images", required=True, type=Path, help="folder the image names are relative to")
    data.add_argument("--split", help="train on images whose 'split' field is this (COCO .json)")
    data.add_argument("--val-split", help="validate on images whose 'split' field is this (COCO .json)")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="without --val-split: share of the photos held out for validation, "
                           "always the same ones (default 0.1; 0: none)")
    data.add_argument("--limit", type=int, help="only the first N photos")
    recipe = train.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=int, default=10, help="passes over the training photos (default 10)")
    recipe.add_argument("--batch-size", type=int, default=128, help="photos per step, the in-batch negatives (default 128)")
    recipe.add_argument("--lr", type=float, default=1e-3, help="learning rate of the heads (default 1e-3)")
    recipe.add_argument("--tower-lr", type=float, default=1e-5,
                        help="learning rate of unfrozen tower blocks (default 1e-5)")
    recipe.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    recipe.add_argument("--dim", type=int, default=256, help="shared embedding dimension (default 256)")
    recipe.add_argument("--hidden", type=int, default=512, help="hidden width of the heads (default 512)")
    recipe.add_argument("--unfreeze-text", type=int, default=0, metavar="N",
                        help="also train the text tower's last N transformer layers (0-6, default 0)")
    recipe.add_argument("--unfreeze-image", type=int, default=0, metavar="N",
                        help="also train the image tower's last N MBConv blocks (0-16, default 0)")
    recipe.add_argument("--seed", type=int, default=0, help="seed for initialisation, order, captions (default 0)")
    run = train.add_argument_group("run")
    run.add_argument("--out", required=True, type=Path, help="model directory to write")
    run.add_argument("--checkpoints", type=Path, help="checkpoint directory (default: OUT.checkpoints)")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    run.add_argument("--force", action="store_true",
                     help="replace OUT if it is a model directory (nothing else is replaced); "
                          "without --resume, discard an earlier run's checkpoints")
    run.add_argument("--variant", choices=["int8", "float32"], default="int8", help="tower precision (default int8)")
    run.add_argument("--id", default="glimpse-trained", help="model id in model.json (default glimpse-trained)")
    run.add_argument("--version", default="1.0.0", help="model version in model.json (default 1.0.0)")
    run.add_argument("--cache-dir", type=Path, help="feature cache (default ~/.cache/glimpse)")
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    run.add_argument("--no-export", action="store_true",
                     help="train and checkpoint only; a later --resume with nothing left to train exports")
    run.add_argument("--quiet", action="store_true", help="no progress lines")


def _push_options(parser) -> None:
    ssh = parser.add_argument_group("ssh")
    ssh.add_argument("--port", type=int, default=22, help="ssh port (default 22)")
    ssh.add_argument("--user", help="login name (default: as ssh decides, e.g. ~/.ssh/config)")
    ssh.add_argument("--identity", help="private key file (ssh -i)")
    ssh.add_argument("--ssh-option", action="append", default=[], metavar="NAME=VALUE",
                     help="an ssh -o option; repeat for several")
    device = parser.add_argument_group("device")
    device.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"data directory (default {DEFAULT_DATA_DIR})")
    device.add_argument("--remote-glimpse", default="/opt/glimpse/venv/bin/glimpse",
                        help="the glimpse command (default /opt/glimpse/venv/bin/glimpse)")
    device.add_argument("--daemon-port", type=int,
                        help="the daemon's port (default: the device's configured port, 8080 unless changed)")
    device.add_argument("--keep", type=int, default=3,
                        help="bundles kept on the device (default 3; the served and the previous one always stay)")
    device.add_argument("--health-wait", type=float, default=10.0, metavar="SECONDS",
                        help="how long the health check waits for the daemon to answer (default 10)")
    transfer = parser.add_argument_group("transfer")
    transfer.add_argument("--rsync-path", help="the rsync command on the device (e.g. 'sudo -u glimpse rsync')")
    transfer.add_argument("--rsync-option", action="append", default=[], metavar="OPTION",
                          help="an extra rsync option, e.g. --rsync-option=--bwlimit=2000; repeat for several")
    install = parser.add_argument_group("install")
    install.add_argument("--install", action="store_true",
                         help="first set the device up: service user, directories, Glimpse, the systemd unit")
    install.add_argument("--wheelhouse", type=Path,
                         help="install Glimpse from this wheelhouse (glimpse-provision wheelhouse): "
                              "the device needs no internet; default: from the package index")
    install.add_argument("--hostname", metavar="NAME",
                         help="also give the device this host name, so it is http://NAME.local/ on the LAN "
                              "(letters, digits, hyphens); default: keep its own")


def _build_options(parser) -> None:
    parser.add_argument("--model", type=Path, help="model directory (default: the committed glimpse-default)")
    parser.add_argument("--thumb-size", type=int, default=320, help="thumbnail longest side (default 320)")
    parser.add_argument("--thumb-format", choices=["jpeg", "webp"], default="jpeg",
                        help="thumbnail and preview format")
    parser.add_argument("--preview-size", type=int, default=1280,
                        help="longest side of the display copy on the photo page (default 1280; 0: none)")
    parser.add_argument("--originals", choices=["none", "copy"], default="none",
                        help="copy the original photos into the bundle (default: none, thumbnails and previews only)")
    parser.add_argument("--workers", type=int, default=0,
                        help="decoding and embedding processes (default: CPU count)")
    parser.add_argument("--cache-dir", type=Path,
                        help="build cache: embeddings and thumbnails of photos seen before (default ~/.cache/glimpse)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the build cache")
    parser.add_argument("--index", choices=["auto", "exact", "ivfpq"], default="auto",
                        help="search index: exact, ivfpq (partitioned, quantized) or auto, by photo count "
                             "(default auto: exact up to 20000 photos)")
    parser.add_argument("--target-recall", type=float, default=0.95,
                        help="recall@10 the ivfpq index is calibrated for (default 0.95)")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT if it is a bundle or an empty directory (nothing else is replaced); "
                             "the old bundle stays until the new one is complete")
    parser.add_argument("--private", action="store_true",
                        help="write the bundle owner-only (0700/0600) instead of world-readable (0755/0644)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``glimpse-provision``; returns the exit status."""
    args = _parser().parse_args(argv)
    return run_command("glimpse-provision", _COMMANDS[args.command], args)


def _run_build(args, images: Path) -> int:
    from provisioning.bundles.build import BuildOptions, build
    from provisioning.bundles.index import IndexOptions

    if not 0 < args.target_recall <= 1:
        raise GlimpseError("--target-recall must be above 0 and at most 1")
    report = build(BuildOptions(images=images, out=args.out, model_dir=args.model,
                                thumb_size=args.thumb_size, thumb_format=args.thumb_format,
                                preview_size=args.preview_size, originals=args.originals,
                                cache_dir=args.cache_dir, use_cache=not args.no_cache,
                                workers=args.workers, force=args.force, private=args.private,
                                progress=not args.quiet,
                                index=IndexOptions(kind=args.index, target_recall=args.target_recall)))
    print(f"bundle {report['bundle_id']}: {plural(report['items'], 'photo')} in {args.out} "
          f"({report['seconds']}s, {report['embedded']} embedded, {report['from_cache']} from the cache, "
          f"model {report['model']}, index {report['index']})")
    if report["duplicates"]:
        print(f"{plural(len(report['duplicates']), 'duplicate file')} kept once")
    for entry in report["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    return 0


def _build(args) -> int:
    return _run_build(args, args.images)


def _demo(args) -> int:
    from device import ownership
    from provisioning import demo

    # Before the photos are gathered: an OUT that may not be replaced is refused at once.
    ownership.check_replaceable(ownership.real(args.out), ["bundle"], args.force, "a bundle")
    with tempfile.TemporaryDirectory(prefix="glimpse-demo-") as tmp:
        library = Path(tmp) / "photos"
        demo.gather(library)
        return _run_build(args, library)


def _model(args) -> int:
    from provisioning.models import default as default_model

    spec = default_model.build(args.out, variant=args.variant, force=args.force)
    print(json.dumps(spec.extra["parity"]))
    return 0


def _import_model(args) -> int:
    from provisioning.models.clip.importer import ImportOptions, import_model

    spec = import_model(ImportOptions(source=args.source, out=args.out, arch=args.arch, variant=args.variant,
                                      model_id=args.model_id, version=args.version, licence=args.licence,
                                      source_url=args.source_url, force=args.force))
    print(f"model {spec.full_id} ({spec.quantization}, {spec.dim}-d) in {args.out}; "
          f"parity {json.dumps(spec.extra['parity'])}")
    return 0


def _eval(args) -> int:
    from provisioning.models.captions import read_captions
    from provisioning.models.evaluate import evaluate

    if args.limit is not None and args.limit < 1:
        raise GlimpseError("--limit must be at least 1")
    if args.threads < 1:
        raise GlimpseError("--threads must be at least 1")
    captions = read_captions(args.captions, args.images, split=args.split, limit=args.limit)
    report = evaluate(captions, model_dir=args.model, num_threads=args.threads)
    if args.json:
        print(json.dumps(report.to_json(), indent=1, ensure_ascii=False))
    else:
        print(report.table())
        for name, reason in report.skipped:
            print(f"skipped {name}: {reason}")
    return 0


def _train(args) -> int:
    from device import ownership
    from provisioning import hostextra

    # Checked here too, before PyTorch loads (train.train checks again for callers of the API).
    inputs = [("the photo folder", args.images), ("the captions file", args.captions)]
    ownership.check_apart(args.out, inputs)
    if args.checkpoints:
        ownership.check_apart(args.checkpoints, inputs, option="--checkpoints")
    if not args.no_export:
        ownership.check_replaceable(ownership.real(args.out), ["model"], args.force, "a model directory")
    hostextra.require("train", ("torch", "litert_torch", "transformers", "safetensors"))
    try:
        from provisioning.models import train
    except ModuleNotFoundError as exc:  # a host package the check above does not list
        raise hostextra.missing("train", [exc.name]) from None

    options = train.TrainOptions(
        captions=args.captions, images=args.images, out=args.out, split=args.split, val_split=args.val_split,
        val_fraction=args.val_fraction, limit=args.limit, epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, tower_learning_rate=args.tower_lr, weight_decay=args.weight_decay, dim=args.dim,
        hidden=args.hidden, unfreeze_text=args.unfreeze_text, unfreeze_image=args.unfreeze_image, seed=args.seed,
        variant=args.variant, model_id=args.id, model_version=args.version, checkpoint_dir=args.checkpoints,
        resume=args.resume, force=args.force, cache_dir=args.cache_dir, use_cache=not args.no_cache,
        export=not args.no_export, progress=not args.quiet)
    result = train.train(options, log=(lambda *_: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
    print(result.table())
    for name, reason in result.skipped:
        print(f"skipped {name}: {reason}")
    if result.spec is not None:
        print(f"model {result.spec.full_id} in {args.out} (parity: text {result.spec.extra['parity']['text_min_cosine']}, "
              f"image {result.spec.extra['parity']['image_min_cosine']}); "
              f"use it with: glimpse-provision build --model {args.out}")
    return 0


def _wheelhouse(args) -> int:
    from provisioning.deploy import wheelhouse

    targets = [wheelhouse.parse_target(python, args.platform, args.glibc or wheelhouse.DEFAULT_GLIBC)
               for python in dict.fromkeys(args.python)]  # repeated versions count once
    manifest = wheelhouse.build(targets, args.out, source=args.source)
    for target in manifest["targets"]:
        print(f"CPython {target['python']} {target['platform']}: {plural(len(target['wheels']), 'wheel')}")
    print(f"wheelhouse {args.out} ({wheelhouse.MANIFEST} lists them); on the device: "
          f"pip install --no-index --find-links DIR '{manifest['requirement']}'")
    return 0


def _push(args) -> int:
    from provisioning.deploy import install
    from provisioning.deploy import push
    from provisioning.deploy.remote import Remote

    remote = Remote(host=args.host, port=args.port, user=args.user, identity=args.identity,
                    ssh_options=tuple(args.ssh_option))
    options = push.PushOptions(
        remote=remote, bundle=args.bundle, data_dir=args.data_dir, remote_glimpse=args.remote_glimpse,
        daemon_port=args.daemon_port, keep=args.keep, rsync_path=args.rsync_path,
        rsync_options=tuple(args.rsync_option), health_wait=args.health_wait)
    log = push.PushLog()
    # A stop request (a cancelled CI job, `kill`) rolls back as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.install:
        options = install.install(remote, options, wheelhouse=args.wheelhouse, log=log, hostname=args.hostname)
    elif args.wheelhouse or args.hostname:
        raise GlimpseError(f"{'--wheelhouse' if args.wheelhouse else '--hostname'} goes with --install")
    push.push(options, log)
    if args.install and args.hostname:
        # Last: the push reached the device by its old name, which stops answering now.
        url = install.rename(remote, args.hostname, options.daemon_port or 8080, log)
        log.line(f"the device is now {url}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _fleet(args) -> int:
    from provisioning.deploy import fleet

    return fleet.run(args.inventory, args.bundle, limit=args.limit, forks=args.forks)


def _export_tasklib(args) -> int:
    from provisioning.tasklib import export as tasklib
    from provisioning.tasklib.scann_ondevice import IndexLayout

    if args.leaves < 0:
        raise GlimpseError("--leaves must be 0 (automatic) or more")
    if not 0 < args.search_fraction <= 1:
        raise GlimpseError("--search-fraction must be above 0 and at most 1")
    layout = IndexLayout(kind=args.index, leaves=args.leaves, search_fraction=args.search_fraction,
                         quantized=args.quantize)
    report = tasklib.export(tasklib.ExportOptions(bundle=args.bundle, out=args.out, layout=layout,
                                                  force=args.force))
    print(f"wrote {report['out']}: {plural(report['items'], 'photo')}, {plural(report['bytes'], 'byte')}, "
          f"model {report['model']} (tower parity {report['parity']}), index {report['index']}")
    return 0


_COMMANDS = {"build": _build, "demo": _demo, "model": _model, "eval": _eval, "wheelhouse": _wheelhouse, "push": _push,
             "fleet": _fleet, "export-tasklib": _export_tasklib, "train": _train,
             "import-model": _import_model}
