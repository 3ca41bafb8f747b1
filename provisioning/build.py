"""``glimpse-provision build``: a photo library in, a bundle out.

Walks the library, hashes every photo (identical files are kept once), decodes
and resizes in worker processes, embeds with the image tower through LiteRT
(the runtime the device uses), writes thumbnails and the bundle. Files that are
not usable photos are skipped and listed in ``report.json``, never fatal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from device import bundle as bundle_format
from device import images
from device.encoders import EncoderOptions, ImageEncoder
from device.errors import GlimpseError, ImageUnreadable
from device.model import SPEC_NAME, default_model_dir, read_spec, sha256_file
from device.index import choose_kind
from provisioning.index import IndexOptions, build_index, text_queries

THUMB_FORMATS = {"jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}


class BuildFailed(GlimpseError, RuntimeError):
    """The build could not produce a bundle (no photos, output in the way...)."""


@dataclasses.dataclass
class BuildOptions:
    """Options of :func:`build`.

    Attributes:
        images: the library root, walked recursively.
        out: the bundle directory to write.
        model_dir: the model to embed with (default: the committed ``glimpse-default``).
        thumb_size: longest side of thumbnails, pixels.
        thumb_format: ``jpeg`` or ``webp``.
        workers: decoding processes (0: as many as CPUs).
        force: replace ``out`` if it exists.
        progress: print a progress line to stderr.
        index: the search index to build (default: chosen by photo count).
    """

    images: Path
    out: Path
    model_dir: Path | None = None
    thumb_size: int = 320
    thumb_format: str = "jpeg"
    workers: int = 0
    force: bool = False
    progress: bool = True
    index: IndexOptions = dataclasses.field(default_factory=IndexOptions)


@dataclasses.dataclass
class _Decoded:
    pixels: np.ndarray  # uint8 (size, size, 3)
    thumb: bytes
    width: int
    height: int
    taken: str | None


def _decode(job: tuple[str, int, int, str]):
    """Worker: decode one photo into tower input and thumbnail (or a reason)."""
    path, size, thumb_size, thumb_format = job
    try:
        photo = images.open_photo(Path(path), min_side=max(size, thumb_size))
    except ImageUnreadable as exc:
        return str(exc)
    pixels = images.tower_input(photo.image, size)[0].astype(np.uint8)
    buffer = io.BytesIO()
    images.thumbnail(photo.image, thumb_size).save(buffer, THUMB_FORMATS[thumb_format][0], quality=85)
    return _Decoded(pixels, buffer.getvalue(), photo.width, photo.height, photo.taken)


def walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Photos (by file ending) and other files under ``root``, sorted; hidden entries skipped."""
    photos, others = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            (photos if path.suffix.lower() in images.PHOTO_SUFFIXES else others).append(path)
    return photos, others


class _Progress:
    """One self-overwriting stderr line: count, rate, ETA."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.start, self.last = total, enabled, time.monotonic(), 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < 0.2):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        end = "\n" if final else ""
        print(f"\rembedding photos: {done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)   ",
              end=end, file=sys.stderr, flush=True)


def build(options: BuildOptions) -> dict:
    """Build a bundle from ``options.images`` into ``options.out``.

    The bundle is written to a temporary sibling directory and moved into place
    at the end, so ``out`` is never half-written.

    Returns:
        The build report (also written to ``report.json`` in the bundle).

    Raises:
        BuildFailed: the library is missing or has no usable photo, or ``out``
            exists and ``force`` is not set.
        ModelInvalid: the model directory is unusable.
    """
    started = time.monotonic()
    root = Path(options.images).resolve()
    out = Path(options.out).resolve()
    if options.thumb_format not in THUMB_FORMATS:
        raise BuildFailed(f"thumbnail format must be one of {', '.join(THUMB_FORMATS)}")
    if not root.is_dir():
        raise BuildFailed(f"{root}: no such photo folder")
    if out.exists() and not options.force:
        raise BuildFailed(f"{out} exists; pass --force to replace it")
    if out == root or root in out.parents:
        raise BuildFailed(f"the bundle ({out}) must not be inside the photo folder ({root})")
    model_dir = Path(options.model_dir) if options.model_dir else default_model_dir()
    encoder = ImageEncoder.create_from_options(EncoderOptions(model_dir=model_dir))
    spec = encoder.spec

    photos, others = walk(root)
    skipped = [{"path": p.relative_to(root).as_posix(), "reason": "not a photo file type"} for p in others]
    duplicates, unique = [], {}
    for path in photos:
        relative = path.relative_to(root).as_posix()
        try:
            digest = sha256_file(path)
        except OSError as exc:
            skipped.append({"path": relative, "reason": f"unreadable: {exc.strerror}"})
            continue
        if digest in unique:
            duplicates.append({"path": relative, "same_as": unique[digest][0]})
        else:
            unique[digest] = (relative, path)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        items, vectors = _embed_all(unique, encoder, options, work, skipped)
        if not items:
            raise BuildFailed(f"{root}: no usable photo found ({len(skipped)} files skipped)")
        _copy_model(model_dir, work / bundle_format.MODEL_DIR)
        embeddings = np.asarray(vectors, dtype=np.float32)
        np.save(work / bundle_format.EMBEDDINGS, embeddings)
        # A partitioned index is calibrated on the text tower's queries.
        queries = text_queries(model_dir) if choose_kind(options.index.kind, len(items)) == "ivfpq" else None
        index = build_index(work, embeddings, options.index, queries=queries)
        with open(work / bundle_format.ITEMS, "w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
        report = {
            "library": str(root),
            "model": spec.full_id,
            "photos_found": len(photos),
            "items": len(items),
            "duplicates": duplicates,
            "skipped": skipped,
            "index": index["kind"],
            "seconds": round(time.monotonic() - started, 2),
        }
        (work / bundle_format.REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
        manifest = bundle_format.write_manifest(
            work, spec, len(items),
            extra={"index": index, "builder": {"glimpse": _version(), "thumb_size": options.thumb_size}},
        )
        report["bundle_id"] = manifest["bundle_id"]
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
        encoder.close()
    return report


def _embed_all(unique: dict, encoder: ImageEncoder, options: BuildOptions, work: Path, skipped: list):
    thumbs = work / bundle_format.THUMBS
    thumbs.mkdir()
    suffix = THUMB_FORMATS[options.thumb_format][1]
    size = encoder.input_size
    jobs = [(str(path), size, options.thumb_size, options.thumb_format) for _, path in unique.values()]
    keys = list(unique)
    workers = options.workers or os.cpu_count() or 1
    progress = _Progress(len(jobs), options.progress)
    items, vectors = [], []
    # fork would copy the loaded interpreter into every worker; spawn keeps them small.
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(min(workers, max(1, len(jobs))))
    try:
        for done, (digest, decoded) in enumerate(zip(keys, pool.imap(_decode, jobs, chunksize=4)), 1):
            relative, path = unique[digest]
            if isinstance(decoded, str):
                skipped.append({"path": relative, "reason": decoded})
            else:
                vectors.append(encoder.embed_pixels(decoded.pixels))
                ident = bundle_format.item_id(digest)
                thumb = f"{bundle_format.THUMBS}/{ident}{suffix}"
                (work / thumb).write_bytes(decoded.thumb)
                items.append(bundle_format.Item(
                    id=ident, path=relative, size=path.stat().st_size, sha256=digest,
                    width=decoded.width, height=decoded.height, taken=decoded.taken, thumb=thumb,
                ))
            progress.update(done)
        progress.update(len(jobs), final=True)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    return items, vectors


def _copy_model(model_dir: Path, dest: Path) -> None:
    spec = read_spec(model_dir, verify=False)
    dest.mkdir()
    for name in [SPEC_NAME, *spec.files, "MODEL_CARD.md"]:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, dest / name)


def _version() -> str:
    from device import __version__

    return __version__
