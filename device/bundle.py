"""Bundle format v1: everything a device needs to search one photo library.

A bundle is one directory (see ``docs/bundle-format.md``)::

    manifest.json     format, versions, model, counts, sha256 and size of every file
    model/            model.json, text and image towers (.tflite), tokenizer.json, ...
    embeddings.npy    float32 (items, dim), unit rows; memory-mapped on open
    items.jsonl       one JSON object per item, in embedding row order
    index.faiss       partitioned index (only when the manifest's index kind is ivfpq)
    thumbs/<id>.jpg   one thumbnail per item
    previews/<id>.jpg one large display copy per item (optional)
    originals/<id>.*  the original files (optional)
    report.json       what the build did and which files it skipped, and why

The device opens and verifies bundles here; ``provisioning`` writes them with
:func:`write_manifest` after laying out the files.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np

from device.errors import BundleInvalid, BundleUnreadable, ItemNotFound, ModelInvalid
from device.index import open_index
from device.model import ModelSpec, read_spec, sha256_file
from device.ownership import unreadable

BUNDLE_FORMAT = "glimpse-bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_DIR = "model"
EMBEDDINGS = "embeddings.npy"
ITEMS = "items.jsonl"
INDEX_FILE = "index.faiss"
THUMBS = "thumbs"
PREVIEWS = "previews"
ORIGINALS = "originals"
REPORT = "report.json"

#: How much checking :meth:`Bundle.open` does.
VERIFY_LEVELS = ("full", "quick")


@dataclasses.dataclass(frozen=True)
class Item:
    """One photo in a bundle.

    Attributes:
        id: stable id, the first 16 hex digits of the photo's sha256.
        path: path relative to the library root the bundle was built from (POSIX).
        size: file size in bytes.
        sha256: hex digest of the file's content.
        width, height: pixels, upright (after EXIF orientation).
        taken: EXIF date taken (ISO 8601) or ``None``.
        thumb: thumbnail path relative to the bundle.
        preview: large display copy relative to the bundle, or ``None`` when the
            bundle carries thumbnails only.
        original: the original file copied into the bundle, or ``None``.
    """

    id: str
    path: str
    size: int
    sha256: str
    width: int
    height: int
    taken: str | None
    thumb: str
    preview: str | None = None
    original: str | None = None

    @property
    def folder(self) -> str:
        """The folder part of :attr:`path` (``""`` at the library root)."""
        parent = str(PurePosixPath(self.path).parent)
        return "" if parent == "." else parent

    @property
    def name(self) -> str:
        """The file name part of :attr:`path`."""
        return PurePosixPath(self.path).name

    def to_json(self) -> dict:
        """The item as written in ``items.jsonl``."""
        return dataclasses.asdict(self)


def item_id(sha256: str) -> str:
    """The id of an item with content hash ``sha256``."""
    return sha256[:16]


class Bundle:
    """An opened, verified bundle. Use :meth:`open`.

    Attributes:
        path: the bundle directory.
        manifest: the parsed ``manifest.json``.
        spec: the model's :class:`~device.model.ModelSpec`.
        items: every :class:`Item`, in embedding row order.
        embeddings: (items, dim) float32, memory-mapped read-only.
        index: the search index the manifest names (:mod:`device.index`), opened
            on the memory-mapped embeddings (and index file).
    """

    def __init__(self, path: Path, manifest: dict, spec: ModelSpec, items: list[Item],
                 embeddings: np.ndarray, index=None):
        self.path = path
        self.manifest = manifest
        self.spec = spec
        self.items = items
        self.embeddings = embeddings
        self.index = index if index is not None else open_index(
            path, manifest.get("index", {"kind": "exact"}), embeddings, manifest["files"])
        self._rows = {item.id: row for row, item in enumerate(items)}

    @property
    def id(self) -> str:
        """The bundle id (creation time and content hash)."""
        return self.manifest["bundle_id"]

    @property
    def model_dir(self) -> Path:
        """The model directory inside the bundle."""
        return self.path / MODEL_DIR

    def __len__(self) -> int:
        return len(self.items)

    def row(self, item_id: str) -> int:
        """Embedding row of the item with ``item_id``.

        Raises:
            ItemNotFound: no such item.
        """
        try:
            return self._rows[item_id]
        except (KeyError, TypeError):
            raise ItemNotFound(f"no item with id {item_id!r}") from None

    def __contains__(self, item_id) -> bool:
        return item_id in self._rows

    def item(self, item_id: str) -> Item:
        """The :class:`Item` with ``item_id``; raises :class:`ItemNotFound`."""
        return self.items[self.row(item_id)]

    def file(self, relative: str) -> Path:
        """Absolute path of a file the manifest lists (thumbnails, model files...).

        Only files the manifest names are served, which rules out path traversal.

        Raises:
            ItemNotFound: the manifest lists no such file.
        """
        if relative not in self.manifest["files"]:
            raise ItemNotFound(f"no file {relative!r} in this bundle")
        return self.path / relative

    def report(self) -> dict:
        """The build report (``report.json``), or ``{}`` when absent."""
        try:
            return json.loads((self.path / REPORT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @classmethod
    def open(cls, path: Path, verify: str = "full") -> "Bundle":
        """Open and verify the bundle at ``path``.

        Args:
            path: the bundle directory.
            verify: ``full`` checks the sha256 of every file; ``quick`` checks that
                every file exists with its recorded size and hashes all but the bulk
                per-item data (thumbnails, previews, embeddings), so a large bundle
                opens in about a second without reading its whole index. The model,
                ``items.jsonl`` and the report are always hashed.

        Raises:
            BundleInvalid: naming the problem (not a bundle, wrong format version,
                missing or altered file, dimension or count mismatch, an index
                kind this device does not know or an unreadable index).
            BundleUnreadable: (a BundleInvalid) this user may not read a file or
                directory of it, naming its owner and mode and the command that fixes it.
        """
        if verify not in VERIFY_LEVELS:
            raise ValueError(f"verify must be one of {VERIFY_LEVELS}")
        path = Path(path).resolve()
        try:
            return cls._open(path, verify)
        except (BundleInvalid, PermissionError) as exc:
            # A tree this user may not read (copied as root, 0700) fails as "missing" or
            # "unreadable" files, or (a directory above it shut) as a bare PermissionError:
            # say which path, whose it is, and the command that fixes it.
            problem = unreadable(path)
            if problem:
                raise BundleUnreadable(problem) from None
            if isinstance(exc, PermissionError):
                raise BundleUnreadable(f"{path}: {exc.strerror}: {exc.filename}") from None
            raise

    @classmethod
    def _open(cls, path: Path, verify: str) -> "Bundle":
        manifest = _read_manifest(path)
        _check_files(path, manifest["files"], full=(verify == "full"))
        try:
            spec = read_spec(path / MODEL_DIR, verify=False)  # files checked above
        except ModelInvalid as exc:
            raise BundleInvalid(f"{path}: {exc}") from None
        model = manifest["model"]
        if (spec.id, spec.version) != (model.get("id"), model.get("version")):
            raise BundleInvalid(
                f"{path}: manifest names model {model.get('id')}@{model.get('version')} "
                f"but the bundle holds {spec.full_id}"
            )
        if spec.dim != model.get("dim"):
            raise BundleInvalid(
                f"{path}: dimension mismatch: manifest says {model.get('dim')}, model says {spec.dim}"
            )
        items = _read_items(path, manifest)
        embeddings = _open_embeddings(path, len(items), spec.dim)
        # Bundles written before the index object existed are exact.
        index = open_index(path, manifest.get("index", {"kind": "exact"}), embeddings, manifest["files"])
        return cls(path, manifest, spec, items, embeddings, index)


def _read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleInvalid(f"{path}: no such bundle directory")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleInvalid(f"{path}: no {MANIFEST} (is this a bundle directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleInvalid(f"{path}: unreadable {MANIFEST}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleInvalid(f"{path}: {MANIFEST} is not a {BUNDLE_FORMAT} manifest")
    version = manifest.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleInvalid(
            f"{path}: bundle format version {version!r} is not supported "
            f"(this Glimpse reads version {BUNDLE_FORMAT_VERSION}); rebuild it with a matching glimpse-provision"
        )
    for key in ("bundle_id", "created", "model", "item_count", "files"):
        if key not in manifest:
            raise BundleInvalid(f"{path}: {MANIFEST} lacks {key!r}")
    if not isinstance(manifest["files"], dict) or not isinstance(manifest["model"], dict):
        raise BundleInvalid(f"{path}: {MANIFEST} is malformed")
    return manifest


#: Large, per-item data that ``quick`` verification checks by size only.
_BULK = (f"{THUMBS}/", f"{PREVIEWS}/", f"{ORIGINALS}/", EMBEDDINGS)


def _check_files(path: Path, files: dict, full: bool) -> None:
    for required in (f"{MODEL_DIR}/model.json", EMBEDDINGS, ITEMS):
        if required not in files:
            raise BundleInvalid(f"{path}: {MANIFEST} does not list {required}")
    inside: set[PurePosixPath] = {PurePosixPath(".")}  # folders already proven to stay in the bundle
    for relative, entry in files.items():
        pure = PurePosixPath(relative)
        if pure.is_absolute() or ".." in pure.parts or relative == MANIFEST:
            raise BundleInvalid(f"{path}: {MANIFEST} lists an unsafe path {relative!r}")
        if not isinstance(entry, dict):
            raise BundleInvalid(f"{path}: {MANIFEST} entry for {relative} is malformed")
        file_path = path / relative
        _check_inside(path, pure, inside)
        try:
            size = file_path.stat().st_size
        except OSError:
            raise BundleInvalid(f"{path}: missing file {relative}") from None
        if size != entry.get("size"):
            raise BundleInvalid(f"{path}: file {relative} was altered (size {size}, expected {entry.get('size')})")
        if (full or not relative.startswith(_BULK)) and sha256_file(file_path) != entry.get("sha256"):
            raise BundleInvalid(f"{path}: file {relative} was altered (sha256 mismatch)")


def _check_inside(path: Path, relative: PurePosixPath, inside: set[PurePosixPath]) -> None:
    """Refuse a file, or a folder on its way, that is a symlink leading out of the bundle.

    The hash of a file outside the bundle says nothing about what the bundle's
    builder wrote, and serving it would hand out a file the manifest never
    covered. Only symlinks cost a ``resolve``; each folder is checked once.

    Raises:
        BundleInvalid: naming the symlink and where it leads.
    """
    for part in (*reversed(relative.parents), relative):
        if part in inside:
            continue
        candidate = path / part
        if candidate.is_symlink():
            target = candidate.resolve()
            if not target.is_relative_to(path):
                raise BundleInvalid(f"{path}: {part.as_posix()} is a symlink leaving the bundle (to {target})")
        if part != relative:
            inside.add(part)


def _read_items(path: Path, manifest: dict) -> list[Item]:
    items = []
    fields = {f.name for f in dataclasses.fields(Item)}
    try:
        with open(path / ITEMS, encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError("not an object")
                items.append(Item(**{k: doc.get(k) for k in fields}))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise BundleInvalid(f"{path}: {ITEMS} line {len(items) + 1} is malformed: {exc}") from None
    if len(items) != manifest["item_count"]:
        raise BundleInvalid(
            f"{path}: {ITEMS} has {len(items)} items, {MANIFEST} says {manifest['item_count']}"
        )
    if len({item.id for item in items}) != len(items):
        raise BundleInvalid(f"{path}: {ITEMS} has duplicate item ids")
    for item in items:
        if item.thumb not in manifest["files"]:
            raise BundleInvalid(f"{path}: item {item.id} names thumbnail {item.thumb}, not in {MANIFEST}")
        for kind in ("preview", "original"):
            named = getattr(item, kind)
            if named is not None and named not in manifest["files"]:
                raise BundleInvalid(f"{path}: item {item.id} names {kind} {named}, not in {MANIFEST}")
    return items


def _open_embeddings(path: Path, count: int, dim: int) -> np.ndarray:
    try:
        # mmap: the OS pages rows in as searches touch them; start-up reads only the header.
        embeddings = np.load(path / EMBEDDINGS, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleInvalid(f"{path}: unreadable {EMBEDDINGS}: {exc}") from None
    if embeddings.dtype != np.float32 or embeddings.ndim != 2:
        raise BundleInvalid(f"{path}: {EMBEDDINGS} must be a 2-D float32 array, not {embeddings.dtype} {embeddings.shape}")
    if embeddings.shape != (count, dim):
        raise BundleInvalid(
            f"{path}: dimension mismatch: {EMBEDDINGS} is {embeddings.shape}, expected ({count}, {dim})"
        )
    check_embeddings(embeddings, where=f"{path}: {EMBEDDINGS}")
    return embeddings


#: How far a row's length may stray from 1 (float32 rounding of a normalised vector is ~1e-7;
#: an int8 tower's output normalised in float32 stays far inside this).
NORM_TOLERANCE = 1e-3
#: Rows checked per step: bounds the memory of the check (64 MiB at dim 512)
#: however large the memory-mapped array is.
_CHECK_ROWS = 32768


def embedding_problem(vector: np.ndarray) -> str | None:
    """Why one embedding cannot go into a bundle (not finite, not unit length), or ``None``."""
    vector = np.asarray(vector, dtype=np.float32).ravel()
    if not np.isfinite(vector).all():
        return "its embedding holds NaN or infinity"
    norm = float(np.sqrt(np.dot(vector.astype(np.float64), vector.astype(np.float64))))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        return f"its embedding has length {norm:.4f}, not 1"
    return None


def check_embeddings(embeddings: np.ndarray, where: str = EMBEDDINGS) -> None:
    """Check that every row is finite and of unit length (within :data:`NORM_TOLERANCE`).

    A NaN row would score NaN for every query, which JSON cannot carry; a row far
    from unit length breaks cosine ranking. The array may be memory-mapped: it is
    read in slices of :data:`_CHECK_ROWS` rows, so memory stays bounded and the
    pages read stay in the page cache for the first searches.

    Raises:
        BundleInvalid: naming the first bad row and what is wrong with it.
    """
    for start in range(0, len(embeddings), _CHECK_ROWS):
        block = np.asarray(embeddings[start:start + _CHECK_ROWS], dtype=np.float32)
        # A NaN or infinity anywhere in a row makes its squared length non-finite.
        norms = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        bad = ~(np.abs(norms - 1.0) <= NORM_TOLERANCE)  # NaN compares False: caught here too
        if bad.any():
            row = int(np.argmax(bad))
            what = ("holds NaN or infinity" if not np.isfinite(block[row]).all()
                    else f"has length {norms[row]:.4f}, not 1")
            raise BundleInvalid(f"{where}: row {start + row} {what}; rebuild the bundle")


def write_manifest(bundle_dir: Path, spec: ModelSpec, item_count: int, extra: dict | None = None) -> dict:
    """Hash every file under ``bundle_dir`` and write ``manifest.json``.

    Call this last, after the model, embeddings, items, thumbnails and report are
    in place. The bundle id combines the creation time and the content hash, so
    two different builds never share an id.

    Returns:
        The manifest written.
    """
    bundle_dir = Path(bundle_dir)
    files = {}
    for file_path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        relative = file_path.relative_to(bundle_dir).as_posix()
        if relative == MANIFEST:
            continue
        files[relative] = {"sha256": sha256_file(file_path), "size": file_path.stat().st_size}
    content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "bundle_id": f"{created:%Y%m%dT%H%M%SZ}-{content[:8]}",
        "created": created.isoformat().replace("+00:00", "Z"),
        "model": {"id": spec.id, "version": spec.version, "dim": spec.dim,
                  "distance": spec.distance, "quantization": spec.quantization},
        "item_count": int(item_count),
        "embeddings": {"file": EMBEDDINGS, "dtype": "float32", "shape": [int(item_count), spec.dim]},
        **(extra or {}),
        "files": files,
    }
    tmp = bundle_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, bundle_dir / MANIFEST)  # a reader never sees half a manifest
    return manifest
