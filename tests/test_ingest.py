"""On-device ingest: the store, the worker, the delta layer, uploads, and crash safety."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from device import settings
from device.bundle import Bundle
from device.daemon import Daemon
from device.encoders import ImageEncoder
from device.delta import DeltaLayer
from device.ingest import FolderWatcher, IngestRefused, IngestStore, Ingestor
from device.search import Filters, Searcher
from device.web import create_app
from provisioning import demo
from conftest import REPO, run_cli, free_port as _free_port


def photo_bytes(name: str = "coffee.png", variant: int = 0, fmt: str = "JPEG") -> bytes:
    """A distinct photo made from a demo photo (``variant`` changes the crop)."""
    img = Image.open(demo.demo_photo(name)).convert("RGB")
    img = img.crop((variant % 9, variant % 7, img.width - variant % 5, img.height - variant % 11))
    buffer = io.BytesIO()
    img.save(buffer, fmt, quality=90)
    return buffer.getvalue()


@pytest.fixture
def store(tmp_path):
    store = IngestStore(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture(scope="module")
def encoder(bundle_dir):
    with ImageEncoder.create_from_model_dir(Bundle.open(bundle_dir).model_dir) as enc:
        yield enc


def test_upload_is_stored_durably_and_queued_once(store):
    data = photo_bytes()
    first = store.add_upload("My Coffee.jpg", data)
    again = store.add_upload("copy.jpg", data)
    assert first.status == "queued" and first.path == "added/My Coffee.jpg"
    assert again.status == "duplicate" and again.id == first.id
    assert (store.root / "files" / f"{first.id}.jpg").read_bytes() == data
    assert store.counts()["queued"] == 1
    with pytest.raises(IngestRefused, match="not a photo file type"):
        store.add_upload("notes.txt", b"hello")


def test_worker_embeds_and_the_delta_layer_searches(store, encoder, bundle_dir):
    added = store.add_upload("coffee.jpg", photo_bytes())
    delta = DeltaLayer(store, encoder.spec.embedding_key)
    worker = Ingestor(store, lambda: encoder, delta.refresh)
    assert worker.process(*store.next_queued()[0])
    assert store.counts() == {"queued": 0, "ready": 1, "failed": 0, "quarantined": 0, "last_failure": None,
                              "quarantine": [], "disk_full": None}
    item = delta.item(added.id)
    assert item.path == "added/coffee.jpg" and item.thumb == f"added/thumbs/{added.id}.jpg"
    assert store.file(item.thumb).is_file()
    direct = encoder.embed_file(store.root / "files" / f"{added.id}.jpg")
    assert float(delta.embedding(added.id) @ direct) > 0.999

    # The bundle below has a coffee photo too; an added one must compete with it by score.
    with Searcher.from_bundle(bundle_dir) as searcher:
        searcher.delta = delta
        results = searcher.search("a cup of coffee", k=3)
        assert {r.item.path for r in results[:2]} == {"kitchen/coffee.png", "added/coffee.jpg"}
        assert [r.rank for r in results] == [1, 2, 3]
        assert results[0].score >= results[1].score >= results[2].score
        only_added = searcher.search("a cup of coffee", k=5, filters=Filters(folder="added"))
        assert [r.item.path for r in only_added] == ["added/coffee.jpg"]
        similar = searcher.similar(added.id, k=1)
        assert similar[0].item.path == "kitchen/coffee.png"  # the same scene, from the bundle
        assert searcher.item(added.id) == item


def test_unreadable_upload_is_marked_failed_with_a_reason(store, encoder):
    store.add_upload("half.jpg", photo_bytes()[:2000])
    worker = Ingestor(store, lambda: encoder, lambda: None)
    assert not worker.process(*store.next_queued()[0])
    counts = store.counts()
    assert counts["failed"] == 1 and "corrupt or truncated" in counts["last_failure"]["reason"]


def test_a_new_model_queues_added_photos_again(store, encoder):
    store.add_upload("coffee.jpg", photo_bytes())
    Ingestor(store, lambda: encoder, lambda: None).process(*store.next_queued()[0])
    assert store.requeue_other_models(encoder.spec.embedding_key) == 0
    assert store.requeue_other_models("another-model@2") == 1
    assert store.counts()["queued"] == 1


def test_remove_forgets_the_photo_and_its_files(store, encoder):
    added = store.add_upload("coffee.jpg", photo_bytes())
    Ingestor(store, lambda: encoder, lambda: None).process(*store.next_queued()[0])
    store.remove(added.id)
    assert store.counts()["ready"] == 0
    assert not any(store.root.rglob(f"{added.id}*"))


def test_watched_folder_adds_follows_moves_and_forgets_deletions(store, encoder, tmp_path):
    folder = tmp_path / "usb"
    (folder / "trip").mkdir(parents=True)
    (folder / "trip" / "coffee.jpg").write_bytes(photo_bytes())
    (folder / "readme.txt").write_text("not a photo")
    changes = []
    watcher = FolderWatcher(store, folder, lambda: changes.append(1))
    assert watcher.scan() == 1 and store.counts()["queued"] == 1
    assert watcher.scan() == 0  # unchanged files are not read again
    ident = store.next_queued()[0][0]
    Ingestor(store, lambda: encoder, lambda: None).process(*store.next_queued()[0])
    (folder / "trip" / "coffee.jpg").rename(folder / "coffee-moved.jpg")
    watcher.scan()
    delta = DeltaLayer(store, encoder.spec.embedding_key)
    assert delta.item(ident).path == "watched/coffee-moved.jpg"
    (folder / "coffee-moved.jpg").unlink()
    watcher.scan()
    delta.refresh()
    assert len(delta) == 0 and store.counts()["ready"] == 0


@pytest.fixture
def data_dir(tmp_path, bundle_dir):
    root = tmp_path / "data"
    (root / "bundles").mkdir(parents=True)
    shutil.copytree(bundle_dir, root / "bundles" / "first")
    (root / "current").symlink_to("bundles/first")
    return root


def _client(data_dir, **extra):
    daemon = Daemon(settings.load({"data_dir": str(data_dir), **extra}, env={}))
    daemon.load()
    assert daemon.start_ingest()
    return daemon, create_app(daemon).test_client()


#: What a script sends with a multipart upload instead of a page's CSRF token.
SCRIPT = {"X-Glimpse-Client": "test"}


def _files(*items):
    return {"files": [(io.BytesIO(data), name) for name, data in items]}


def test_upload_api_accepts_refuses_and_reports(data_dir):
    daemon, client = _client(data_dir)
    try:
        response = client.post("/api/admin/upload", data=_files(
            ("coffee.jpg", photo_bytes()), ("notes.txt", b"hi"), ("fake.jpg", b"not an image"),
            ("bomb.png", _bomb_png())), content_type="multipart/form-data", headers=SCRIPT)
        assert response.status_code == 202
        results = {r["name"]: r for r in response.get_json()}
        assert results["coffee.jpg"]["status"] == "queued"
        assert "not a photo file type" in results["notes.txt"]["reason"]
        assert results["fake.jpg"]["reason"].startswith("not a photo: the file is not an image Glimpse can read")
        assert "decompression bomb" in results["bomb.png"]["reason"]
        for name in ("notes.txt", "fake.jpg", "bomb.png"):  # the result names the file; the reason does not
            assert name not in results[name]["reason"]
        # Searchable once the worker has embedded it (bounded wait on the worker's progress).
        deadline = time.monotonic() + 60
        while daemon.ingest_store.counts()["queued"] and time.monotonic() < deadline:
            daemon.ingestor.wake()
            time.sleep(0.05)
        found = client.get("/api/search?q=a+cup+of+coffee&k=2&folder=added").get_json()
        assert found[0]["path"] == "added/coffee.jpg"
        status = client.get("/api/status").get_json()["ingest"]
        assert status["ready"] == 1 and status["enabled"] and status["worker_alive"]
        with client.get(f"/thumbs/{found[0]['id']}") as thumb:
            assert thumb.status_code == 200 and thumb.data[:2] == b"\xff\xd8"
        assert client.delete(f"/api/admin/items/{found[0]['id']}").status_code == 200
        assert client.get("/api/search?q=coffee&k=2&folder=added").get_json() == []
    finally:
        daemon.ingestor.stop()


def _bomb_png() -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_upload_limits_auth_and_busy(data_dir):
    import hashlib

    token_hash = hashlib.sha256(b"s3cret").hexdigest()
    daemon, client = _client(data_dir, max_upload_mb="1", ingest_queue_max="1", admin_token_sha256=token_hash)
    daemon.ingestor.stop()  # keep the queue full for the 503 case
    form = _files(("coffee.jpg", photo_bytes()))
    assert client.post("/api/admin/upload", data=form, content_type="multipart/form-data",
                       headers=SCRIPT).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    # A body encoded by hand: the test client would spool it to a file it never closes.
    body, boundary = _multipart("big.jpg", os.urandom(2 * 1024 * 1024))
    too_big = client.post("/api/admin/upload", data=body, headers=auth,
                          content_type=f"multipart/form-data; boundary={boundary}")
    assert too_big.status_code == 413 and "error" in too_big.get_json()
    ok = client.post("/api/admin/upload", data=_files(("coffee.jpg", photo_bytes())), headers=auth,
                     content_type="multipart/form-data")
    assert ok.status_code == 202
    busy = client.post("/api/admin/upload", data=_files(("cat.jpg", photo_bytes("chelsea.png"))), headers=auth,
                       content_type="multipart/form-data")
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "30"
    # The HTML form carries the token as a field.
    client.get("/add")  # sets the CSRF cookie the form's token must match
    page = client.post("/add", data={"token": "s3cret", "csrf_token": client.get_cookie("glimpse_csrf").value,
                                     **_files(("coffee2.jpg", photo_bytes(variant=3)))},
                       content_type="multipart/form-data")
    assert page.status_code in (202, 503)


def test_add_page_and_ingest_off_with_an_explicit_bundle(data_dir, bundle_dir):
    daemon, client = _client(data_dir)
    try:
        html = client.get("/add").get_data(as_text=True)
        assert 'enctype="multipart/form-data"' in html and 'name="files"' in html and "multiple" in html
        assert "Add photos" in client.get("/").get_data(as_text=True)
    finally:
        daemon.ingestor.stop()
    off = Daemon(settings.load({"bundle": str(bundle_dir)}, env={}))
    off.load()
    assert not off.start_ingest()
    client = create_app(off).test_client()
    assert client.get("/add").status_code == 404
    assert client.get("/api/status").get_json()["ingest"] == {"enabled": False}


# --- the daemon as a process: ingest CLI, and kill -9 many times -------------------------



def _start(data_dir, port, **settings):
    proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--data-dir", str(data_dir), "--port",
                             str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, GLIMPSE_CONFIG="/nonexistent",
                                     **{f"GLIMPSE_{k.upper()}": str(v) for k, v in settings.items()}))
    line = proc.stdout.readline()
    assert "Glimpse is serving" in line, line
    return proc


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        return json.load(response)


def test_glimpse_ingest_makes_a_photo_searchable_within_seconds(data_dir, tmp_path, library):
    photo = tmp_path / "espresso.jpg"
    photo.write_bytes(photo_bytes(variant=5))
    port = _free_port()
    proc = _start(data_dir, port)
    try:
        started = time.monotonic()
        out = run_cli("device", "ingest", str(photo), "--port", str(port)).stdout
        assert "1 added, 0 added before, 0 already in the bundle, 0 refused" in out
        # Photos the served bundle holds are not added again, and say so.
        again = run_cli("device", "ingest", str(library / "pets"), str(library / "space" / "moon.png"),
                        "--port", str(port)).stdout
        assert "cat.png: already in the bundle" in again
        assert "0 added, 0 added before, 2 already in the bundle, 0 refused" in again
        found = []
        while time.monotonic() - started < 60 and not found:
            found = _get(port, "/api/search?q=a+cup+of+coffee&k=3&folder=added")
        assert found and found[0]["path"] == "added/espresso.jpg"
        print(f"searchable {time.monotonic() - started:.2f}s after `glimpse ingest` started")
        status = run_cli("device", "status", "--port", str(port)).stdout
        assert "added on the device: 1 searchable, 0 waiting" in status
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()


def test_kill_9_at_any_point_loses_no_acknowledged_photo(data_dir):
    """Upload, kill -9 mid-ingest, restart; many times. Every acknowledged photo survives."""
    port = _free_port()
    acknowledged = []
    sources = ["coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]
    kills = 8
    # Each kill may land while the same photo is in hand (on a busy machine a photo can take longer
    # than a round): more attempts than kills, so that none is quarantined as a crash loop would be.
    attempts = {"ingest_max_attempts": kills + 1}
    for round_number in range(kills):
        proc = _start(data_dir, port, **attempts)
        try:
            for i in range(3):
                n = round_number * 3 + i
                body, boundary = _multipart(f"p{n}.jpg", photo_bytes(sources[n % 4], variant=n))
                request = urllib.request.Request(f"http://127.0.0.1:{port}/api/admin/upload", data=body,
                                                 method="POST",
                                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                          **SCRIPT})
                with urllib.request.urlopen(request, timeout=30) as response:
                    result = json.load(response)[0]
                assert result["status"] == "queued", result
                acknowledged.append(result["id"])
        finally:
            proc.kill()  # SIGKILL: no chance to finish anything
            proc.wait()
            proc.stdout.close()
    database = data_dir / "glimpse.sqlite"
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = dict(db.execute("SELECT id, status FROM added").fetchall())
    assert set(acknowledged) <= set(stored), "an acknowledged photo was lost"
    # A last start finishes the queue.
    proc = _start(data_dir, port, **attempts)
    try:
        deadline = time.monotonic() + 120
        while _get(port, "/api/status")["ingest"]["queued"] and time.monotonic() < deadline:
            time.sleep(0.1)
        ingest = _get(port, "/api/status")["ingest"]
        assert ingest["queued"] == 0 and ingest["ready"] == len(acknowledged) and ingest["failed"] == 0
        assert ingest["quarantined"] == 0
        for ident in acknowledged:
            assert _get(port, f"/api/items/{ident}")["id"] == ident
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert not list((data_dir / "added").rglob("*.tmp"))
    for thumb in (data_dir / "added" / "thumbs").iterdir():
        with Image.open(thumb) as img:
            img.load()  # whole, not half-written
    print(f"{kills} kills, {len(acknowledged)} acknowledged photos, all present and searchable")


def _multipart(name: str, data: bytes):
    import uuid

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, boundary


def test_a_photo_added_with_the_web_page_form_is_found_within_seconds(data_dir):
    daemon, client = _client(data_dir)
    try:
        started = time.monotonic()
        client.get("/add")  # sets the CSRF cookie the form's token must match
        page = client.post("/add", data={"csrf_token": client.get_cookie("glimpse_csrf").value,
                                         **_files(("rocket-launch.jpg", photo_bytes("rocket.jpg", variant=2)))},
                           content_type="multipart/form-data")
        assert page.status_code == 202
        assert "rocket-launch.jpg: added, being embedded" in page.get_data(as_text=True)
        found = []
        while not found and time.monotonic() - started < 60:  # bounded; the worker runs meanwhile
            found = client.get("/api/search?q=a+space+launch&k=1&folder=added").get_json()
        assert found[0]["path"] == "added/rocket-launch.jpg"
        print(f"found {time.monotonic() - started:.2f}s after the form was posted, no restart")
    finally:
        daemon.ingestor.stop()


def test_a_photo_the_bundle_holds_is_reported_not_added_and_not_counted(data_dir, library):
    daemon, client = _client(data_dir)
    try:
        cat = (library / "pets" / "cat.png").read_bytes()
        response = client.post("/api/admin/upload", data=_files(("cat.png", cat)), content_type="multipart/form-data",
                               headers=SCRIPT)
        [result] = response.get_json()
        assert result["status"] == "in_bundle" and result["id"] in daemon.searcher.bundle
        assert daemon.ingest_store.counts()["queued"] == 0  # nothing stored or queued
        client.get("/add")  # sets the CSRF cookie the form's token must match
        page = client.post("/add", data={"csrf_token": client.get_cookie("glimpse_csrf").value, **_files(("cat.png", cat))},
                           content_type="multipart/form-data")
        assert "cat.png: already in the bundle" in page.get_data(as_text=True)
        # A copy added before the bundle held it (an older upload) is embedded but not searchable.
        daemon.ingest_store.add_upload("cat.png", cat)
        deadline = time.monotonic() + 60
        while daemon.ingest_store.counts()["queued"] and time.monotonic() < deadline:
            daemon.ingestor.wake()
            time.sleep(0.05)
        daemon.delta.refresh()
        status = client.get("/api/status").get_json()["ingest"]
        assert status["ready"] == 1 and status["searchable"] == 0 and status["in_bundle"] == 1
    finally:
        daemon.ingestor.stop()


# --- the queue limit per photo (issue 13.5) ------------------------------------------------


def _tiny_photo(n: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (n % 256, n // 256, 7)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_queue_limit_is_checked_for_each_photo_of_a_request(data_dir):
    daemon, client = _client(data_dir, ingest_queue_max="50")
    daemon.ingestor.stop()  # nothing leaves the queue while the test fills it
    response = client.post("/api/admin/upload", data=_files(*[(f"p{n}.png", _tiny_photo(n)) for n in range(200)]),
                           content_type="multipart/form-data", headers=SCRIPT)
    assert response.status_code == 202  # partly accepted
    results = response.get_json()
    queued = [r for r in results if r["status"] == "queued"]
    refused = [r for r in results if r["status"] == "refused"]
    assert len(results) == 200 and len(queued) == 50 and len(refused) == 150
    assert [r["name"] for r in queued] == [f"p{n}.png" for n in range(50)]
    assert all(r["cause"] == "busy" and "ingest_queue_max 50" in r["reason"] for r in refused)
    assert daemon.ingest_store.counts()["queued"] == 50
    # A request of which nothing is accepted is not a 202: 503 with each file's reason.
    again = client.post("/api/admin/upload", data=_files(("late.png", _tiny_photo(999))),
                        content_type="multipart/form-data", headers=SCRIPT)
    assert again.status_code == 503 and again.headers["Retry-After"] == "30"
    body = again.get_json()
    assert "try again later" in body["error"] and body["results"][0]["cause"] == "busy"
    # Every file refused as not a photo: 400, not 202.
    bad = client.post("/api/admin/upload", data=_files(("notes.txt", b"hi")), content_type="multipart/form-data", headers=SCRIPT)
    assert bad.status_code == 400 and "not a photo file type" in bad.get_json()["results"][0]["reason"]
    # A known photo is not refused by a full queue: it is already there.
    dup = client.post("/api/admin/upload", data=_files(("p0-again.png", _tiny_photo(0))),
                      content_type="multipart/form-data", headers=SCRIPT)
    assert dup.status_code == 202 and dup.get_json()[0]["status"] == "duplicate"


# --- the schema version, attempts and quarantine (issue 13.1) -------------------------------

_SCHEMA_V0 = """
CREATE TABLE IF NOT EXISTS added (
    id TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, path TEXT NOT NULL, source TEXT NOT NULL,
    size INTEGER NOT NULL, status TEXT NOT NULL CHECK (status IN ('queued', 'ready', 'failed')), error TEXT,
    model TEXT, embedding BLOB, width INTEGER, height INTEGER, taken TEXT, thumb TEXT, preview TEXT,
    added REAL NOT NULL, updated REAL NOT NULL
)
"""


def test_a_database_of_the_first_schema_is_migrated_forward(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "glimpse.sqlite") as db:  # as 7e04d5e left it
        db.execute(_SCHEMA_V0)
        db.execute("INSERT INTO added VALUES ('a1', 'h1', 'added/x.jpg', 'files/a1.jpg', 3, 'queued', NULL, NULL, "
                   "NULL, NULL, NULL, NULL, NULL, NULL, 1.0, 1.0)")
        db.execute("INSERT INTO added VALUES ('b2', 'h2', 'added/y.jpg', 'files/b2.jpg', 4, 'failed', 'bad', NULL, "
                   "NULL, NULL, NULL, NULL, NULL, NULL, 2.0, 2.0)")
    store = IngestStore(data)
    try:
        assert store.next_queued() == [("a1", "files/a1.jpg")]
        counts = store.counts()
        assert counts["queued"] == 1 and counts["failed"] == 1 and counts["last_failure"]["reason"] == "bad"
        assert store.claim("a1", max_attempts=1)  # the new column works
        assert not store.claim("a1", max_attempts=1)  # and the new status
        assert store.counts()["quarantined"] == 1
    finally:
        store.close()
    with sqlite3.connect(data / "glimpse.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    IngestStore(data).close()  # opening again migrates nothing


def test_a_database_of_a_newer_schema_is_refused(tmp_path):
    from device.ingest import IngestStoreInvalid

    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "glimpse.sqlite") as db:
        db.execute("PRAGMA user_version = 7")
    with pytest.raises(IngestStoreInvalid, match="schema version 7"):
        IngestStore(data)


def test_a_photo_that_keeps_stopping_the_worker_is_quarantined_not_retried(store, encoder):
    # Each start of the worker on the photo is counted before it begins; a kill leaves the count.
    added = store.add_upload("boom.jpg", photo_bytes(variant=4))
    for _ in range(2):
        assert store.claim(added.id, max_attempts=2)  # ... and then the daemon was killed
    worker = Ingestor(store, lambda: encoder, lambda: None, max_attempts=2)
    assert worker.process(added.id, store.next_queued()[0][1]) is False
    counts = store.counts()
    assert counts["queued"] == 0 and counts["ready"] == 0 and counts["quarantined"] == 1
    assert "stopped 2 times" in counts["quarantine"][0]["reason"]
    assert store.next_queued() == []


# --- a full disk (issue 13.9) ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs: a data directory that fills up after a few photos (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _noise_jpeg(n: int, side: int = 360) -> bytes:
    """About 200 KB: under the size the form parser would spool to a temporary file."""
    import numpy as np

    pixels = np.random.default_rng(n).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _fill(path) -> None:
    """Write ``path`` until the disk is full."""
    with open(path, "wb", buffering=0) as handle:
        try:
            for _ in range(10_000):  # bounded: 10 GB
                handle.write(b"\1" * 2**20)
        except OSError:
            pass


def test_a_full_disk_gets_507_and_the_worker_pauses_until_space_returns(small_disk, bundle_dir):
    data_dir = small_disk / "data"
    data_dir.mkdir()
    (data_dir / "current").symlink_to(bundle_dir)  # the bundle lives elsewhere; only ingest fills this disk
    daemon, client = _client(data_dir)
    reserve = small_disk / "reserve"  # room given back at the end
    reserve.write_bytes(b"\1" * (5 * 2**20))
    daemon.ingestor.stop()  # photos stay queued until the disk is full
    try:
        statuses, refused = [], None
        for n in range(200):  # bounded: 8 MiB holds far fewer
            response = client.post("/api/admin/upload", data=_files((f"n{n}.jpg", _noise_jpeg(n))),
                                   content_type="multipart/form-data", headers=SCRIPT)
            statuses.append(response.status_code)
            if response.status_code != 202:
                refused = response
                break
        assert refused is not None and refused.status_code == 507, statuses
        body = refused.get_json()
        assert "disk is full" in body["error"] and body["results"][0]["cause"] == "disk_full"
        assert "free some space" in body["results"][0]["reason"]
        # Nothing half-written stays behind.
        assert not list(data_dir.rglob("*.tmp"))
        # Take what is left, so that the worker's thumbnails cannot be written either.
        filler = small_disk / "filler"
        _fill(filler)
        accepted = statuses.count(202)
        daemon.ingestor.start()
        deadline = time.monotonic() + 60
        while daemon.ingestor.paused is None and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):  # woken again and again: it stays paused, alive, and marks nothing failed
            daemon.ingestor.wake()
            time.sleep(0.05)
        status = client.get("/api/status").get_json()["ingest"]
        assert status["queued"] == accepted
        assert status["paused"].startswith("disk full") and status["disk_full"].startswith("disk full")
        assert status["worker_alive"] and status["failed"] == 0 and status["quarantined"] == 0
        assert "Adding photos is paused: disk full" in client.get("/add").get_data(as_text=True)
        assert not list(data_dir.rglob("*.tmp"))
        assert not list((data_dir / "added").glob("thumbs/*"))  # no rendition of a photo still queued
        # Space returns: the worker goes on by itself and every accepted photo becomes searchable.
        filler.unlink()
        reserve.unlink()
        deadline = time.monotonic() + 120
        while daemon.ingest_store.counts()["queued"] and time.monotonic() < deadline:
            daemon.ingestor.wake()
            time.sleep(0.05)
        status = client.get("/api/status").get_json()["ingest"]
        assert status["queued"] == 0 and status["ready"] == accepted and status["failed"] == 0
        assert status["paused"] is None and status["disk_full"] is None and status["worker_alive"]
        assert client.post("/api/admin/upload", data=_files(("small.jpg", photo_bytes(variant=8))),
                           content_type="multipart/form-data", headers=SCRIPT).status_code == 202
    finally:
        daemon.ingestor.stop()
        daemon.ingest_store.close()


def test_the_add_page_and_status_list_quarantined_photos(data_dir):
    daemon, client = _client(data_dir, ingest_max_attempts="1")
    daemon.ingestor.stop()
    try:
        added = daemon.ingest_store.add_upload("crashy.jpg", photo_bytes(variant=6))
        assert daemon.ingest_store.claim(added.id, max_attempts=1)  # the daemon died with it in hand
        daemon.ingestor.process(added.id, daemon.ingest_store.next_queued()[0][1])
        html = client.get("/add").get_data(as_text=True)
        assert "Quarantined" in html and "added/crashy.jpg" in html and "not tried again" in html
        ingest = client.get("/api/status").get_json()["ingest"]
        assert ingest["quarantined"] == 1 and ingest["quarantine"][0]["id"] == added.id
    finally:
        daemon.ingest_store.close()


def test_a_daemon_process_on_a_full_disk_answers_507_and_its_worker_never_dies(small_disk, bundle_dir, tmp_path):
    """Issue 13.9 as it was found: a real daemon on a small tmpfs; the worker used to die and restart."""
    data_dir = small_disk / "data"
    data_dir.mkdir()
    (data_dir / "current").symlink_to(bundle_dir)
    log_path = tmp_path / "daemon.log"
    port = _free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "device", "serve", "--data-dir", str(data_dir), "--port",
                                 str(port)], cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                                env=dict(os.environ, GLIMPSE_CONFIG="/nonexistent"))
    try:
        assert "Glimpse is serving" in proc.stdout.readline()
        codes = []
        for n in range(200):  # bounded: 8 MiB holds far fewer
            body, boundary = _multipart(f"n{n}.jpg", _noise_jpeg(n))
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/admin/upload", data=body, method="POST",
                                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                      "X-Glimpse-Client": "test"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    codes.append(response.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
                answer = json.load(exc)
                break
        assert codes[-1] == 507 and set(codes[:-1]) == {202}, codes
        assert "disk is full" in answer["error"]
        ingest = _get(port, "/api/status")["ingest"]
        assert ingest["worker_alive"] and ingest["disk_full"].startswith("disk full")
        assert not list(data_dir.rglob("*.tmp"))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        proc.stdout.close()
    log_text = log_path.read_text()
    assert "the ingest worker stopped" not in log_text and "Traceback" not in log_text
