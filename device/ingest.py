"""On-device ingest: photos added on the appliance itself, searchable within seconds.

Three ways in (the web UI's upload, a watched folder, ``glimpse ingest``) end in
:meth:`IngestStore.add`, and one background :class:`Ingestor` embeds them with
the image tower while the daemon keeps answering queries. Added photos form a
*delta layer* (:class:`DeltaLayer`) searched together with the bundle.

Durability: an uploaded photo is written to ``DATA_DIR/added/files`` and
fsync'ed, and its row is committed to SQLite (WAL, ``synchronous=FULL``)
*before* the upload is acknowledged. Every later step (embedding, thumbnail)
writes its files atomically and then commits; a kill at any point leaves
either the queued row (redone at the next start) or the finished one. So a
photo acknowledged as added is never lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path, PurePosixPath

import numpy as np

from device import images
from device.bundle import Item, item_id
from device.errors import GlimpseError, ImageUnreadable, ItemNotFound

log = logging.getLogger("glimpse.ingest")

ADDED_DIR = "added"
DATABASE = "glimpse.sqlite"
#: Folder that uploaded photos appear in (for the folder filter).
UPLOAD_FOLDER = "added"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS added (
    id        TEXT PRIMARY KEY,
    sha256    TEXT NOT NULL UNIQUE,
    path      TEXT NOT NULL,      -- shown path: 'added/NAME' or 'watched/REL/PATH'
    source    TEXT NOT NULL,      -- the file: 'files/ID.EXT' under added/, or an absolute watched path
    size      INTEGER NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('queued', 'ready', 'failed')),
    error     TEXT,
    model     TEXT,
    embedding BLOB,
    width     INTEGER,
    height    INTEGER,
    taken     TEXT,
    thumb     TEXT,
    preview   TEXT,
    added     REAL NOT NULL,
    updated   REAL NOT NULL
)
"""


class IngestRefused(GlimpseError, ValueError):
    """An upload is not accepted (too large, not a photo, queue full...)."""


class IngestBusy(IngestRefused):
    """The ingest queue is full; try again later."""


@dataclasses.dataclass(frozen=True)
class Added:
    """What :meth:`IngestStore.add` did with one file."""

    id: str
    status: str  # queued; duplicate (added before); in_bundle (the served bundle holds it)
    path: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that after a crash it is either whole or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class IngestStore:
    """The on-device state of added photos: SQLite plus files under ``DATA_DIR/added``.

    Thread-safe. Args:
        data_dir: the daemon's data directory.
    """

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / ADDED_DIR
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(Path(data_dir) / DATABASE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged row survives power loss
        self._db.execute(_SCHEMA)
        self._clean_temporaries()

    def _clean_temporaries(self) -> None:
        for tmp in self.root.rglob(".*.tmp"):  # left by a kill mid-write; never referenced
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # --- adding ---------------------------------------------------------------------

    def add_upload(self, name: str, data: bytes, in_bundle=None) -> Added:
        """Store an uploaded photo durably and queue it.

        Args:
            name: the file's name as uploaded.
            data: its bytes.
            in_bundle: ``id -> bool``, whether the served bundle holds that photo
                already; such a photo is not stored again (status ``in_bundle``).

        Raises:
            IngestRefused: not a photo file type, not an image, or a decompression
                bomb; the message is the reason alone (results show the name beside it).
        """
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in images.PHOTO_SUFFIXES:
            raise IngestRefused(f"not a photo file type ({', '.join(sorted(images.PHOTO_SUFFIXES))})")
        try:
            images.check_photo_bytes(data, name)  # header only: cheap, and refuses bombs before storing
        except ImageUnreadable as exc:
            raise IngestRefused(exc.reason) from None  # each result carries the name beside the reason
        digest = hashlib.sha256(data).hexdigest()
        ident = item_id(digest)
        if in_bundle is not None and in_bundle(ident):
            return Added(ident, "in_bundle", "")
        with self._lock:
            known = self._db.execute("SELECT id, path FROM added WHERE sha256 = ?", (digest,)).fetchone()
            if known:
                return Added(known[0], "duplicate", known[1])
            source = f"files/{ident}{suffix}"
            write_durably(self.root / source, data)
            shown = f"{UPLOAD_FOLDER}/{_safe_name(name)}"
            self._insert(ident, digest, shown, source, len(data))
        return Added(ident, "queued", shown)

    def add_watched(self, path: Path, shown: str, digest: str) -> Added:
        """Queue a photo found in the watched folder (referenced in place, not copied)."""
        ident = item_id(digest)
        with self._lock:
            known = self._db.execute("SELECT id, path, source FROM added WHERE sha256 = ?", (digest,)).fetchone()
            if known:
                if known[2] != str(path) and known[2].startswith("/"):  # moved inside the watched folder
                    self._db.execute("UPDATE added SET source = ?, path = ?, updated = ? WHERE id = ?",
                                     (str(path), shown, time.time(), known[0]))
                return Added(known[0], "duplicate", known[1])
            self._insert(ident, digest, shown, str(path), path.stat().st_size)
        return Added(ident, "queued", shown)

    def _insert(self, ident: str, digest: str, shown: str, source: str, size: int) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO added (id, sha256, path, source, size, status, added, updated) "
            "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)", (ident, digest, shown, source, size, now, now))

    # --- the worker's side ----------------------------------------------------------

    def next_queued(self, limit: int = 8) -> list[tuple[str, str]]:
        """Up to ``limit`` queued photos, oldest first: (id, source)."""
        with self._lock:
            return self._db.execute("SELECT id, source FROM added WHERE status = 'queued' ORDER BY added LIMIT ?",
                                    (limit,)).fetchall()

    def source_path(self, source: str) -> Path:
        """The file behind a row's ``source``."""
        return Path(source) if source.startswith("/") else self.root / source

    def mark_ready(self, ident: str, model: str, vector: np.ndarray, photo: images.Photo,
                   thumb: bytes, preview: bytes | None) -> None:
        """Store the renditions, then record the embedding (the commit marks the photo done)."""
        write_durably(self.root / "thumbs" / f"{ident}.jpg", thumb)
        if preview is not None:
            write_durably(self.root / "previews" / f"{ident}.jpg", preview)
        with self._lock:
            self._db.execute(
                "UPDATE added SET status = 'ready', error = NULL, model = ?, embedding = ?, width = ?, height = ?, "
                "taken = ?, thumb = ?, preview = ?, updated = ? WHERE id = ?",
                (model, np.asarray(vector, np.float32).tobytes(), photo.width, photo.height, photo.taken,
                 f"thumbs/{ident}.jpg", f"previews/{ident}.jpg" if preview is not None else None,
                 time.time(), ident))

    def mark_failed(self, ident: str, reason: str) -> None:
        """Record why a photo cannot be used (it stays listed, never searched)."""
        with self._lock:
            self._db.execute("UPDATE added SET status = 'failed', error = ?, updated = ? WHERE id = ?",
                             (reason, time.time(), ident))

    def requeue_other_models(self, model: str) -> int:
        """Queue photos embedded with another model again (after a bundle with a new model)."""
        with self._lock:
            cursor = self._db.execute("UPDATE added SET status = 'queued', updated = ? "
                                      "WHERE status = 'ready' AND model != ?", (time.time(), model))
            return cursor.rowcount

    def remove(self, ident: str) -> None:
        """Forget an added photo and delete its files (uploads only; watched files stay)."""
        with self._lock:
            row = self._db.execute("SELECT source FROM added WHERE id = ?", (ident,)).fetchone()
            if row is None:
                raise ItemNotFound(f"no added photo with id {ident!r}")
            self._db.execute("DELETE FROM added WHERE id = ?", (ident,))
        if not row[0].startswith("/"):
            (self.root / row[0]).unlink(missing_ok=True)
        for kind in ("thumbs", "previews"):
            (self.root / kind / f"{ident}.jpg").unlink(missing_ok=True)

    def watched_sources(self) -> dict[str, str]:
        """Watched-folder rows: absolute source path -> id."""
        with self._lock:
            return dict(self._db.execute("SELECT source, id FROM added WHERE source LIKE '/%'").fetchall())

    # --- reading ---------------------------------------------------------------------

    def ready(self, model: str) -> tuple[list[Item], np.ndarray]:
        """Every photo ready for ``model``: items and their (n, dim) embeddings."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path, size, sha256, width, height, taken, thumb, preview, embedding, source "
                "FROM added WHERE status = 'ready' AND model = ? ORDER BY added", (model,)).fetchall()
        items = [Item(id=r[0], path=r[1], size=r[2], sha256=r[3], width=r[4], height=r[5], taken=r[6],
                      thumb=f"{ADDED_DIR}/{r[7]}", preview=f"{ADDED_DIR}/{r[8]}" if r[8] else None,
                      original=None) for r in rows]
        vectors = [np.frombuffer(r[9], dtype=np.float32) for r in rows]
        matrix = np.stack(vectors) if vectors else None
        return items, matrix

    def counts(self) -> dict:
        """Photos by status, and the latest failure."""
        with self._lock:
            counts = dict(self._db.execute("SELECT status, COUNT(*) FROM added GROUP BY status").fetchall())
            failed = self._db.execute("SELECT path, error FROM added WHERE status = 'failed' "
                                      "ORDER BY updated DESC LIMIT 1").fetchone()
        return {"queued": counts.get("queued", 0), "ready": counts.get("ready", 0),
                "failed": counts.get("failed", 0),
                "last_failure": {"path": failed[0], "reason": failed[1]} if failed else None}

    def file(self, relative: str) -> Path:
        """A rendition under ``added/`` (``relative`` as an :class:`Item` names it).

        Raises:
            ItemNotFound: not a file of the store.
        """
        parts = PurePosixPath(relative).parts
        if len(parts) != 3 or parts[0] != ADDED_DIR or parts[1] not in {"thumbs", "previews"} or ".." in parts:
            raise ItemNotFound(f"no file {relative!r}")
        path = self.root / parts[1] / parts[2]
        if not path.is_file():
            raise ItemNotFound(f"no file {relative!r}")
        return path


def _safe_name(name: str) -> str:
    """A file name without folders or control characters (names come from browsers)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = "".join(c for c in base if c.isprintable()).strip() or "photo"
    return cleaned[:200]


class DeltaLayer:
    """The added photos that are ready, searched exactly and merged with the bundle.

    Readers get a consistent snapshot without locking: :meth:`refresh` swaps in
    new arrays rather than changing them.
    """

    def __init__(self, store: IngestStore, model: str):
        self.store = store
        self.model = model
        self._snapshot: tuple[list[Item], np.ndarray | None, dict] = ([], None, {})
        self.refresh()

    def refresh(self) -> None:
        """Reload the ready photos from the store."""
        items, matrix = self.store.ready(self.model)
        self._snapshot = (items, matrix, {item.id: row for row, item in enumerate(items)})

    @property
    def items(self) -> list[Item]:
        """Ready added photos, oldest first."""
        return self._snapshot[0]

    def __len__(self) -> int:
        return len(self._snapshot[0])

    def item(self, ident: str) -> Item:
        """An added photo by id; raises :class:`ItemNotFound`."""
        items, _, rows = self._snapshot
        if ident not in rows:
            raise ItemNotFound(f"no item with id {ident!r}")
        return items[rows[ident]]

    def embedding(self, ident: str) -> np.ndarray:
        """The stored embedding of an added photo."""
        items, matrix, rows = self._snapshot
        if ident not in rows:
            raise ItemNotFound(f"no item with id {ident!r}")
        return matrix[rows[ident]]

    def scores(self, vector: np.ndarray, admit=None) -> list[tuple[Item, float]]:
        """(item, cosine) for every ready photo that ``admit`` lets through."""
        items, matrix, _ = self._snapshot
        if matrix is None:
            return []
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        return [(item, float(s)) for item, s in zip(items, scores) if admit is None or admit(item)]


class Ingestor:
    """The background worker: embeds queued photos one at a time.

    Memory stays bounded: one photo is decoded at a time (at reduced scale for
    JPEGs) and the queue lives in SQLite, not in memory.

    Args:
        store: the ingest store.
        encoder_factory: returns the :class:`~device.encoders.ImageEncoder` of the
            model being served (called again after a reload changes the model).
        on_ready: called after each photo is ready or failed (the daemon refreshes its delta layer).
        thumb_size, preview_size: renditions, as the host build makes them.
    """

    def __init__(self, store: IngestStore, encoder_factory, on_ready, thumb_size: int = 320,
                 preview_size: int = 1280):
        self.store = store
        self._encoder_factory = encoder_factory
        self._on_ready = on_ready
        self.thumb_size, self.preview_size = thumb_size, preview_size
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """There is new work."""
        self._wake.set()

    def stop(self, timeout: float = 30) -> None:
        """Finish the photo in hand and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        return bool(self._thread and self._thread.is_alive())

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.store.next_queued()
            if not batch:
                self._wake.wait(5.0)
                self._wake.clear()
                continue
            for ident, source in batch:
                if self._stop.is_set():
                    return
                try:
                    self.process(ident, source)
                except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the worker
                    log.exception("embedding added photo %s failed", ident)
                    self.store.mark_failed(ident, f"internal error: {exc!r}")
                    self._on_ready()

    def process(self, ident: str, source: str) -> bool:
        """Embed one queued photo; True when it is ready."""
        encoder = self._encoder_factory()
        try:
            photo = images.open_photo(self.store.source_path(source),
                                      min_side=max(encoder.input_size, self.thumb_size, self.preview_size))
        except ImageUnreadable as exc:
            self.store.mark_failed(ident, exc.reason)  # listed beside the photo's path
            log.warning("added photo %s skipped: %s", ident, exc)
            self._on_ready()
            return False
        vector = encoder.embed_image(photo.image)
        thumb = images.rendition(photo.image, self.thumb_size)
        preview = images.rendition(photo.image, self.preview_size) if self.preview_size else None
        self.store.mark_ready(ident, encoder.spec.embedding_key, vector, photo, thumb, preview)
        self.processed += 1
        self._on_ready()
        return True



class FolderWatcher:
    """Polls a folder (a USB stick's mount point, a network share) for photos.

    Polling, not inotify: inotify sees nothing on network shares and loses
    events when a stick is unplugged. New photos are queued; photos gone from
    the folder are forgotten, moved ones follow their file.
    """

    def __init__(self, store: IngestStore, folder: Path, on_change):
        self.store = store
        self.folder = Path(folder)
        self._on_change = on_change
        self._seen: dict[str, tuple[int, int]] = {}

    def scan(self) -> int:
        """One pass; returns how many photos were queued."""
        if not self.folder.is_dir():
            return 0
        from device.model import sha256_file

        present, queued = set(), 0
        for dirpath, dirnames, filenames in os.walk(self.folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = Path(dirpath) / name
                if name.startswith(".") or path.suffix.lower() not in images.PHOTO_SUFFIXES:
                    continue
                key = str(path)
                present.add(key)
                try:
                    stat = path.stat()
                except OSError:
                    continue
                signature = (stat.st_size, stat.st_mtime_ns)
                if self._seen.get(key) == signature:
                    continue
                try:
                    digest = sha256_file(path)
                except OSError:
                    continue
                self._seen[key] = signature
                shown = "watched/" + path.relative_to(self.folder).as_posix()
                if self.store.add_watched(path, shown, digest).status == "queued":
                    queued += 1
        gone = [ident for source, ident in self.store.watched_sources().items()
                if source not in present and source.startswith(str(self.folder) + os.sep)]
        for ident in gone:
            self.store.remove(ident)
        if queued or gone:
            self._on_change()
        return queued
