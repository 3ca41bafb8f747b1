"""Glimpse never deletes what it did not create (issue 12, item 1).

Every command that writes or replaces a directory refuses an output that is,
holds or lies inside its input, replaces only a directory of its own kind (or
an empty one), and swaps the new one in only when it is complete. These run the
real command lines; the PyTorch commands refuse before PyTorch is needed, so
they run here without it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from device.model import default_model_dir, sha256_file
from provisioning import demo


def _photos(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def lib(tmp_path) -> Path:
    """The issue's library: lib/2024 and lib/scans, one real photo in each."""
    names = list(demo.DEMO_PHOTOS)
    for folder, name in (("2024", names[0]), ("scans", names[1])):
        (tmp_path / "lib" / folder).mkdir(parents=True)
        shutil.copyfile(demo.demo_photo(name), tmp_path / "lib" / folder / f"{name}.png")
    return tmp_path / "lib"


def _refused(proc, *phrases: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # The last line (LiteRT may print its own line first: issue 12, item 5).
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("glimpse-provision: error: ") and "Traceback" not in proc.stderr, proc.stderr
    for phrase in phrases:
        assert phrase in line, line
    return line


def _leftovers(parent: Path) -> list[str]:
    """Temporary directories a replacement left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and (".new-" in p.name or ".old-" in p.name))


def test_the_issues_reproduction_keeps_the_photos_and_says_why(lib):
    before = _photos(lib)
    proc = run_cli("provisioning", "build", "--images", str(lib / "2024"), "--out", str(lib), "--force",
                   "--quiet", check=False)
    _refused(proc, "contains the photo folder", str(lib / "2024"), "outside it")
    assert _photos(lib) == before
    assert not (lib / "manifest.json").exists()


def test_force_refuses_a_folder_of_other_things_and_names_them(lib, library, tmp_path):
    other = tmp_path / "documents"
    other.mkdir()
    (other / "taxes.pdf").write_bytes(b"%PDF-1.4 keep me")
    (other / "notes").mkdir()
    proc = run_cli("provisioning", "build", "--images", str(library), "--out", str(other), "--force", "--quiet",
                   check=False)
    _refused(proc, "holds 2 entries (notes, taxes.pdf)", "not a bundle Glimpse wrote", "choose another output")
    assert (other / "taxes.pdf").read_bytes() == b"%PDF-1.4 keep me" and (other / "notes").is_dir()
    # A sibling folder of the photos, as in the issue (lib/scans), is refused the same way.
    before = _photos(lib)
    proc = run_cli("provisioning", "build", "--images", str(lib / "2024"), "--out", str(lib / "scans"),
                   "--force", "--quiet", check=False)
    _refused(proc, "holds 1 entry", "not a bundle Glimpse wrote")
    assert _photos(lib) == before and _leftovers(lib) == []


@pytest.mark.parametrize("where", ["inside", "same", "symlink"])
def test_out_inside_or_equal_to_the_photos_is_refused(lib, tmp_path, where):
    before = _photos(lib)
    if where == "inside":
        out, phrase = lib / "bundle", "is inside the photo folder"
    elif where == "same":
        out, phrase = lib, "is the photo folder"
    else:  # a link to the library's parent, compared by real path
        (tmp_path / "alias").symlink_to(lib, target_is_directory=True)
        out, phrase = tmp_path / "alias", "is the photo folder"
    proc = run_cli("provisioning", "build", "--images", str(lib), "--out", str(out), "--force", "--quiet",
                   check=False)
    _refused(proc, phrase)
    assert _photos(lib) == before and not (lib / "bundle").exists()


def test_force_replaces_a_bundle_and_a_failed_build_leaves_the_old_one(library, lib, tmp_path):
    out = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(lib), "--out", str(out), "--quiet")
    first = json.loads((out / "manifest.json").read_text())["bundle_id"]
    run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--force", "--quiet")
    second = json.loads((out / "manifest.json").read_text())
    assert second["bundle_id"] != first and second["item_count"] == 8
    assert _leftovers(tmp_path) == []

    # A build that fails half-way (no usable photo, found only after the walk and decode)
    # leaves the old bundle serving as it was, and nothing of its own behind.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    before = _photos(out)
    proc = run_cli("provisioning", "build", "--images", str(broken), "--out", str(out), "--force", "--quiet",
                   check=False)
    _refused(proc, "no usable photo")
    assert _photos(out) == before and _leftovers(tmp_path) == []


def test_an_empty_directory_may_be_replaced(lib, tmp_path):
    (tmp_path / "empty").mkdir()
    run_cli("provisioning", "build", "--images", str(lib), "--out", str(tmp_path / "empty"), "--force", "--quiet")
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_replacing_swaps_only_a_complete_directory(tmp_path):
    from device import ownership

    out = tmp_path / "model"
    shutil.copytree(default_model_dir(), out)
    before = _photos(out)
    with pytest.raises(RuntimeError, match="half-way"):
        with ownership.replacing(out, ["model"], "a model directory", force=True) as work:
            (work / "model.json").write_text("{}")
            raise RuntimeError("half-way")
    assert _photos(out) == before and _leftovers(tmp_path) == []
    with ownership.replacing(out, ["model"], "a model directory", force=True) as work:
        (work / "new.txt").write_text("new\n")
        assert _photos(out) == before  # the old one stays until the block ends
    assert _photos(out) == {"new.txt": sha256_file(out / "new.txt")} and _leftovers(tmp_path) == []


def test_replacing_without_an_atomic_exchange_puts_the_old_back_on_failure(tmp_path, monkeypatch):
    from device import ownership

    out = tmp_path / "model"
    shutil.copytree(default_model_dir(), out)
    before = _photos(out)
    monkeypatch.setattr(ownership, "_exchange", lambda a, b: False)  # a filesystem without RENAME_EXCHANGE
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".new-" in str(src):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space left"):
        with ownership.replacing(out, ["model"], "a model directory", force=True) as work:
            (work / "new.txt").write_text("new\n")
    assert _photos(out) == before and _leftovers(tmp_path) == []
    monkeypatch.setattr(os, "rename", real_rename)
    with ownership.replacing(out, ["model"], "a model directory", force=True) as work:
        (work / "new.txt").write_text("new\n")
    assert sorted(_photos(out)) == ["new.txt"] and _leftovers(tmp_path) == []


def test_a_bundle_holding_a_users_file_is_not_ours_to_replace(copy_bundle):
    from device import ownership
    from device.errors import OutputRefused

    bundle = copy_bundle()
    assert ownership.identify(bundle) == "bundle"
    (bundle / "thumbs" / "my-own-photo.jpg").write_bytes(b"mine")
    assert ownership.identify(bundle) is None
    with pytest.raises(OutputRefused, match="not a bundle Glimpse wrote"):
        ownership.check_replaceable(bundle, ["bundle"], True, "a bundle")


def test_demo_force_refuses_a_folder_of_other_things(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "letter.txt").write_text("keep\n")
    proc = run_cli("provisioning", "demo", "--out", str(tmp_path / "mine"), "--force", "--quiet", check=False)
    _refused(proc, "holds 1 entry (letter.txt)", "not a bundle Glimpse wrote")
    assert (tmp_path / "mine" / "letter.txt").read_text() == "keep\n"


def test_train_refuses_an_out_around_its_photos_before_loading_pytorch(lib, tmp_path):
    captions = tmp_path / "captions.csv"
    captions.write_text("image,caption\n")
    before = _photos(lib)
    proc = run_cli("provisioning", "train", "--captions", str(captions), "--images", str(lib / "2024"),
                   "--out", str(lib), "--force", "--quiet", check=False)
    _refused(proc, "contains the photo folder")
    proc = run_cli("provisioning", "train", "--captions", str(captions), "--images", str(lib / "2024"),
                   "--out", str(lib / "scans"), "--force", "--quiet", check=False)
    _refused(proc, "not a model directory Glimpse wrote")
    assert _photos(lib) == before


def test_import_model_refuses_an_out_around_its_source_or_of_other_things(tmp_path):
    source = tmp_path / "downloads" / "clip"
    source.mkdir(parents=True)
    (source / "open_clip_config.json").write_text("{}")
    proc = run_cli("provisioning", "import-model", str(source), "--out", str(tmp_path / "downloads"), "--force",
                   check=False)
    _refused(proc, "contains the source model")
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("a")
    proc = run_cli("provisioning", "import-model", str(source), "--out", str(tmp_path / "stuff"), "--force",
                   check=False)
    _refused(proc, "not a model directory Glimpse wrote")
    proc = run_cli("provisioning", "import-model", str(source), "--out", str(tmp_path / "stuff"), check=False)
    _refused(proc, "not a model directory Glimpse wrote")
    assert (tmp_path / "stuff" / "a.txt").read_text() == "a" and (source / "open_clip_config.json").exists()


def test_model_default_force_replaces_only_a_model_directory(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "a.txt").write_text("a")
    proc = run_cli("provisioning", "model", "default", "--out", str(tmp_path / "stuff"), "--force", check=False)
    _refused(proc, "not a model directory Glimpse wrote")
    assert (tmp_path / "stuff" / "a.txt").read_text() == "a"


def test_export_tasklib_refuses_an_out_inside_the_bundle_or_over_another_file(copy_bundle, tmp_path):
    bundle = copy_bundle()
    before = _photos(bundle)
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(bundle), "--out",
                   str(bundle / "search.tflite"), check=False)
    _refused(proc, "is inside the bundle")
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(bundle), "--out", str(bundle), "--force",
                   check=False)
    _refused(proc, "is the bundle")
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a photo")
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(bundle), "--out", str(photo), "--force",
                   check=False)
    _refused(proc, "is not a TFLite model")
    assert photo.read_bytes() == b"\xff\xd8\xff\xe0 a photo" and _photos(bundle) == before


def test_wheelhouse_refuses_a_folder_of_the_users_wheels(tmp_path):
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    (downloads / "mine-1.0-py3-none-any.whl").write_bytes(b"PK")
    proc = run_cli("provisioning", "wheelhouse", "--python", "3.11", "--out", str(downloads), check=False)
    _refused(proc, "not a wheelhouse Glimpse wrote")
    assert (downloads / "mine-1.0-py3-none-any.whl").exists()
    source = tmp_path / "src"
    (source / "device").mkdir(parents=True)
    (source / "setup.cfg").write_text("")
    proc = run_cli("provisioning", "wheelhouse", "--python", "3.11", "--source", str(source),
                   "--out", str(tmp_path), check=False)
    _refused(proc, "contains the Glimpse source tree")


def test_remove_bundle_removes_only_bundles_and_never_the_served_one(bundle_dir, tmp_path):
    data = tmp_path / "data"
    bundles = data / "bundles"
    (bundles / ".incoming" / "partial" / ".rsync-partial").mkdir(parents=True)
    shutil.copytree(bundle_dir, bundles / "20200101T000000Z-00000000")
    shutil.copytree(bundle_dir, bundles / "20210101T000000Z-00000000")
    (data / "current").symlink_to("bundles/20210101T000000Z-00000000")
    users = bundles / "20190101T000000Z-00000000"
    users.mkdir()
    (users / "photo.jpg").write_bytes(b"mine")
    (bundles / "20180101T000000Z-00000000").symlink_to(tmp_path, target_is_directory=True)

    names = ["20200101T000000Z-00000000", ".incoming/partial", "20210101T000000Z-00000000",
             "20190101T000000Z-00000000", "20180101T000000Z-00000000", "../data"]
    proc = run_cli("device", "remove-bundle", "--data-dir", str(data), *names, check=False)
    assert proc.stdout.splitlines() == ["removed 20200101T000000Z-00000000", "removed .incoming/partial"]
    assert proc.returncode == 2 and proc.stderr.startswith("glimpse: error: ") and "Traceback" not in proc.stderr
    assert "is the bundle" in proc.stderr and "holds 1 entry (photo.jpg)" in proc.stderr
    assert "a symlink to" in proc.stderr and "'../data' is not a bundle name" in proc.stderr
    assert (users / "photo.jpg").read_bytes() == b"mine" and (bundles / "20210101T000000Z-00000000").is_dir()
    assert (bundles / "20180101T000000Z-00000000").is_symlink() and data.is_dir()
    assert not (bundles / "20200101T000000Z-00000000").exists() and not (bundles / ".incoming" / "partial").exists()


def test_bundles_are_world_readable_whatever_the_umask_unless_private(lib, tmp_path):
    old = os.umask(0o077)
    try:
        run_cli("provisioning", "build", "--images", str(lib), "--out", str(tmp_path / "shared"), "--quiet")
        run_cli("provisioning", "build", "--images", str(lib), "--out", str(tmp_path / "private"), "--quiet",
                "--private")
    finally:
        os.umask(old)
    for name, directory, file in (("shared", 0o755, 0o644), ("private", 0o700, 0o600)):
        root = tmp_path / name
        modes = {p.relative_to(root).as_posix(): (p.stat().st_mode & 0o777) for p in [root, *root.rglob("*")]}
        assert {m for p, m in modes.items() if (root / p).is_dir()} == {directory}, (name, modes)
        assert {m for p, m in modes.items() if (root / p).is_file()} == {file}, (name, modes)


def test_the_ann_benchmark_keeps_its_work_only_in_its_own_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep\n")
    proc = run_cli("bench.ann", "--keep", str(tmp_path / "mine"), "--engines", "glimpse", check=False)
    assert proc.returncode == 2 and "not an ANN benchmark work directory Glimpse wrote" in proc.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep\n"


def test_a_model_directory_holding_other_files_is_not_ours_to_replace(tmp_path):
    from device import ownership

    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    assert ownership.identify(model) == "model"
    (model / "holiday.jpg").write_bytes(b"mine")
    assert ownership.identify(model) is None
    proc = run_cli("provisioning", "model", "default", "--out", str(model), "--force", check=False)
    _refused(proc, "holds 7 entries", "not a model directory Glimpse wrote")
    assert (model / "holiday.jpg").read_bytes() == b"mine"
