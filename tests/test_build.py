"""Building at library scale: formats, broken files, duplicates, cache, resume, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
import struct

import pytest
from PIL import Image

from device.bundle import Bundle
from device.model import default_model_dir, sha256_file
from provisioning import demo
from conftest import REPO, run_cli


def _exif(date: str | None = None, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    if date:
        exif.get_ifd(0x8769)[0x9003] = date
    return exif.tobytes()


def _huge_png_header(path) -> None:
    """A tiny PNG whose header claims 60000 x 60000 pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def mixed_library(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    cat = Image.open(demo.demo_photo("chelsea.png")).convert("RGB")
    coffee = Image.open(demo.demo_photo("coffee.png")).convert("RGB")
    rocket = Image.open(demo.demo_photo("rocket.jpg")).convert("RGB")
    (root / "phone").mkdir()
    (root / "scans").mkdir()
    cat.save(root / "cat.jpg", quality=90)
    coffee.save(root / "coffee.png")
    rocket.save(root / "rocket.webp")
    frames = [cat.resize((120, 80)), coffee.resize((120, 80))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    coffee.save(root / "scans" / "coffee.tiff")
    rocket.save(root / "scans" / "rocket.bmp")
    from pillow_heif import register_heif_opener

    register_heif_opener()  # so Pillow can write the HEIC a phone would
    cat.save(root / "phone" / "cat.heic")
    # Stored sideways with EXIF orientation 6 (rotate 90 clockwise to view), dated.
    rocket.rotate(90, expand=True).save(root / "phone" / "sideways.jpg", exif=_exif("2021:07:04 12:30:00", 6))
    shutil.copyfile(root / "cat.jpg", root / "phone" / "cat-copy.jpg")  # a duplicate
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not a photo")
    (root / "half.jpg").write_bytes((root / "cat.jpg").read_bytes()[:3000])
    _huge_png_header(root / "bomb.png")
    (root / ".hidden.jpg").write_bytes((root / "cat.jpg").read_bytes())
    return root


def test_every_format_is_read_and_every_broken_file_reported(mixed_library, tmp_path):
    out = tmp_path / "bundle"
    proc = run_cli("provisioning", "build", "--images", str(mixed_library), "--out", str(out), "--quiet",
                   "--no-cache")
    bundle = Bundle.open(out)
    paths = sorted(item.path for item in bundle.items)
    assert paths == ["anim.gif", "cat.jpg", "coffee.png", "phone/cat.heic", "phone/sideways.jpg",
                     "rocket.webp", "scans/coffee.tiff", "scans/rocket.bmp"]
    report = json.loads((out / "report.json").read_text())
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    assert set(reasons) == {"empty.jpg", "text.jpg", "half.jpg", "bomb.png"}
    assert "empty" in reasons["empty.jpg"]
    assert "not an image" in reasons["text.jpg"]
    assert "corrupt or truncated" in reasons["half.jpg"]
    assert "pixel" in reasons["bomb.png"] or "bomb" in reasons["bomb.png"]
    assert report["duplicates"] == [{"path": "phone/cat-copy.jpg", "same_as": "cat.jpg"}]
    for name in reasons:
        assert f"skipped {name}:" in proc.stdout


def test_exif_orientation_and_date_are_applied(mixed_library, tmp_path):
    out = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(mixed_library), "--out", str(out), "--quiet", "--no-cache")
    bundle = Bundle.open(out)
    sideways = next(i for i in bundle.items if i.path == "phone/sideways.jpg")
    rocket = next(i for i in bundle.items if i.path == "rocket.webp")
    assert (sideways.width, sideways.height) == (rocket.width, rocket.height)  # upright again
    assert sideways.taken == "2021-07-04T12:30:00"
    with Image.open(out / sideways.thumb) as thumb:
        assert thumb.width > thumb.height  # the rocket photo is landscape


def test_originals_can_be_copied_into_the_bundle(mixed_library, tmp_path):
    out = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(mixed_library), "--out", str(out), "--quiet", "--no-cache",
            "--originals", "copy", "--preview-size", "0", "--thumb-format", "webp")
    bundle = Bundle.open(out)
    cat = next(i for i in bundle.items if i.path == "cat.jpg")
    assert (out / cat.original).read_bytes() == (mixed_library / "cat.jpg").read_bytes()
    assert cat.preview is None and cat.thumb.endswith(".webp")


def _library_of(root, count, start=0):
    """``count`` distinct JPEGs made from crops of the demo photos."""
    root.mkdir(parents=True, exist_ok=True)
    sources = [Image.open(demo.demo_photo(n)).convert("RGB") for n in ("chelsea.png", "coffee.png", "rocket.jpg")]
    for i in range(start, start + count):
        img = sources[i % 3]
        box = (i % 7 * 5, i % 5 * 5, img.width - i % 11 * 5, img.height - i % 13 * 5)
        img.crop(box).resize((200, 150)).save(root / f"photo-{i:04d}.jpg", quality=80)
    return root


def test_a_model_rebuilt_under_the_same_name_does_not_reuse_cached_embeddings(tmp_path):
    # A retrained or rebuilt model keeps its id@version (glimpse-trained@1.0.0 twice): the
    # cache must not hand it the other tower's vectors. Its image tower differs here only by
    # trailing bytes the runtime ignores, which is enough to change its sha256.
    library = _library_of(tmp_path / "lib", 4)
    cache = tmp_path / "cache"
    rebuilt = tmp_path / "rebuilt-model"
    shutil.copytree(default_model_dir(), rebuilt)
    spec = json.loads((rebuilt / "model.json").read_text())
    tower = rebuilt / spec["image"]["file"]
    tower.write_bytes(tower.read_bytes() + bytes(16))
    spec["files"][spec["image"]["file"]] = sha256_file(tower)
    (rebuilt / "model.json").write_text(json.dumps(spec))
    runs = []
    for model in (default_model_dir(), rebuilt, rebuilt):
        runs.append(run_cli("provisioning", "build", "--images", str(library), "--out", str(tmp_path / f"b{len(runs)}"),
                            "--quiet", "--cache-dir", str(cache), "--model", str(model)).stdout)
    assert "4 embedded, 0 from the cache" in runs[0]
    assert "4 embedded, 0 from the cache" in runs[1]  # same id@version, another tower
    assert "0 embedded, 4 from the cache" in runs[2]  # the same tower again
    assert Bundle.open(tmp_path / "b1").spec.full_id == Bundle.open(tmp_path / "b0").spec.full_id


def test_a_rebuild_embeds_only_new_photos(tmp_path):
    library = _library_of(tmp_path / "lib", 12)
    cache = tmp_path / "cache"
    first = run_cli("provisioning", "build", "--images", str(library), "--out", str(tmp_path / "b1"), "--quiet",
                    "--cache-dir", str(cache))
    assert "12 embedded, 0 from the cache" in first.stdout
    _library_of(library, 3, start=12)
    (library / "photo-0000.jpg").rename(library / "renamed.jpg")  # a move costs nothing
    second = run_cli("provisioning", "build", "--images", str(library), "--out", str(tmp_path / "b2"), "--quiet",
                     "--cache-dir", str(cache))
    assert "15 photos" in second.stdout and "3 embedded, 12 from the cache" in second.stdout
    b1, b2 = Bundle.open(tmp_path / "b1"), Bundle.open(tmp_path / "b2")
    for item in b1.items:
        assert (b2.embeddings[b2.row(item.id)] == b1.embeddings[b1.row(item.id)]).all()


def test_a_killed_build_resumes_where_it_stopped(tmp_path):
    library = _library_of(tmp_path / "lib", 80)
    cache = tmp_path / "cache"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "provisioning", "build", "--images", str(library), "--out",
                             str(tmp_path / "b"), "--quiet", "--workers", "1", "--cache-dir", str(cache)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = cache / "embeddings.sqlite"
    cached = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if database.exists():
            with sqlite3.connect(database) as db:
                try:
                    cached = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
                except sqlite3.OperationalError:
                    cached = 0
            if cached:
                break
        time.sleep(0.05)  # polling a file another process writes; bounded by the deadline
    proc.kill()
    proc.wait()
    assert 0 < cached < 80, f"the build was not caught half-way ({cached} cached)"
    assert not (tmp_path / "b").exists()  # nothing half-written
    resumed = run_cli("provisioning", "build", "--images", str(library), "--out", str(tmp_path / "b"),
                      "--quiet", "--cache-dir", str(cache))
    assert "80 photos" in resumed.stdout
    done = int(resumed.stdout.split(" from the cache")[0].split(", ")[-1])
    assert done >= cached
    assert len(Bundle.open(tmp_path / "b")) == 80


def test_ctrl_c_stops_cleanly_and_keeps_the_work(tmp_path):
    library = _library_of(tmp_path / "lib", 80)
    proc = subprocess.Popen([sys.executable, "-m", "provisioning", "build", "--images", str(library), "--out",
                             str(tmp_path / "b"), "--workers", "1", "--cache-dir", str(tmp_path / "cache")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The progress line shows the build is embedding: then press Ctrl-C.
    seen = ""
    while "embedding photos:" not in seen:
        char = proc.stderr.read(1)
        if not char:
            break
        seen += char
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "run the same command again to resume" in err
    assert "Traceback" not in err
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]  # no temporary directory left


def test_a_photo_too_big_to_decode_within_the_memory_budget_is_skipped_with_the_reason(tmp_path):
    """Issue 13.1 on the host: the build decodes within the same kind of budget as the device."""
    from provisioning.bundles.build import BuildOptions, build

    library = tmp_path / "library"
    library.mkdir()
    Image.open(demo.demo_photo("coffee.png")).convert("RGB").save(library / "coffee.jpg", quality=90)
    Image.new("RGB", (6000, 6000), (200, 10, 10)).save(library / "poster.png")  # 144 MB as Pillow holds it
    out = tmp_path / "bundle"
    report = build(BuildOptions(images=library, out=out, workers=1, use_cache=False, progress=False,
                                decode_budget_mb=100))
    reasons = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    assert "over the budget of 100 MiB" in reasons["poster.png"]
    assert [item.path for item in Bundle.open(out).items] == ["coffee.jpg"]
