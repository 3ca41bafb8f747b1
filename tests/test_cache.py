"""The build cache's database: versioned, migrated forward from each older schema, rows kept."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from device.errors import CacheInvalid
from provisioning.cache import SCHEMA_VERSION, BuildCache, FeatureCache, HashCache

#: The cache as Glimpse wrote it before the schema was versioned (user_version 0):
#: a build made these two tables, a training run the third.
_V0_BUILD = (
    "CREATE TABLE embeddings (model TEXT NOT NULL, sha256 TEXT NOT NULL, vector BLOB NOT NULL, "
    "width INTEGER NOT NULL, height INTEGER NOT NULL, taken TEXT, PRIMARY KEY (model, sha256))",
    "CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
    "sha256 TEXT NOT NULL)",
)
_V0_TRAIN = (
    "CREATE TABLE features (tower TEXT NOT NULL, sha256 TEXT NOT NULL, shape TEXT NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (tower, sha256))",
)


def _version(directory) -> int:
    with sqlite3.connect(directory / "embeddings.sqlite") as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


def test_a_build_cache_from_before_versioning_keeps_its_rows(tmp_path):
    vector = np.arange(4, dtype=np.float32)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not really a photo")
    stat = photo.stat()
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as db:
        for statement in _V0_BUILD:
            db.execute(statement)
        db.execute("INSERT INTO embeddings VALUES (?, ?, ?, ?, ?, ?)",
                   ("m@1", "ab" * 32, vector.tobytes(), 640, 480, "2024-05-01"))
        db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (str(photo), stat.st_size, stat.st_mtime_ns, "cd" * 32))
    db.close()

    cache = BuildCache(tmp_path, "m@1")
    got, width, height, taken = cache.get("ab" * 32)
    cache.close()
    assert got.tolist() == vector.tolist() and (width, height, taken) == (640, 480, "2024-05-01")
    hashes = HashCache(tmp_path)
    assert hashes.sha256(photo, lambda path: pytest.fail("the cached hash was not used")) == "cd" * 32
    hashes.close()
    assert _version(tmp_path) == SCHEMA_VERSION
    # The migration also made the table a training run needs.
    features = FeatureCache(tmp_path)
    features.put("tower", "ef" * 32, np.ones((2, 3)))
    assert features.get("tower", "ef" * 32).shape == (2, 3)
    features.close()


def test_a_training_cache_from_before_versioning_keeps_its_features(tmp_path):
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as db:
        for statement in _V0_TRAIN:
            db.execute(statement)
        db.execute("INSERT INTO features VALUES (?, ?, ?, ?)",
                   ("tower", "ef" * 32, "2x2", np.eye(2, dtype=np.float32).tobytes()))
    db.close()

    features = FeatureCache(tmp_path)
    assert features.get("tower", "ef" * 32).tolist() == [[1, 0], [0, 1]]
    features.close()
    cache = BuildCache(tmp_path, "m@1")  # the build's tables were added by the migration
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, np.zeros(4), 1, 1, None)
    cache.close()
    assert _version(tmp_path) == SCHEMA_VERSION


def test_a_new_cache_starts_at_the_current_version(tmp_path):
    BuildCache(tmp_path, "m@1").close()
    assert _version(tmp_path) == SCHEMA_VERSION


def test_a_cache_from_a_newer_glimpse_is_refused_untouched(tmp_path):
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as db:
        db.execute("CREATE TABLE later (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(CacheInvalid, match=r"cache of a newer Glimpse .*--no-cache"):
        BuildCache(tmp_path, "m@1")
    with sqlite3.connect(tmp_path / "embeddings.sqlite") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"later"} and _version(tmp_path) == SCHEMA_VERSION + 1
