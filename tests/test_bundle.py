"""device.bundle: opening, verifying and reading a bundle built by the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import LIBRARY_PHOTOS
from device.bundle import MANIFEST, Bundle
from device.errors import BundleInvalid, ItemNotFound
from device.model import sha256_file

EXPECTED_PATHS = set(LIBRARY_PHOTOS.values())


@pytest.fixture(scope="module")
def bundle(bundle_dir):
    return Bundle.open(bundle_dir)


def _manifest(path):
    return json.loads((path / MANIFEST).read_text(encoding="utf-8"))


def _write_manifest(path, manifest):
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def _rehash(path, *relatives):
    """Record the current sha256 and size of ``relatives`` in the manifest, as a
    builder would, so that only the deliberate inconsistency remains."""
    manifest = _manifest(path)
    for relative in relatives:
        manifest["files"][relative] = {"sha256": sha256_file(path / relative),
                                       "size": (path / relative).stat().st_size}
    _write_manifest(path, manifest)


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


# --- a good bundle -------------------------------------------------------------

def test_open_full_and_quick(bundle_dir):
    for level in ("full", "quick"):
        opened = Bundle.open(bundle_dir, verify=level)
        assert len(opened) == 8
        assert opened.manifest["item_count"] == 8
        assert opened.id == opened.manifest["bundle_id"]
        assert opened.spec.full_id == "glimpse-default@1.1.0"
        assert opened.model_dir == bundle_dir.resolve() / "model"


def test_unknown_verify_level_is_refused(bundle_dir):
    with pytest.raises(ValueError, match="verify must be one of"):
        Bundle.open(bundle_dir, verify="none")


def test_items_are_the_library_photos_by_relative_posix_path(bundle):
    paths = [item.path for item in bundle.items]
    assert sorted(paths) == sorted(EXPECTED_PATHS)
    assert "broken.jpg" not in paths and "notes.txt" not in paths
    for path in paths:
        assert "\\" not in path and not path.startswith("/")


def test_item_fields_match_the_library_files(bundle, library):
    for item in bundle.items:
        source = library / item.path
        assert item.sha256 == sha256_file(source)
        assert item.id == item.sha256[:16]
        assert item.size == source.stat().st_size
        with Image.open(source) as image:
            assert (item.width, item.height) == image.size
        assert item.taken is None  # demo PNGs/JPEGs carry no EXIF date


def test_item_folder_and_name(bundle):
    by_path = {item.path: item for item in bundle.items}
    cat = by_path["pets/cat.png"]
    assert (cat.folder, cat.name) == ("pets", "cat.png")
    coins = by_path["coins.png"]
    assert (coins.folder, coins.name) == ("", "coins.png")


def test_every_item_has_its_thumbnail(bundle):
    for item in bundle.items:
        path = bundle.file(item.thumb)
        assert path == bundle.path / item.thumb
        assert path.is_file()
        with Image.open(path) as thumb:
            assert max(thumb.size) <= bundle.manifest["builder"]["thumb_size"]
            # Aspect kept (within a pixel of rounding).
            assert thumb.size[0] / thumb.size[1] == pytest.approx(item.width / item.height, rel=0.02)


def test_embeddings_are_unit_rows_one_per_item(bundle):
    emb = bundle.embeddings
    assert emb.dtype == np.float32
    assert emb.shape == (len(bundle.items), bundle.spec.dim)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    # Different photos, different vectors.
    assert len({row.tobytes() for row in np.asarray(emb)}) == len(bundle.items)


def test_embeddings_are_read_only(bundle):
    with pytest.raises(ValueError):
        bundle.embeddings[0, 0] = 0.0


def test_item_and_row_by_id(bundle):
    for row, item in enumerate(bundle.items):
        assert bundle.row(item.id) == row
        assert bundle.item(item.id) is item


@pytest.mark.parametrize("bad_id", ["0000000000000000", "", "pets/cat.png", None, ["list"]])
def test_unknown_item_id(bundle, bad_id):
    with pytest.raises(ItemNotFound, match="no item with id"):
        bundle.item(bad_id)


def test_item_not_found_is_also_a_key_error_with_a_plain_message(bundle):
    with pytest.raises(KeyError) as caught:
        bundle.item("nope")
    assert str(caught.value) == "no item with id 'nope'"


@pytest.mark.parametrize("name", ["manifest.json", "../manifest.json", "/etc/passwd", "thumbs/none.jpg",
                                  "thumbs", "model/../items.jsonl", ""])
def test_file_serves_only_what_the_manifest_lists(bundle, name):
    with pytest.raises(ItemNotFound, match="no file"):
        bundle.file(name)


def test_file_serves_model_files(bundle):
    assert bundle.file("model/model.json") == bundle.model_dir / "model.json"


def test_report_lists_the_skipped_files_with_reasons(bundle):
    report = bundle.report()
    skipped = {entry["path"]: entry["reason"] for entry in report["skipped"]}
    assert set(skipped) == {"broken.jpg", "notes.txt"}
    assert "not a photo" in skipped["notes.txt"]
    assert skipped["broken.jpg"].startswith("corrupt or truncated")  # the path is beside it, not repeated
    assert report["items"] == 8
    assert report["photos_found"] == 9
    assert report["duplicates"] == []


def test_report_is_empty_when_absent(copy_bundle):
    bundle = Bundle.open(copy_bundle())
    (bundle.path / "report.json").unlink()
    assert bundle.report() == {}


# --- tampering -------------------------------------------------------------------

def test_altered_thumbnail_caught_by_full_only(copy_bundle, bundle):
    path = copy_bundle()
    thumb = bundle.items[0].thumb
    size = (path / thumb).stat().st_size
    _flip_byte(path / thumb)
    assert (path / thumb).stat().st_size == size

    with pytest.raises(BundleInvalid, match=rf"file {thumb} was altered \(sha256 mismatch\)"):
        Bundle.open(path, verify="full")
    # Documented: quick checks thumbnails, previews and embeddings by size only.
    assert len(Bundle.open(path, verify="quick")) == 8


def test_altered_embeddings_caught_by_full_only(copy_bundle):
    path = copy_bundle()
    _flip_byte(path / "embeddings.npy")
    with pytest.raises(BundleInvalid, match=r"file embeddings\.npy was altered"):
        Bundle.open(path)
    assert len(Bundle.open(path, verify="quick")) == 8


@pytest.mark.parametrize("level", ["full", "quick"])
@pytest.mark.parametrize("relative", ["items.jsonl", "model/model.json"])
def test_altered_parsed_file_caught_even_by_quick(copy_bundle, level, relative):
    path = copy_bundle()
    text = (path / relative).read_text(encoding="utf-8")
    # Same length, different content.
    altered = text.replace("pets/cat.png", "pets/dog.png") if relative == "items.jsonl" \
        else text.replace('"dim": 384', '"dim": 385')
    assert altered != text and len(altered) == len(text)
    (path / relative).write_text(altered, encoding="utf-8")

    with pytest.raises(BundleInvalid, match=rf"file {relative} was altered \(sha256 mismatch\)"):
        Bundle.open(path, verify=level)


@pytest.mark.parametrize("level", ["full", "quick"])
def test_resized_file_caught_even_by_quick(copy_bundle, bundle, level):
    path = copy_bundle()
    thumb = bundle.items[-1].thumb
    with open(path / thumb, "ab") as handle:
        handle.write(b"extra")
    with pytest.raises(BundleInvalid, match=rf"file {thumb} was altered \(size \d+, expected \d+\)"):
        Bundle.open(path, verify=level)


@pytest.mark.parametrize("level", ["full", "quick"])
@pytest.mark.parametrize("which", ["thumb", "embeddings.npy", "items.jsonl", "model/text_int8.tflite"])
def test_deleted_file(copy_bundle, bundle, level, which):
    path = copy_bundle()
    relative = bundle.items[2].thumb if which == "thumb" else which
    (path / relative).unlink()
    with pytest.raises(BundleInvalid, match=rf"missing file {relative}"):
        Bundle.open(path, verify=level)


def test_missing_manifest(copy_bundle):
    path = copy_bundle()
    (path / MANIFEST).unlink()
    with pytest.raises(BundleInvalid, match=r"no manifest\.json \(is this a bundle directory\?\)"):
        Bundle.open(path)


def test_not_a_directory(tmp_path):
    with pytest.raises(BundleInvalid, match="no such bundle directory"):
        Bundle.open(tmp_path / "nothing-here")


def test_manifest_not_json(copy_bundle):
    path = copy_bundle()
    (path / MANIFEST).write_text("{ truncated", encoding="utf-8")
    with pytest.raises(BundleInvalid, match=r"unreadable manifest\.json"):
        Bundle.open(path)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_wrong_format_version(copy_bundle, version):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["format_version"] = version
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=rf"bundle format version {version!r} is not supported"):
        Bundle.open(path)


def test_wrong_format_name(copy_bundle):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["format"] = "zip"
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=r"not a glimpse-bundle manifest"):
        Bundle.open(path)


@pytest.mark.parametrize("key", ["bundle_id", "model", "item_count", "files"])
def test_manifest_lacking_a_key(copy_bundle, key):
    path = copy_bundle()
    manifest = _manifest(path)
    del manifest[key]
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=rf"lacks '{key}'"):
        Bundle.open(path)


@pytest.mark.parametrize("required", ["embeddings.npy", "items.jsonl", "model/model.json"])
def test_manifest_not_listing_a_required_file(copy_bundle, required):
    path = copy_bundle()
    manifest = _manifest(path)
    del manifest["files"][required]
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=rf"does not list {required}"):
        Bundle.open(path)


def test_embeddings_of_another_dimension(copy_bundle):
    path = copy_bundle()
    rng = np.random.default_rng(0)
    other = rng.normal(size=(8, 128)).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    np.save(path / "embeddings.npy", other)
    _rehash(path, "embeddings.npy")  # hashes fine: only the dimension is wrong

    with pytest.raises(BundleInvalid, match=r"dimension mismatch: embeddings\.npy is \(8, 128\), expected \(8, 384\)"):
        Bundle.open(path)


def test_embeddings_with_a_missing_row(copy_bundle):
    path = copy_bundle()
    emb = np.load(path / "embeddings.npy")
    np.save(path / "embeddings.npy", emb[:7])
    _rehash(path, "embeddings.npy")
    with pytest.raises(BundleInvalid, match=r"embeddings\.npy is \(7, 384\), expected \(8, 384\)"):
        Bundle.open(path)


def test_embeddings_of_the_wrong_dtype(copy_bundle):
    path = copy_bundle()
    emb = np.load(path / "embeddings.npy")
    np.save(path / "embeddings.npy", emb.astype(np.float64))
    _rehash(path, "embeddings.npy")
    with pytest.raises(BundleInvalid, match=r"must be a 2-D float32 array, not float64"):
        Bundle.open(path)


def test_embeddings_not_an_npy_file(copy_bundle):
    path = copy_bundle()
    (path / "embeddings.npy").write_bytes(b"not numpy at all")
    _rehash(path, "embeddings.npy")
    with pytest.raises(BundleInvalid, match=r"unreadable embeddings\.npy"):
        Bundle.open(path)


def test_manifest_dimension_disagrees_with_model(copy_bundle):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["model"]["dim"] = 512
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=r"dimension mismatch: manifest says 512, model says 384"):
        Bundle.open(path)


def test_manifest_names_another_model(copy_bundle):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["model"]["version"] = "2.0.0"
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=r"manifest names model glimpse-default@2\.0\.0 but the bundle holds glimpse-default@1\.1\.0"):
        Bundle.open(path)


@pytest.mark.parametrize("count", [7, 9, 0])
def test_item_count_mismatch(copy_bundle, count):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["item_count"] = count
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=rf"items\.jsonl has 8 items, manifest\.json says {count}"):
        Bundle.open(path)


def test_malformed_items_line(copy_bundle):
    path = copy_bundle()
    lines = (path / "items.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = "[1, 2, 3]\n"
    (path / "items.jsonl").write_text("".join(lines), encoding="utf-8")
    _rehash(path, "items.jsonl")
    with pytest.raises(BundleInvalid, match=r"items\.jsonl line 3 is malformed"):
        Bundle.open(path)


def test_duplicate_item_ids(copy_bundle):
    path = copy_bundle()
    lines = (path / "items.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[0]
    (path / "items.jsonl").write_text("".join(lines), encoding="utf-8")
    _rehash(path, "items.jsonl")
    with pytest.raises(BundleInvalid, match=r"duplicate item ids"):
        Bundle.open(path)


def test_item_naming_a_thumbnail_not_in_the_manifest(copy_bundle, bundle):
    path = copy_bundle()
    thumb = bundle.items[0].thumb
    manifest = _manifest(path)
    del manifest["files"][thumb]
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=rf"names thumbnail {thumb}, not in manifest\.json"):
        Bundle.open(path)


@pytest.mark.parametrize("unsafe", ["../x", "/etc/passwd", "thumbs/../../x", "manifest.json"])
def test_unsafe_path_in_manifest(copy_bundle, unsafe):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["files"][unsafe] = {"sha256": "0" * 64, "size": 1}
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=rf"lists an unsafe path {unsafe!r}"):
        Bundle.open(path, verify="quick")


@pytest.mark.parametrize("entry", ["0" * 64, None])
def test_manifest_file_entry_that_is_not_an_object(copy_bundle, entry):
    path = copy_bundle()
    manifest = _manifest(path)
    manifest["files"]["report.json"] = entry
    _write_manifest(path, manifest)
    with pytest.raises(BundleInvalid, match=r"report\.json"):
        Bundle.open(path)


# --- embeddings a search could not answer with, and files outside the bundle (issue 13.11) ---


@pytest.mark.parametrize("level", ["quick", "full"])
@pytest.mark.parametrize("poison", ["nan", "inf", "long", "zero"])
def test_embeddings_that_are_not_finite_unit_rows_are_refused(copy_bundle, level, poison):
    # The manifest is rehashed as a careless builder would: only the content is wrong.
    path = copy_bundle()
    embeddings = np.load(path / "embeddings.npy")
    embeddings[1] = {"nan": np.nan, "inf": np.inf, "long": 0.5, "zero": 0.0}[poison]
    np.save(path / "embeddings.npy", embeddings)
    _rehash(path, "embeddings.npy")
    with pytest.raises(BundleInvalid, match=r"embeddings.npy: row 1 (holds NaN|has length)"):
        Bundle.open(path, verify=level)


def test_embedding_problem_names_what_is_wrong():
    from device.bundle import embedding_problem

    unit = np.ones(4, np.float32) / 2
    assert embedding_problem(unit) is None
    assert "NaN" in embedding_problem(np.array([np.nan, 0, 0, 1], np.float32))
    assert "length 2.0000" in embedding_problem(unit * 2)


@pytest.mark.parametrize("level", ["quick", "full"])
def test_a_thumbnail_symlinked_out_of_the_bundle_is_refused(copy_bundle, bundle, tmp_path, level):
    # The outside file has the very bytes the manifest records: only the symlink gives it away.
    path = copy_bundle()
    thumb = path / bundle.items[0].thumb
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(thumb.read_bytes())
    thumb.unlink()
    thumb.symlink_to(outside)
    with pytest.raises(BundleInvalid, match="symlink leaving the bundle"):
        Bundle.open(path, verify=level)


def test_a_folder_symlinked_out_of_the_bundle_is_refused(copy_bundle, tmp_path):
    path = copy_bundle()
    moved = tmp_path / "thumbs-elsewhere"
    (path / "thumbs").rename(moved)
    (path / "thumbs").symlink_to(moved)
    with pytest.raises(BundleInvalid, match="thumbs is a symlink leaving the bundle"):
        Bundle.open(path, verify="full")


def test_a_symlink_within_the_bundle_is_accepted(copy_bundle, bundle):
    path = copy_bundle()
    first, second = bundle.items[0].thumb, bundle.items[1].thumb
    manifest = _manifest(path)
    (path / second).unlink()
    (path / second).symlink_to((path / first).name)
    manifest["files"][second] = dict(manifest["files"][first])
    _write_manifest(path, manifest)
    assert len(Bundle.open(path, verify="full")) == len(bundle)
