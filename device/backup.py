"""Backup and restore of what only the device holds: added photos, their database,
the admin token's hash and the settings file.

Bundles are not in a backup: the host that built them pushes them again
(``glimpse-provision push``). A backup is a plain tar file:

* ``glimpse-backup.json`` first: the format, the time, and the sha256 and size of
  every other member;
* ``data/glimpse.sqlite``: the ingest database, copied with SQLite's online backup
  API, so it is consistent while the daemon runs and adds photos;
* ``data/added/...``: the files the copied database refers to (uploads, thumbnails,
  previews; photos of the watched folder stay where they are, only their rows are kept);
* ``data/admin-token.sha256``: the token's hash, when there is one;
* ``settings/glimpse.conf``: the configuration file, when there is one.

:func:`restore` reads the archive into a staging folder inside the data
directory and checks everything (safe member names and types, every sha256,
the database's integrity) before it swaps anything in: a truncated or altered
archive is refused and the current state is untouched. It never extracts
outside the staging folder and never deletes what Glimpse did not make.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from device.admin import TOKEN_FILE
from device.errors import BackupInvalid, GlimpseError, RestoreRefused
from device.ingest import ADDED_DIR, DATABASE

MANIFEST = "glimpse-backup.json"
FORMAT = "glimpse-backup"
VERSION = 1
#: A file Glimpse writes into a data directory it made or restored.
MARKER = ".glimpse-data"
#: Most bytes of a manifest read from an archive (it lists files, it holds none).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class BackupReport:
    """What :func:`backup` wrote: the archive, its members, photos and bytes, and rows left out."""

    path: Path
    files: int
    photos: int
    bytes: int
    left_out: int


@dataclasses.dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore` brought back, and where the settings went ("" when the archive had none)."""

    data_dir: Path
    photos: int
    files: int
    settings: str


def is_data_dir(path: Path) -> bool:
    """Whether ``path`` is a data directory Glimpse made (its marker, database, bundles or token)."""
    path = Path(path)
    return ((path / MARKER).is_file() or (path / DATABASE).is_file() or (path / TOKEN_FILE).is_file()
            or (path / "current").is_symlink() or any((path / "bundles").glob("*/manifest.json")))


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def backup(data_dir: Path, out: Path, config_file: Path | None = None) -> BackupReport:
    """Write a backup of ``data_dir`` (and ``config_file``) to ``out``, atomically.

    Args:
        data_dir: the daemon's data directory (the daemon may be running).
        out: the tar file to write; written beside as a temporary file, then renamed.
        config_file: the configuration file to include, if it exists.

    Raises:
        BackupInvalid: ``data_dir`` is not a Glimpse data directory.
        OSError, sqlite3.Error: reading or writing failed (``out`` is not left half-written).
    """
    data_dir, out = Path(data_dir), Path(out)
    if not data_dir.is_dir() or not is_data_dir(data_dir):
        raise BackupInvalid(f"{data_dir} is not a Glimpse data directory; give it with --data-dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".glimpse-backup-", dir=out.parent) as tmp:
        members: list[tuple[str, Path]] = []
        photos = left_out = 0
        database = data_dir / DATABASE
        if database.is_file():
            copy = Path(tmp) / DATABASE
            photos, left_out, files = _snapshot(database, copy, data_dir / ADDED_DIR)
            members.append((f"data/{DATABASE}", copy))
            members += [(f"data/{ADDED_DIR}/{relative}", data_dir / ADDED_DIR / relative) for relative in files]
        if (data_dir / TOKEN_FILE).is_file():
            members.append((f"data/{TOKEN_FILE}", data_dir / TOKEN_FILE))
        if config_file is not None and Path(config_file).is_file():
            members.append(("settings/glimpse.conf", Path(config_file)))
        listed = {}
        for name, path in members:
            sha, size = _sha256(path)
            listed[name] = {"sha256": sha, "size": size}
        manifest = json.dumps({"format": FORMAT, "version": VERSION,
                               "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "photos": photos, "files": listed}, indent=1).encode()
        partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            with open(partial, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    _add(tar, MANIFEST, manifest)
                    for name, path in members:
                        with open(path, "rb") as handle:
                            info = _info(name, listed[name]["size"])
                            tar.addfile(info, handle)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return BackupReport(out, len(members), photos, out.stat().st_size, left_out)


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(_dt.datetime.now().timestamp())
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def _snapshot(database: Path, copy: Path, added: Path) -> tuple[int, int, list[str]]:
    """Copy the live database with SQLite's backup API; rows whose files are gone
    (removed after the copy began) are dropped from the copy.

    Returns:
        (photos kept, rows dropped, files under ``added/`` the copy refers to).
    """
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)  # a consistent snapshot, while the daemon keeps writing
    finally:
        source.close()
    try:
        rows = target.execute("SELECT id, source, thumb, preview FROM added").fetchall()
        files, dropped = [], []
        for ident, source_name, thumb, preview in rows:
            own = [name for name in (source_name, thumb, preview) if name and not name.startswith("/")]
            if all((added / name).is_file() for name in own):
                files += own
            else:
                dropped.append(ident)
        target.executemany("DELETE FROM added WHERE id = ?", [(ident,) for ident in dropped])
        target.commit()
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        target.close()
    return len(rows) - len(dropped), len(dropped), sorted(set(files))


# --- restore ---------------------------------------------------------------------------------


def restore(archive: Path, data_dir: Path, config_file: Path | None = None) -> RestoreReport:
    """Bring back a backup into ``data_dir`` (the daemon must be stopped).

    Everything is read and checked in a staging folder inside ``data_dir``
    first; only then are the database, the added photos and the token's hash
    swapped in (bundles and the ``current`` link stay as they are).

    Args:
        archive: a file written by :func:`backup`.
        data_dir: where to restore: absent, empty, or a Glimpse data directory.
        config_file: where the settings go: written when absent; when it exists
            with other content, the archive's copy goes beside it as ``NAME.restored``.

    Raises:
        RestoreRefused: ``data_dir`` holds files that are not Glimpse's.
        BackupInvalid: the archive is truncated, altered, not a backup, or holds
            an unsafe member; nothing was changed.
    """
    archive, data_dir = Path(archive), Path(data_dir)
    if not archive.is_file():
        raise BackupInvalid(f"{archive}: no such backup file")
    made = False
    if data_dir.exists():
        if not data_dir.is_dir():
            raise RestoreRefused(f"{data_dir} is not a folder")
        if any(data_dir.iterdir()) and not is_data_dir(data_dir):
            raise RestoreRefused(f"{data_dir} holds files that are not a Glimpse data directory; restore into "
                                 "an empty folder or the device's data directory")
    else:
        data_dir.mkdir(parents=True)
        made = True
    staging = data_dir / f".restore-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        manifest = _extract(archive, staging)
        _check_staged(staging, manifest)
        _swap(staging / "data", data_dir, staging / "old")
        (data_dir / MARKER).write_text("A Glimpse data directory (restored from a backup).\n")
        placed = _place_settings(staging / "settings" / "glimpse.conf", config_file)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            shutil.rmtree(data_dir, ignore_errors=True)  # made by this restore, empty of anything else
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return RestoreReport(data_dir, int(manifest.get("photos", 0)), len(manifest["files"]), placed)


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's name, checked to be a plain relative path of a regular file.

    Raises:
        BackupInvalid: absolute, with ``..``, a link, a device, or any other non-file.
    """
    name = member.name
    path = PurePosixPath(name)
    if (name.startswith("/") or "\\" in name or "\x00" in name or not path.parts
            or any(part in ("..", ".", "") for part in path.parts) or path.as_posix() != name):
        raise BackupInvalid(f"refused: the archive holds an unsafe path {name[:200]!r}; nothing was changed")
    if not member.isreg():
        kind = ("a link" if member.issym() or member.islnk() else "a named pipe" if member.isfifo()
                else "a device" if member.isdev()
                else "a folder" if member.isdir() else "not a plain file")
        raise BackupInvalid(f"refused: the archive member {name[:200]!r} is {kind}; nothing was changed")
    return name


def _extract(archive: Path, staging: Path) -> dict:
    """Read every member into ``staging``, checking each against the manifest; returns the manifest."""
    manifest = None
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _member_name(member)
                if hasattr(tarfile, "data_filter"):
                    try:  # the standard library's own checks on top of ours
                        tarfile.data_filter(member, str(staging))
                    except tarfile.FilterError as exc:
                        raise BackupInvalid(f"refused: unsafe archive member {name[:200]!r} ({exc}); "
                                            "nothing was changed") from None
                if manifest is None:
                    if name != MANIFEST or member.size > MAX_MANIFEST_BYTES:
                        raise BackupInvalid(f"{archive} is not a Glimpse backup (it does not start with {MANIFEST})")
                    manifest = _read_manifest(tar.extractfile(member).read(), archive)
                    continue
                if name in seen:
                    raise BackupInvalid(f"refused: {name} is in the archive twice; nothing was changed")
                seen.add(name)
                expected = manifest["files"].get(name)
                if expected is None:
                    raise BackupInvalid(f"refused: {name} is in the archive but not in its manifest; "
                                        "nothing was changed")
                if member.size != expected["size"]:
                    raise BackupInvalid(f"refused: {name} has {member.size} bytes, its manifest says "
                                        f"{expected['size']}; nothing was changed")
                _copy_checked(tar.extractfile(member), staging / name, expected["sha256"], name)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, GlimpseError):
            raise
        raise BackupInvalid(f"{archive} is truncated or damaged ({exc}); nothing was changed") from None
    if manifest is None:
        raise BackupInvalid(f"{archive} is empty or not a Glimpse backup; nothing was changed")
    missing = sorted(set(manifest["files"]) - seen)
    if missing:
        raise BackupInvalid(f"{archive} is truncated: {len(missing)} file(s) of its manifest are missing, "
                            f"e.g. {missing[0]}; nothing was changed")
    return manifest


def _read_manifest(data: bytes, archive: Path) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise BackupInvalid(f"{archive}: its {MANIFEST} is not JSON; nothing was changed") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupInvalid(f"{archive} is not a Glimpse backup")
    if manifest.get("version") != VERSION:
        raise BackupInvalid(f"{archive} is a Glimpse backup of version {manifest.get('version')!r}; "
                            f"this Glimpse reads version {VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("size"), int) and _HEX64.fullmatch(str(v.get("sha256")))
            for v in files.values()):
        raise BackupInvalid(f"{archive}: its {MANIFEST} does not list files with sha256 and size")
    for name in files:
        if not (name.startswith("data/") or name == "settings/glimpse.conf"):
            raise BackupInvalid(f"refused: the manifest lists {name[:200]!r}, which a backup never holds")
    return manifest


def _copy_checked(source, dest: Path, sha256: str, name: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(dest, "xb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != sha256:
        raise BackupInvalid(f"refused: {name} was altered (its sha256 is not the manifest's); nothing was changed")


def _check_staged(staging: Path, manifest: dict) -> None:
    """The staged database opens and is intact, and the token file holds a sha256."""
    database = staging / "data" / DATABASE
    if database.is_file():
        try:
            db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
            try:
                verdict = db.execute("PRAGMA integrity_check").fetchone()[0]
                db.execute("SELECT id, source, status FROM added LIMIT 1").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise BackupInvalid(f"refused: the backup's database cannot be read ({exc}); nothing was changed") \
                from None
        if verdict != "ok":
            raise BackupInvalid(f"refused: the backup's database is damaged ({verdict}); nothing was changed")
    token = staging / "data" / TOKEN_FILE
    if token.is_file() and not _HEX64.fullmatch(token.read_text(encoding="ascii", errors="replace").strip()):
        raise BackupInvalid(f"refused: the backup's {TOKEN_FILE} does not hold a sha256; nothing was changed")


#: What a restore replaces in a data directory (all Glimpse's own); bundles and ``current`` stay.
_RESTORED = (DATABASE, ADDED_DIR, TOKEN_FILE)
#: Files SQLite keeps beside a database: they belong to the old one and go with it.
_DATABASE_SIDES = (DATABASE + "-wal", DATABASE + "-shm", DATABASE + "-journal")


def _swap(staged: Path, data_dir: Path, old: Path) -> None:
    """Move the old state aside, the staged one in; put the old back if a step fails."""
    old.mkdir()
    moved: list[str] = []
    placed: list[str] = []
    try:
        for name in _RESTORED + _DATABASE_SIDES:
            if os.path.lexists(data_dir / name):
                os.replace(data_dir / name, old / name)
                moved.append(name)
        for name in _RESTORED:
            if os.path.lexists(staged / name):
                os.replace(staged / name, data_dir / name)
                placed.append(name)
    except OSError:
        for name in placed:
            os.replace(data_dir / name, staged / name)
        for name in moved:
            os.replace(old / name, data_dir / name)
        raise


def _place_settings(staged: Path, config_file: Path | None) -> str:
    """Put the backup's settings file in place (see :func:`restore`); says where it went."""
    if not staged.is_file():
        return ""
    if config_file is None:
        return ""
    config_file = Path(config_file)
    if config_file.is_file():
        if config_file.read_bytes() == staged.read_bytes():
            return str(config_file)
        beside = config_file.with_name(config_file.name + ".restored")
        shutil.copyfile(staged, beside)
        return str(beside)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(staged, config_file)
    return str(config_file)
