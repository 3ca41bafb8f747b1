"""``glimpse-provision build``: a photo library in, a bundle out.

Walks the library, hashes every photo (identical files are kept once), decodes
and resizes in worker processes, embeds with the image tower through LiteRT
(the runtime the device uses), writes thumbnails and the bundle. Files that are
not usable photos are skipped and listed in ``report.json``, never fatal.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np

from device import bundle as bundle_format
from device import images, ownership
from device.encoders import EncoderOptions, ImageEncoder
from device.errors import BuildFailed, BuildInterrupted, ImageUnreadable
from device.model import SPEC_NAME, default_model_dir, read_spec, sha256_file
from device.index import choose_kind
from device.wording import plural
from provisioning.cache import BuildCache, HashCache, default_cache_dir
from provisioning.progress import Progress
from provisioning.bundles.index import IndexOptions, build_index, text_queries

THUMB_FORMATS = {"jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}


@dataclasses.dataclass
class BuildOptions:
    """Options of :func:`build`.

    Attributes:
        images: the library root, walked recursively.
        out: the bundle directory to write.
        model_dir: the model to embed with (default: the committed ``glimpse-default``).
        thumb_size: longest side of thumbnails, pixels.
        thumb_format: ``jpeg`` or ``webp`` (previews use it too).
        preview_size: longest side of the display copies the photo page shows;
            0 leaves them out (thumbnails only: a smaller bundle).
        originals: ``none`` (default), or ``copy`` to put the original files in
            the bundle (``originals/<id><ext>``) so the device can serve them.
        workers: decoding and embedding processes (0: as many as CPUs).
        cache_dir: where embeddings and renditions are cached between builds
            (default ``~/.cache/glimpse``); ``None`` with ``use_cache=False`` disables it.
        use_cache: read and write the build cache.
        force: replace ``out`` if it exists and is a bundle (or an empty directory).
        private: write the bundle owner-only (0700 directories, 0600 files) instead
            of world-readable (0755, 0644), whatever the umask.
        progress: print a progress line to stderr.
        index: the search index to build (default: chosen by photo count).
        decode_budget_mb: memory all workers together may take decoding photos, in MiB;
            0: 0.4 times the memory this process may use (its cgroup's limit, else the
            machine's RAM). A photo that would need more than its worker's share is
            skipped with the reason (see :func:`device.images.open_photo`).
    """

    images: Path
    out: Path
    model_dir: Path | None = None
    thumb_size: int = 320
    thumb_format: str = "jpeg"
    preview_size: int = 1280
    originals: str = "none"
    workers: int = 0
    cache_dir: Path | None = None
    use_cache: bool = True
    force: bool = False
    private: bool = False
    progress: bool = True
    index: IndexOptions = dataclasses.field(default_factory=IndexOptions)
    decode_budget_mb: int = 0


ORIGINALS_MODES = ("none", "copy")


@dataclasses.dataclass
class _Processed:
    vector: np.ndarray
    thumb: bytes
    preview: bytes | None
    width: int
    height: int
    taken: str | None


_worker_encoder = None


def _init_worker(model_dir: str) -> None:
    """Worker start-up: ignore Ctrl-C (the parent stops us) and load our own image tower."""
    global _worker_encoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_encoder = ImageEncoder.create_from_options(
        EncoderOptions(model_dir=Path(model_dir), num_threads=1, verify=False))


def _process(job: tuple[str, int, int, str, int]):
    """Worker: decode, embed and render one photo (or return why it cannot be used)."""
    path, thumb_size, preview_size, thumb_format, max_bytes = job
    size = _worker_encoder.input_size
    try:
        photo = images.open_photo(Path(path), min_side=max(size, thumb_size, preview_size), max_bytes=max_bytes)
    except ImageUnreadable as exc:
        return exc.reason  # the report lists it beside the file's path
    vector = _worker_encoder.embed_image(photo.image)
    return _Processed(vector, images.rendition(photo.image, thumb_size, THUMB_FORMATS[thumb_format][0]),
                      images.rendition(photo.image, preview_size, THUMB_FORMATS[thumb_format][0]) if preview_size else None,
                      photo.width, photo.height, photo.taken)


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


def build(options: BuildOptions) -> dict:
    """Build a bundle from ``options.images`` into ``options.out``.

    The bundle is written to a temporary sibling directory and swapped into place
    at the end (:func:`device.ownership.replacing`), so ``out`` is never half-written
    and an old bundle stays until the new one is complete. Photos already embedded by an
    earlier (or interrupted) build with the same model come from the cache.

    Returns:
        The build report (also written to ``report.json`` in the bundle).

    Raises:
        BuildFailed: the library is missing or has no usable photo.
        OutputRefused: ``out`` is, holds or lies inside the photo folder, or exists
            and is not a bundle ``force`` may replace.
        BuildInterrupted: Ctrl-C; what was embedded so far stays cached.
        ModelInvalid: the model directory is unusable.
    """
    started = time.monotonic()
    root = Path(options.images).resolve()
    out = Path(options.out).resolve()
    if options.thumb_format not in THUMB_FORMATS:
        raise BuildFailed(f"thumbnail format must be one of {', '.join(THUMB_FORMATS)}")
    if options.originals not in ORIGINALS_MODES:
        raise BuildFailed(f"originals must be one of {', '.join(ORIGINALS_MODES)}")
    if not root.is_dir():
        raise BuildFailed(f"{root}: no such photo folder")
    # Refused before any work: the photo folder is never the output, nor inside or around it,
    # and --force replaces only a bundle (or an empty directory).
    photos_in = [("the photo folder", root)]
    ownership.check_apart(out, photos_in)
    ownership.check_replaceable(out, ["bundle"], options.force, "a bundle")
    model_dir = Path(options.model_dir) if options.model_dir else default_model_dir()
    spec = read_spec(model_dir)  # verifies every model file once, here

    cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    cache = BuildCache(cache_dir, spec.embedding_key) if options.use_cache else None
    hashes = HashCache(cache_dir) if options.use_cache else None
    photos, others = walk(root)
    skipped = [{"path": p.relative_to(root).as_posix(), "reason": "not a photo file type"} for p in others]
    duplicates, unique = [], {}
    for path in photos:
        relative = path.relative_to(root).as_posix()
        try:
            digest = hashes.sha256(path, sha256_file) if hashes else sha256_file(path)
        except OSError as exc:
            skipped.append({"path": relative, "reason": f"unreadable: {exc.strerror}"})
            continue
        if digest in unique:
            duplicates.append({"path": relative, "same_as": unique[digest][0]})
        else:
            unique[digest] = (relative, path)
    if hashes:
        hashes.close()

    try:
        with ownership.replacing(out, ["bundle"], "a bundle", force=options.force, inputs=photos_in,
                                 modes=ownership.PRIVATE if options.private else ownership.SHARED) as work:
            items, vectors, embedded = _embed_all(unique, model_dir, spec, options, cache, work, skipped)
            if not items:
                raise BuildFailed(f"{root}: no usable photo found ({plural(len(skipped), 'file')} skipped)")
            _copy_model(model_dir, work / bundle_format.MODEL_DIR)
            embeddings = np.asarray(vectors, dtype=np.float32).reshape(len(items), spec.dim)
            bundle_format.check_embeddings(embeddings, where="the built embeddings")  # as a device will
            np.save(work / bundle_format.EMBEDDINGS, embeddings)
            # A partitioned index is calibrated on the text tower's queries.
            queries = text_queries(model_dir) if choose_kind(options.index.kind, len(items)) == "ivfpq" else None
            index = build_index(work, embeddings, options.index, queries=queries)
            with open(work / bundle_format.ITEMS, "w", encoding="utf-8") as handle:
                for item in items:
                    handle.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            seconds = time.monotonic() - started
            report = {
                "library": str(root),
                "model": spec.full_id,
                "photos_found": len(photos),
                "items": len(items),
                "embedded": embedded,
                "from_cache": len(items) - embedded,
                "duplicates": duplicates,
                "skipped": skipped,
                "index": index["kind"],
                "seconds": round(seconds, 2),
                "photos_per_second": round(len(unique) / seconds, 1) if seconds > 0 else None,
            }
            (work / bundle_format.REPORT).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")
            manifest = bundle_format.write_manifest(
                work, spec, len(items),
                extra={"index": index,
                       "builder": {"glimpse": _version(), "thumb_size": options.thumb_size,
                                   "preview_size": options.preview_size, "originals": options.originals}},
            )
            report["bundle_id"] = manifest["bundle_id"]
    finally:
        if cache:
            cache.close()
    return report


def _embed_all(unique: dict, model_dir: Path, spec, options: BuildOptions, cache, work: Path, skipped: list):
    """Embed every unique photo (cached ones without decoding); items in library order."""
    suffix = THUMB_FORMATS[options.thumb_format][1]
    (work / bundle_format.THUMBS).mkdir()
    if options.preview_size:
        (work / bundle_format.PREVIEWS).mkdir()
    if options.originals == "copy":
        (work / bundle_format.ORIGINALS).mkdir()
    results: dict[str, _Processed] = {}
    todo = []
    for digest in unique:
        hit = _from_cache(cache, digest, options, suffix) if cache else None
        if hit is not None:
            results[digest] = hit
        else:
            todo.append(digest)

    progress = Progress(len(unique), options.progress, already=len(results))
    if todo:
        workers = min(options.workers or os.cpu_count() or 1, len(todo))
        # The workers decode side by side: each gets its share of the memory budget.
        max_bytes = images.decode_budget(options.decode_budget_mb) // workers
        jobs = [(str(unique[d][1]), options.thumb_size, options.preview_size, options.thumb_format, max_bytes)
                for d in todo]
        # spawn, not fork: each worker loads its own small interpreter and nothing
        # of the parent's state; the parent only writes files.
        pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                         initargs=(str(model_dir),))
        try:
            for done_count, (digest, outcome) in enumerate(zip(todo, pool.imap(_process, jobs, chunksize=2)), 1):
                if isinstance(outcome, str):
                    skipped.append({"path": unique[digest][0], "reason": outcome})
                else:
                    results[digest] = outcome
                    if cache:
                        _to_cache(cache, digest, outcome, options, suffix)
                progress.update(len(unique) - len(todo) + done_count)
            pool.close()
        except KeyboardInterrupt:
            raise BuildInterrupted(
                f"interrupted: {len(results)} of {plural(len(unique), 'photo')} done and cached; "
                "run the same command again to resume") from None
        finally:
            pool.terminate()
            pool.join()
    progress.update(len(unique), final=True)

    items, vectors = [], []
    for digest, (relative, path) in unique.items():
        done = results.get(digest)
        if done is None:
            continue
        problem = bundle_format.embedding_problem(done.vector)
        if problem is not None:  # a broken tower or cache entry: never into the bundle
            skipped.append({"path": relative, "reason": problem})
            continue
        ident = bundle_format.item_id(digest)
        thumb = f"{bundle_format.THUMBS}/{ident}{suffix}"
        (work / thumb).write_bytes(done.thumb)
        preview = None
        if done.preview is not None:
            preview = f"{bundle_format.PREVIEWS}/{ident}{suffix}"
            (work / preview).write_bytes(done.preview)
        original = None
        if options.originals == "copy":
            original = f"{bundle_format.ORIGINALS}/{ident}{path.suffix.lower()}"
            shutil.copyfile(path, work / original)
        items.append(bundle_format.Item(
            id=ident, path=relative, size=path.stat().st_size, sha256=digest, width=done.width,
            height=done.height, taken=done.taken, thumb=thumb, preview=preview, original=original))
        vectors.append(done.vector)
    embedded = sum(1 for digest in todo if digest in results)
    return items, vectors, embedded


def _from_cache(cache, digest: str, options: BuildOptions, suffix: str):
    cached = cache.get(digest)
    if cached is None:
        return None
    thumb = cache.get_rendition(digest, "thumb", options.thumb_size, suffix)
    preview = cache.get_rendition(digest, "preview", options.preview_size, suffix) if options.preview_size else None
    if thumb is None or (options.preview_size and preview is None):
        return None  # another thumbnail size or format: decode again
    vector, width, height, taken = cached
    return _Processed(vector, thumb, preview, width, height, taken)


def _to_cache(cache, digest: str, done: _Processed, options: BuildOptions, suffix: str) -> None:
    # Renditions first: an embedding row marks the photo as done.
    cache.put_rendition(digest, "thumb", options.thumb_size, suffix, done.thumb)
    if done.preview is not None:
        cache.put_rendition(digest, "preview", options.preview_size, suffix, done.preview)
    cache.put(digest, done.vector, done.width, done.height, done.taken)


def _copy_model(model_dir: Path, dest: Path) -> None:
    spec = read_spec(model_dir, verify=False)
    dest.mkdir()
    for name in [SPEC_NAME, *spec.files, "MODEL_CARD.md"]:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, dest / name)


def _version() -> str:
    from device import __version__

    return __version__
