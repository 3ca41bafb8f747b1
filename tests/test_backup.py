"""``glimpse backup`` and ``glimpse restore``: a real daemon adding photos while the
backup runs (SQLite's backup API), a restore onto a fresh data directory that
searches the restored photos, and archives that must be refused without a trace."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, free_port, run_cli
from device import settings
from device.admin import TOKEN_FILE
from device.backup import MANIFEST, BackupInvalid, RestoreRefused, backup, restore
from device.daemon import Daemon
from device.ingest import IngestStore
from device.search import Filters
from provisioning import demo

#: Photos the test bundle does not hold, added on the device.
ADDED = {"espresso.jpg": "coffee.png", "kitten.jpg": "chelsea.png", "launch.jpg": "rocket.jpg"}


def _photo(source: str, variant: int) -> bytes:
    img = Image.open(demo.demo_photo(source)).convert("RGB")
    img = img.crop((variant % 9 + 1, variant % 7 + 1, img.width - variant % 5 - 1, img.height - variant % 11 - 1))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _upload(port: int, name: str, data: bytes) -> list:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/admin/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                              "X-Glimpse-Client": "test"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=30) as response:
        return json.load(response)


def _tree(root: Path) -> dict:
    """Every path under ``root`` with its sha256 (files) or link target: the state a refusal must keep."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[rel] = "dir"
    return state


def _data_dir(root: Path, bundle_dir: Path) -> Path:
    (root / "bundles").mkdir(parents=True)
    os.symlink(bundle_dir, root / "bundles" / "a")
    os.symlink("bundles/a", root / "current")
    return root


@pytest.fixture(scope="module")
def made(tmp_path_factory, bundle_dir):
    """A backup made by ``glimpse backup`` while a real daemon was adding photos.

    Returns (archive, the daemon's data directory, the config file, photos acknowledged before the backup).
    """
    root = tmp_path_factory.mktemp("backup")
    data = _data_dir(root / "data", bundle_dir)
    conf = root / "glimpse.conf"
    conf.write_text("page_size = 30\n")
    port = free_port()
    env = dict(os.environ, GLIMPSE_CONFIG=str(conf))
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--data-dir", str(data), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert "Glimpse is serving" in proc.stdout.readline()
        for variant, (name, source) in enumerate(ADDED.items()):
            assert _upload(port, name, _photo(source, variant))[0]["status"] == "queued"
        deadline = time.monotonic() + 120
        while _status(port)["ingest"]["ready"] < len(ADDED):
            assert time.monotonic() < deadline, "the daemon did not embed the added photos"
            time.sleep(0.1)  # polling a worker in another process, bounded above

        # More photos arrive while the backup runs: it must still be consistent.
        stop = threading.Event()
        during = []

        def keep_adding():
            for variant in range(10, 60):
                if stop.is_set():
                    return
                during.append(_upload(port, f"more-{variant}.jpg", _photo("astronaut.png", variant))[0])
        adder = threading.Thread(target=keep_adding)
        adder.start()
        try:
            archive = root / "out" / "glimpse.tar"
            out = subprocess.run([sys.executable, "-m", "device", "backup", str(archive), "--data-dir", str(data)],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            assert "added photo" in out.stdout
        finally:
            stop.set()
            adder.join(timeout=120)
        assert during, "no photo was added while the backup ran"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
    return archive, data, conf


def test_a_backup_lists_every_member_with_its_sha256(made):
    archive, data, _ = made
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))
        assert names[0] == MANIFEST
        assert set(names[1:]) == set(manifest["files"])
        for name, entry in manifest["files"].items():
            assert hashlib.sha256(tar.extractfile(name).read()).hexdigest() == entry["sha256"]
    assert "data/glimpse.sqlite" in manifest["files"]
    assert f"data/{TOKEN_FILE}" in manifest["files"]  # made by the daemon's first start
    assert "settings/glimpse.conf" in manifest["files"]
    assert manifest["photos"] >= len(ADDED)
    assert not list(archive.parent.glob(".*"))  # no temporary file left beside it


def test_restore_onto_a_fresh_data_dir_brings_back_searchable_photos(made, tmp_path, bundle_dir):
    archive, data, _ = made
    fresh = tmp_path / "new-device" / "var-lib-glimpse"
    conf = tmp_path / "new-device" / "glimpse.conf"
    out = run_cli("device", "restore", str(archive), "--data-dir", str(fresh), "--config", str(conf),
                  "--port", str(free_port()))
    assert "restored" in out.stdout and "push one from the host" in out.stdout
    assert (fresh / TOKEN_FILE).read_text() == (data / TOKEN_FILE).read_text()
    assert conf.read_text() == "page_size = 30\n"
    assert not list(fresh.glob(".restore-*"))

    # Every restored row's files came back, byte for byte.
    store = IngestStore(fresh)
    try:
        counts = store.counts()
        assert counts["ready"] >= len(ADDED)
        rows = store._db.execute("SELECT path, source, thumb FROM added").fetchall()
    finally:
        store.close()
    for path, source, thumb in rows:
        for name in (source, thumb):
            if name:
                assert (fresh / "added" / name).read_bytes() == (data / "added" / name).read_bytes(), path

    # The new device gets its bundle from the host; then the restored photos are searched.
    _data_dir_link = fresh / "bundles"
    _data_dir_link.mkdir()
    os.symlink(bundle_dir, _data_dir_link / "a")
    os.symlink("bundles/a", fresh / "current")
    daemon = Daemon(settings.load({"data_dir": str(fresh)}, env={}))
    daemon.load()
    assert daemon.start_ingest()
    try:
        best = daemon.searcher.search("a cup of coffee", k=1,
                                      filters=Filters.parse(folder="added"))
        assert best and best[0].item.path == "added/espresso.jpg"
        kitten = daemon.searcher.search("a cat", k=1,
                                        filters=Filters.parse(folder="added"))
        assert kitten[0].item.path == "added/kitten.jpg"
    finally:
        daemon.ingestor.stop()
        daemon.ingest_store.close()


def _empty_conf(tmp_path) -> Path:
    conf = tmp_path / "empty.conf"
    conf.write_text("")
    return conf


def _restored_device(tmp_path, archive) -> Path:
    device = tmp_path / "device"
    restore(archive, device)
    return device


def test_a_truncated_archive_is_refused_and_nothing_changes(made, tmp_path):
    archive = made[0]
    device = _restored_device(tmp_path, archive)
    before = _tree(device)
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
    # Half-way, inside the manifest, and inside the last member's bytes.
    for cut in (len(data) // 2, 700, last.offset_data + last.size - 3):
        short = tmp_path / f"short-{cut}.tar"
        short.write_bytes(data[:cut])
        proc = run_cli("device", "restore", str(short), "--data-dir", str(device), "--port", str(free_port()),
                       "--config", str(_empty_conf(tmp_path)), check=False)
        assert proc.returncode == 2, proc.stdout
        assert proc.stderr.startswith("glimpse: error: ") and "nothing was changed" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert _tree(device) == before
    # Onto a fresh folder: the folder the restore made is gone again.
    with pytest.raises(BackupInvalid):
        restore(tmp_path / f"short-{len(data) // 2}.tar", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()


def _rewrite(archive: Path, out: Path, change) -> Path:
    """A copy of ``archive`` with each member's bytes passed through ``change(name, data)``."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src:
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_a_tampered_archive_is_refused_and_nothing_changes(made, tmp_path):
    archive = made[0]
    device = _restored_device(tmp_path, archive)
    before = _tree(device)

    def flip_a_photo(name, data):
        if name.startswith("data/added/files/"):
            data = bytearray(data)
            data[len(data) // 2] ^= 0x01  # same size, other bytes
        return bytes(data)

    def other_token(name, data):
        return hashlib.sha256(b"attacker").hexdigest().encode() + b"\n" if name.endswith(TOKEN_FILE) else data

    for change in (flip_a_photo, other_token):
        bad = _rewrite(archive, tmp_path / f"{change.__name__}.tar", change)
        with pytest.raises(BackupInvalid, match="altered|bytes"):
            restore(bad, device)
        assert _tree(device) == before


def _evil(tmp_path, member: tarfile.TarInfo, data: bytes = b"", listed: str = "data/added/x") -> Path:
    """A backup with ``member`` after a well-formed manifest listing ``listed``."""
    out = tmp_path / f"evil-{uuid.uuid4().hex[:6]}.tar"
    manifest = {"format": "glimpse-backup", "version": 1, "photos": 0,
                "files": {listed: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}}
    raw = json.dumps(manifest).encode()
    with tarfile.open(out, "w") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return out


def _member(name: str, kind=tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, reason", [
    (_member("../escaped.txt"), "unsafe path"),
    (_member("data/../../escaped.txt"), "unsafe path"),
    (_member("/tmp/glimpse-escaped.txt"), "unsafe path"),
    (_member("data/added/link", tarfile.SYMTYPE, "/etc/passwd"), "is a link"),
    (_member("data/added/hard", tarfile.LNKTYPE, "/etc/passwd"), "is a link"),
    (_member("data/added/dev", tarfile.CHRTYPE), "is a device"),
    (_member("data/added/fifo", tarfile.FIFOTYPE), "a named pipe"),
    (_member("etc/cron.d/evil"), "not in its manifest"),
])
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, member, reason):
    device = tmp_path / "device"
    device.mkdir()
    (device / "glimpse.sqlite").write_bytes(b"")  # a Glimpse data directory
    before = _tree(tmp_path)
    with pytest.raises(BackupInvalid, match=reason):
        restore(_evil(tmp_path, member, b"x" if member.isreg() else b""), device)
    after = _tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("evil-")} == before
    assert not Path("/tmp/glimpse-escaped.txt").exists()


def test_a_manifest_listing_a_path_outside_the_data_is_refused(tmp_path):
    device = tmp_path / "device"
    with pytest.raises(BackupInvalid, match="never holds"):
        restore(_evil(tmp_path, _member("etc/cron.d/evil"), b"x", listed="etc/cron.d/evil"), device)
    assert not device.exists()


def test_restore_onto_a_folder_that_is_not_glimpses_is_refused(made, tmp_path):
    photos = tmp_path / "Pictures"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"the user's photo")
    with pytest.raises(RestoreRefused, match="not a Glimpse data directory"):
        restore(made[0], photos)
    assert _tree(photos) == {"holiday.jpg": hashlib.sha256(b"the user's photo").hexdigest()}


def test_restore_refuses_while_a_daemon_answers(made, tmp_path, bundle_dir):
    data = _data_dir(tmp_path / "data", bundle_dir)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--data-dir", str(data), "--port", str(port),
                             "--ingest", "off"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, GLIMPSE_CONFIG=str(tmp_path / "none.conf")))
    try:
        assert "Glimpse is serving" in proc.stdout.readline()
        assert "admin token" in proc.stdout.readline()  # the first start made it: the state is now settled
        before = _tree(data)
        out = run_cli("device", "restore", str(made[0]), "--data-dir", str(data), "--port", str(port),
                      "--config", str(_empty_conf(tmp_path)), check=False)
        assert out.returncode == 2 and "stop it first" in out.stderr
        assert _tree(data) == before
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()


def test_backup_of_a_folder_that_is_not_glimpses_is_an_error(tmp_path):
    with pytest.raises(BackupInvalid, match="not a Glimpse data directory"):
        backup(tmp_path, tmp_path / "out.tar")
    proc = run_cli("device", "backup", str(tmp_path / "out.tar"), "--data-dir", str(tmp_path / "nowhere"),
                   "--config", str(_empty_conf(tmp_path)), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("glimpse: error: ")


def test_restore_onto_a_used_data_dir_replaces_only_glimpses_state(made, tmp_path, bundle_dir):
    archive = made[0]
    device = _restored_device(tmp_path, archive)
    (device / "bundles").mkdir()
    os.symlink(bundle_dir, device / "bundles" / "a")
    os.symlink("bundles/a", device / "current")
    (device / "added" / "files" / "stale.jpg").write_bytes(b"from before the restore")
    (device / "glimpse.sqlite-wal").write_bytes(b"a log of the old database")
    restore(archive, device)
    # Bundles and the link stay; the old database's log and the old added files are gone with it.
    assert os.readlink(device / "current") == "bundles/a"
    assert (device / "bundles" / "a").resolve() == bundle_dir.resolve()
    assert not (device / "glimpse.sqlite-wal").exists()
    assert not (device / "added" / "files" / "stale.jpg").exists()
    with tarfile.open(archive) as tar:
        assert (device / "glimpse.sqlite").read_bytes() == tar.extractfile("data/glimpse.sqlite").read()
    assert not [p for p in device.iterdir() if p.name.startswith(".restore-")]
