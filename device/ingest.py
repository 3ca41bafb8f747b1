"""On-device ingest: photos added on the appliance itself, searchable within seconds.

Three ways in (the web UI's upload, a watched folder, ``glimpse ingest``) end in
:meth:`IngestStore.add`, and one background :class:`Ingestor` embeds them with
the image tower while the daemon keeps answering queries. The ready photos form
the *delta layer* (:class:`device.delta.DeltaLayer`) searched together with the bundle.

Durability: an uploaded photo is written to ``DATA_DIR/added/files`` and
fsync'ed, and its row is committed to SQLite (WAL, ``synchronous=FULL``)
*before* the upload is acknowledged. Every later step (embedding, thumbnail)
writes its files atomically and then commits; a kill at any point leaves
either the queued row (redone at the next start) or the finished one. So a
photo acknowledged as added is never lost.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path, PurePosixPath

import numpy as np

from device import images
from device.bundle import Item, embedding_problem, item_id
from device.errors import ImageUnreadable, IngestBusy, IngestDiskFull, IngestRefused, IngestStoreInvalid, ItemNotFound

log = logging.getLogger("glimpse.ingest")

ADDED_DIR = "added"
DATABASE = "glimpse.sqlite"
#: Folder that uploaded photos appear in (for the folder filter).
UPLOAD_FOLDER = "added"

#: The schema's version, kept in ``PRAGMA user_version``. 0: the first schema (no
#: attempt counter, no quarantine); 1: ``attempts`` and the ``quarantined`` status.
SCHEMA_VERSION = 1

_COLUMNS_V0 = ("id, sha256, path, source, size, status, error, model, embedding, width, height, taken, thumb, "
               "preview, added, updated")

_TABLE = """
CREATE TABLE {name} (
    id        TEXT PRIMARY KEY,
    sha256    TEXT NOT NULL UNIQUE,
    path      TEXT NOT NULL,      -- shown path: 'added/NAME' or 'watched/REL/PATH'
    source    TEXT NOT NULL,      -- the file: 'files/ID.EXT' under added/, or an absolute watched path
    size      INTEGER NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('queued', 'ready', 'failed', 'quarantined')),
    error     TEXT,
    model     TEXT,
    embedding BLOB,
    width     INTEGER,
    height    INTEGER,
    taken     TEXT,
    thumb     TEXT,
    preview   TEXT,
    added     REAL NOT NULL,
    updated   REAL NOT NULL,
    attempts  INTEGER NOT NULL DEFAULT 0  -- times the worker started on it (counted before it starts)
)
"""


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full, from the OS or from SQLite."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)
    return False


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
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # at once: on a full disk, a partial file only makes it worse
        raise
    _fsync_dir(path.parent)


class IngestStore:
    """The on-device state of added photos: SQLite plus files under ``DATA_DIR/added``.

    Thread-safe. Args:
        data_dir: the daemon's data directory.
        max_bytes: memory one photo's decoding may take (default :func:`device.images.decode_budget`);
            an upload that would need more is refused before it is stored.
        min_side: the shortest side the worker decodes photos at (the largest rendition).

    Raises:
        IngestStoreInvalid: the database has a schema newer than this Glimpse knows.
        OSError, sqlite3.Error: the data directory cannot be used.
    """

    def __init__(self, data_dir: Path, max_bytes: int | None = None, min_side: int | None = 1280):
        self.root = Path(data_dir) / ADDED_DIR
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        self.max_bytes = images.decode_budget() if max_bytes is None else max_bytes
        self.min_side = min_side
        #: Why nothing can be stored now ("disk full: ..."), or ``None``. Set by any write that
        #: hit a full disk, cleared when a write succeeds again.
        self.disk_full: str | None = None
        self._lock = threading.RLock()
        self._db = sqlite3.connect(Path(data_dir) / DATABASE, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged row survives power loss
        self._migrate()
        self._clean_temporaries()

    def _migrate(self) -> None:
        """Create the table, or bring an older one forward to :data:`SCHEMA_VERSION`, in one transaction."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise IngestStoreInvalid(f"{DATABASE} has schema version {version}; this Glimpse knows up to "
                                     f"{SCHEMA_VERSION}: install the newer Glimpse again")
        if version == SCHEMA_VERSION:
            return
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'added'").fetchone()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not exists:
                self._db.execute(_TABLE.format(name="added"))
            else:  # version 0: SQLite cannot widen a CHECK in place, so the table is copied
                self._db.execute(_TABLE.format(name="added_v1"))
                self._db.execute(f"INSERT INTO added_v1 ({_COLUMNS_V0}, attempts) "
                                 f"SELECT {_COLUMNS_V0}, 0 FROM added")
                self._db.execute("DROP TABLE added")
                self._db.execute("ALTER TABLE added_v1 RENAME TO added")
                log.info("ingest database migrated from schema version %d to %d", version, SCHEMA_VERSION)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _clean_temporaries(self) -> None:
        for tmp in self.root.rglob(".*.tmp"):  # left by a kill mid-write; never referenced
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # --- adding ---------------------------------------------------------------------

    def add_upload(self, name: str, data: bytes, in_bundle=None, queue_max: int | None = None) -> Added:
        """Store an uploaded photo durably and queue it.

        Args:
            name: the file's name as uploaded.
            data: its bytes.
            in_bundle: ``id -> bool``, whether the served bundle holds that photo
                already; such a photo is not stored again (status ``in_bundle``).
            queue_max: refuse the photo when this many are already queued (checked
                for each photo, under the store's lock, so concurrent requests
                cannot overrun it together).

        Raises:
            IngestBusy: ``queue_max`` photos are waiting.
            IngestDiskFull: the disk is full (nothing of the photo is left behind).
            IngestRefused: not a photo file type, not an image, a decompression bomb, or
                needing more memory to decode than the budget; the message is the reason
                alone (results show the name beside it).
        """
        suffix = PurePosixPath(name).suffix.lower()
        if suffix not in images.PHOTO_SUFFIXES:
            raise IngestRefused(f"not a photo file type ({', '.join(sorted(images.PHOTO_SUFFIXES))})")
        try:
            # Header only: cheap, and refuses bombs and photos too big to decode before storing.
            images.check_photo_bytes(data, name, max_bytes=self.max_bytes, min_side=self.min_side)
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
            if queue_max is not None:
                waiting = self._db.execute("SELECT COUNT(*) FROM added WHERE status = 'queued'").fetchone()[0]
                if waiting >= queue_max:
                    raise IngestBusy(f"{name}: {waiting} photos are waiting to be added (ingest_queue_max "
                                     f"{queue_max}); try again later")
            source = f"files/{ident}{suffix}"
            shown = f"{UPLOAD_FOLDER}/{_safe_name(name)}"
            try:
                write_durably(self.root / source, data)
                self._insert(ident, digest, shown, source, len(data))
            except (OSError, sqlite3.Error) as exc:
                if not is_disk_full(exc):
                    raise
                (self.root / source).unlink(missing_ok=True)  # the row was not written: nothing refers to it
                raise IngestDiskFull(self.note_disk_full(exc, f"{name}: not stored")) from None
            self.disk_full = None
        return Added(ident, "queued", shown)

    def note_disk_full(self, exc: BaseException, what: str) -> str:
        """Record that the disk is full (status and display show it); the message for what was refused."""
        self.disk_full = f"disk full: {self.root.parent} has {_free_mib(self.root):.1f} MiB free"
        log.warning("%s: %s (%s)", what, self.disk_full, exc)
        return f"{what}: the device's disk is full ({self.root.parent}); free some space and add it again"

    def free_bytes(self) -> int:
        """Free bytes on the data directory's file system."""
        return shutil.disk_usage(self.root).free

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

    def claim(self, ident: str, max_attempts: int) -> bool:
        """Count an attempt at a queued photo, durably, before the worker starts on it.

        A photo whose processing kills the daemon (the kernel's OOM killer, a crash in a
        decoder) keeps its count; once ``max_attempts`` attempts were started and none
        finished, it is quarantined instead of being tried again at every start.

        Returns:
            True when the worker may go on; False when the photo was quarantined now.
        """
        with self._lock:
            row = self._db.execute("SELECT attempts FROM added WHERE id = ? AND status = 'queued'",
                                   (ident,)).fetchone()
            if row is None:
                return False  # removed or done meanwhile
            if row[0] >= max_attempts:
                reason = (f"quarantined: the daemon stopped {row[0]} times while adding this photo "
                          "(killed, for example for memory); it is not tried again. Remove it, or add a "
                          "smaller copy")
                self._db.execute("UPDATE added SET status = 'quarantined', error = ?, updated = ? WHERE id = ?",
                                 (reason, time.time(), ident))
                log.error("added photo %s %s", ident, reason)
                return False
            self._db.execute("UPDATE added SET attempts = attempts + 1 WHERE id = ?", (ident,))
            return True

    def release(self, ident: str) -> None:
        """Take back an attempt that did not fail because of the photo (the disk was full)."""
        with self._lock:
            self._db.execute("UPDATE added SET attempts = MAX(0, attempts - 1) WHERE id = ?", (ident,))

    def source_path(self, source: str) -> Path:
        """The file behind a row's ``source``."""
        return Path(source) if source.startswith("/") else self.root / source

    def mark_ready(self, ident: str, model: str, vector: np.ndarray, photo: images.Photo,
                   thumb: bytes, preview: bytes | None) -> None:
        """Store the renditions, then record the embedding (the commit marks the photo done).

        Raises:
            IngestDiskFull: the disk is full; nothing of this photo's renditions is left
                and the photo stays queued.
        """
        written = []
        try:
            for kind, data in (("thumbs", thumb), ("previews", preview)):
                if data is not None:
                    target = self.root / kind / f"{ident}.jpg"
                    write_durably(target, data)
                    written.append(target)
            with self._lock:
                self._db.execute(
                    "UPDATE added SET status = 'ready', error = NULL, model = ?, embedding = ?, width = ?, "
                    "height = ?, taken = ?, thumb = ?, preview = ?, updated = ? WHERE id = ?",
                    (model, np.asarray(vector, np.float32).tobytes(), photo.width, photo.height, photo.taken,
                     f"thumbs/{ident}.jpg", f"previews/{ident}.jpg" if preview is not None else None,
                     time.time(), ident))
        except (OSError, sqlite3.Error) as exc:
            if not is_disk_full(exc):
                raise
            for target in written:  # the row still says queued: these would only take space
                target.unlink(missing_ok=True)
            raise IngestDiskFull(self.note_disk_full(exc, f"added photo {ident}")) from None
        self.disk_full = None

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
        """Photos by status, the latest failure, the quarantined photos (up to 20) and a full disk."""
        with self._lock:
            counts = dict(self._db.execute("SELECT status, COUNT(*) FROM added GROUP BY status").fetchall())
            failed = self._db.execute("SELECT path, error FROM added WHERE status = 'failed' "
                                      "ORDER BY updated DESC LIMIT 1").fetchone()
            quarantined = self._db.execute("SELECT id, path, error FROM added WHERE status = 'quarantined' "
                                           "ORDER BY updated DESC LIMIT 20").fetchall()
        return {"queued": counts.get("queued", 0), "ready": counts.get("ready", 0),
                "failed": counts.get("failed", 0), "quarantined": counts.get("quarantined", 0),
                "last_failure": {"path": failed[0], "reason": failed[1]} if failed else None,
                "quarantine": [{"id": q[0], "path": q[1], "reason": q[2]} for q in quarantined],
                "disk_full": self.disk_full}

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


def _free_mib(path: Path) -> float:
    try:
        return shutil.disk_usage(path).free / 2**20
    except OSError:
        return 0.0


def _safe_name(name: str) -> str:
    """A file name without folders or control characters (names come from browsers)."""
    base = PurePosixPath(name.replace("\\", "/")).name
    cleaned = "".join(c for c in base if c.isprintable()).strip() or "photo"
    return cleaned[:200]


class Ingestor:
    """The background worker: embeds queued photos one at a time.

    Memory stays bounded: one photo is decoded at a time, within ``max_bytes``
    (reduced as it is decoded for JPEGs, right after for other formats), and the
    queue lives in SQLite, not in memory. Each attempt is counted before it
    starts, so a photo that kills the daemon is quarantined after
    ``max_attempts``. On a full disk the worker pauses (the photo stays queued)
    and tries again once space returns.

    Args:
        store: the ingest store.
        encoder_factory: returns the :class:`~device.encoders.ImageEncoder` of the
            model being served (called again after a reload changes the model).
        on_ready: called after each photo is ready or failed (the daemon refreshes its delta layer).
        thumb_size, preview_size: renditions, as the host build makes them.
        max_bytes: memory decoding one photo may take (default: the store's budget).
        max_attempts: attempts at one photo before it is quarantined.
    """

    #: Seconds between two looks at the free space while paused on a full disk.
    DISK_RETRY_SECONDS = 5.0
    #: Free space the worker waits for before trying again (a thumbnail and a preview fit).
    DISK_RESUME_BYTES = 2 * 2**20

    def __init__(self, store: IngestStore, encoder_factory, on_ready, thumb_size: int = 320,
                 preview_size: int = 1280, max_bytes: int | None = None, max_attempts: int = 3):
        self.store = store
        self._encoder_factory = encoder_factory
        self._on_ready = on_ready
        self.thumb_size, self.preview_size = thumb_size, preview_size
        self.max_bytes = store.max_bytes if max_bytes is None else max_bytes
        self.max_attempts = max_attempts
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.processed = 0
        #: Why the worker waits ("disk full: ..."), or ``None`` while it works.
        self.paused: str | None = None

    def start(self) -> None:
        """Start the worker thread."""
        self._stop.clear()
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
            if self.store.disk_full and not self.paused:
                self.paused = self.store.disk_full  # an upload found the disk full: wait for space too
            if self.paused and not self._space_returned():
                self._wake.wait(self.DISK_RETRY_SECONDS)
                self._wake.clear()
                continue
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
                except IngestDiskFull as exc:
                    self._pause(ident, exc)
                    break
                except Exception as exc:  # noqa: BLE001 - one bad photo must not stop the worker
                    if is_disk_full(exc):  # SQLite (or a write) on a full disk outside mark_ready
                        self._pause(ident, exc)
                        break
                    log.exception("embedding added photo %s failed", ident)
                    try:
                        self.store.mark_failed(ident, f"internal error: {exc!r}")
                    except Exception:  # noqa: BLE001 - keep the worker; the row stays queued
                        log.exception("could not record the failure of added photo %s", ident)
                    self._on_ready()

    def _pause(self, ident: str, exc: BaseException) -> None:
        try:
            self.store.release(ident)  # a full disk is not the photo's fault
        except Exception:  # noqa: BLE001 - SQLite may be unable to write either
            pass
        if self.store.disk_full is None:
            self.store.note_disk_full(exc, f"added photo {ident}")
        self.paused = self.store.disk_full
        log.warning("adding photos is paused until space is freed: %s", self.paused)

    def _space_returned(self) -> bool:
        try:
            free = self.store.free_bytes()
        except OSError:
            return False
        if free < self.DISK_RESUME_BYTES:
            return False
        log.info("adding photos again: %.1f MiB free", free / 2**20)
        self.paused = None
        self.store.disk_full = None
        return True

    def process(self, ident: str, source: str) -> bool:
        """Embed one queued photo; True when it is ready.

        Raises:
            IngestDiskFull: the disk is full; the photo stays queued.
        """
        encoder = self._encoder_factory()  # loaded before the attempt is counted
        if not self.store.claim(ident, self.max_attempts):
            self._on_ready()
            return False
        try:
            photo = images.open_photo(self.store.source_path(source),
                                      min_side=max(encoder.input_size, self.thumb_size, self.preview_size),
                                      max_bytes=self.max_bytes)
        except ImageUnreadable as exc:
            self.store.mark_failed(ident, exc.reason)  # listed beside the photo's path
            log.warning("added photo %s skipped: %s", ident, exc)
            self._on_ready()
            return False
        vector = encoder.embed_image(photo.image)
        problem = embedding_problem(vector)
        if problem is not None:  # never into the delta layer: it would score NaN
            self.store.mark_failed(ident, f"{PurePosixPath(source).name}: {problem}")
            self._on_ready()
            return False
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
