"""The build cache: what a rebuild need not compute again.

Keyed by the photo's content hash, so renaming or moving a photo costs
nothing, and by the model's embedding key (``id@version`` and its image tower's
sha256), so a new model, or one rebuilt under the same name, re-embeds everything:

* embeddings and photo facts (size, EXIF date) in SQLite (WAL mode),
  committed every few photos, so a build killed half-way resumes where it stopped;
* thumbnails and previews as files, named by hash, size and format.

``glimpse-provision train`` keeps the frozen towers' outputs here too
(:class:`FeatureCache`), keyed by content hash and tower identity.

The database carries its schema version (``PRAGMA user_version``, as rclip's
``DB.VERSION``); opening an older one migrates it forward in one transaction
and keeps every row, and one from a newer Glimpse is refused rather than
misread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from device.errors import CacheInvalid

#: Photos embedded between two commits: a killed build loses at most this many.
COMMIT_EVERY = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model   TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    vector  BLOB NOT NULL,
    width   INTEGER NOT NULL,
    height  INTEGER NOT NULL,
    taken   TEXT,
    PRIMARY KEY (model, sha256)
)
"""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/glimpse`` (``~/.cache/glimpse``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "glimpse"


def _open_db(path: Path) -> sqlite3.Connection:
    """Open (or create) the cache database in WAL mode, migrated to :data:`SCHEMA_VERSION`.

    Raises:
        CacheInvalid: the database was written by a newer Glimpse.
    """
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    try:
        _migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, one step at a time, all in one transaction."""
    db.execute("BEGIN IMMEDIATE")  # two processes opening an old cache: one migrates, the other waits
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CacheInvalid(f"{path} is a cache of a newer Glimpse (schema {version}, this one reads up to "
                               f"{SCHEMA_VERSION}): pass another --cache-dir, or --no-cache")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {step}")
        db.commit()
    except BaseException:
        db.rollback()
        raise


class BuildCache:
    """Embeddings and renditions of photos already processed.

    Args:
        directory: the cache directory (created if missing).
        model_id: the model's :attr:`~device.model.ModelSpec.embedding_key` (``id@version`` and its
            image tower's sha256); other models' entries are ignored.
    """

    def __init__(self, directory: Path, model_id: str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.model_id = model_id
        self._db = _open_db(self.directory / "embeddings.sqlite")
        self._pending = 0
        self._lock = threading.Lock()

    def get(self, sha256: str):
        """``(vector, width, height, taken)`` for a cached photo, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT vector, width, height, taken FROM embeddings WHERE model = ? AND sha256 = ?",
                (self.model_id, sha256)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[0], dtype=np.float32).copy(), row[1], row[2], row[3]

    def put(self, sha256: str, vector: np.ndarray, width: int, height: int, taken: str | None) -> None:
        """Remember one photo's embedding; committed in small batches."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?, ?)",
                (self.model_id, sha256, np.asarray(vector, dtype=np.float32).tobytes(), width, height, taken))
            self._pending += 1
            if self._pending >= COMMIT_EVERY:
                self._db.commit()
                self._pending = 0

    def rendition_path(self, sha256: str, kind: str, size: int, suffix: str) -> Path:
        """Where a thumbnail or preview of this photo is (or will be) cached."""
        return self.directory / "renditions" / sha256[:2] / f"{sha256}-{kind}{size}{suffix}"

    def get_rendition(self, sha256: str, kind: str, size: int, suffix: str) -> bytes | None:
        """Cached rendition bytes, or ``None``."""
        try:
            return self.rendition_path(sha256, kind, size, suffix).read_bytes()
        except OSError:
            return None

    def put_rendition(self, sha256: str, kind: str, size: int, suffix: str, data: bytes) -> None:
        """Store a rendition; written to a temporary name first so a kill never leaves half a file."""
        path = self.rendition_path(sha256, kind, size, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def close(self) -> None:
        """Commit what is pending and close the database."""
        with self._lock:
            self._db.commit()
            self._db.close()


_FILES_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL
)
"""


class HashCache:
    """sha256 of files by (path, size, mtime), so a rebuild does not re-read unchanged photos.

    Shares the cache directory's database with :class:`BuildCache`.
    """

    def __init__(self, directory: Path):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._db = _open_db(Path(directory) / "embeddings.sqlite")

    def sha256(self, path: Path, hasher) -> str:
        """The file's sha256, from the cache when size and mtime are unchanged, else ``hasher(path)``.

        Raises:
            OSError: the file cannot be read.
        """
        stat = path.stat()
        key = str(path)
        row = self._db.execute("SELECT size, mtime_ns, sha256 FROM files WHERE path = ?", (key,)).fetchone()
        if row and row[0] == stat.st_size and row[1] == stat.st_mtime_ns:
            return row[2]
        digest = hasher(path)
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                         (key, stat.st_size, stat.st_mtime_ns, digest))
        return digest

    def close(self) -> None:
        """Commit and close."""
        self._db.commit()
        self._db.close()


_FEATURES_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    tower   TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    shape   TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (tower, sha256)
)
"""


#: The cache database's schema version (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: The statements that take the database from version ``n - 1`` to ``n``; never edit
#: a published step, add the next one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 0 -> 1: caches from before versioning hold whichever tables their commands
    # made (builds: embeddings and files; training: features). Make all three and
    # keep every row: the tables themselves did not change.
    1: (_SCHEMA, _FILES_SCHEMA, _FEATURES_SCHEMA),
}


class FeatureCache:
    """What a frozen tower (or its frozen first blocks) outputs for an input, for training.

    Keyed by the input's content sha256 (a photo file's bytes, a caption's
    UTF-8 text) and the tower's identity (network, weights, where it is cut), so
    a second training run, or more epochs, runs no frozen network again.
    Arrays of any shape are kept as float32. Shares the cache directory's
    database with :class:`BuildCache`.

    Args:
        directory: the cache directory (created if missing).
    """

    def __init__(self, directory: Path):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._db = _open_db(Path(directory) / "embeddings.sqlite")
        self._pending = 0

    def get(self, tower: str, sha256: str) -> np.ndarray | None:
        """The cached array for this input and tower, or ``None``."""
        row = self._db.execute("SELECT shape, data FROM features WHERE tower = ? AND sha256 = ?",
                               (tower, sha256)).fetchone()
        if row is None:
            return None
        shape = tuple(int(n) for n in row[0].split("x") if n)
        return np.frombuffer(row[1], dtype=np.float32).reshape(shape).copy()

    def put(self, tower: str, sha256: str, array: np.ndarray) -> None:
        """Remember one input's array; committed in small batches."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        self._db.execute("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)",
                         (tower, sha256, "x".join(str(n) for n in array.shape), array.tobytes()))
        self._pending += 1
        if self._pending >= COMMIT_EVERY:
            self._db.commit()
            self._pending = 0

    def close(self) -> None:
        """Commit what is pending and close the database."""
        self._db.commit()
        self._db.close()
