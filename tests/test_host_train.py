"""``glimpse-provision train`` (needs PyTorch: ``.venv-host``).

On a tiny COCO-format set the tests draw themselves (:mod:`bench.shapes`:
coloured shapes on backgrounds, three captions each, 36 photos, 9 held out):
training lowers the loss and raises validation recall over the untrained heads;
runs repeat exactly; an interrupted and resumed run ends where an uninterrupted
one does; the exported model runs on the device's encoders, matches PyTorch,
and works with ``build --model`` and ``eval --model``; bad input gets a clear
error. The towers are converted once, for the module's trained model.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys

import numpy as np
import pytest

from bench.shapes import draw_photo, make_shapes
from conftest import REPO, run_cli, tasklib_probe

pytestmark = pytest.mark.host

torch = pytest.importorskip("torch")

from device import images  # noqa: E402
from device.encoders import ImageEncoder, TextEncoder  # noqa: E402
from device.model import read_spec  # noqa: E402
from device.search import Searcher  # noqa: E402
from provisioning import demo  # noqa: E402
from provisioning.models import convert  # noqa: E402
from provisioning.models import default as default_model  # noqa: E402
from provisioning.models import train  # noqa: E402

EPOCHS = 12


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """36 drawn photos with 3 captions each, plus one corrupt JPEG with a caption."""
    root = tmp_path_factory.mktemp("shapes")
    path = make_shapes(root, colours=4, shapes=3, backgrounds=3)
    doc = json.loads(path.read_text())
    (root / "images" / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    doc["images"].append({"id": 999, "file_name": "damaged.jpg"})
    doc["annotations"].append({"id": 9999, "image_id": 999, "caption": "a damaged photo"})
    path.write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("feature-cache")


def _options(shapes, out, cache_dir, **changes) -> train.TrainOptions:
    settings = dict(captions=shapes / "captions.json", images=shapes / "images", out=out, val_fraction=0.25,
                    batch_size=16, epochs=EPOCHS, cache_dir=cache_dir, progress=False, export=False)
    settings.update(changes)
    return train.TrainOptions(**settings)


def _train_cli(shapes, out, *extra, check=True):
    return run_cli("provisioning", "train", "--captions", str(shapes / "captions.json"),
                   "--images", str(shapes / "images"), "--out", str(out), *extra, check=check)


@pytest.fixture(scope="module")
def trained(shapes, cache_dir, tmp_path_factory):
    """A model trained and exported (int8) with the real command line."""
    out = tmp_path_factory.mktemp("trained") / "shapes-model"
    proc = _train_cli(shapes, out, "--val-fraction", "0.25", "--batch-size", "16", "--epochs", str(EPOCHS),
                      "--cache-dir", str(cache_dir), "--id", "shapes", "--version", "0.1.0", "--quiet")
    return out, proc.stdout


def _heads(checkpoint_dir):
    return torch.load(checkpoint_dir / train.LAST_CHECKPOINT, weights_only=True)["heads"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_the_loss_and_raises_validation_recall(trained):
    out, stdout = trained
    history = json.loads((out / train.HISTORY_FILE).read_text())["history"]
    assert [row["epoch"] for row in history] == list(range(EPOCHS + 1))
    untrained, first, last = history[0], history[1], history[-1]
    # The loss of the last epochs is well below the first one's (single epochs are
    # noisy: two steps each on this set).
    assert np.mean([row["loss"] for row in history[-3:]]) < 0.5 * first["loss"]
    # Chance is 1/9 for R@1 on 9 held-out photos; the untrained heads are about there.
    assert last["R@1"] >= untrained["R@1"] + 0.3
    assert last["R@5"] >= untrained["R@5"]
    assert last["median_rank"] < untrained["median_rank"]
    # The same curve is printed as a table, one row per epoch after the header.
    lines = stdout.splitlines()
    header = 0  # stdout is the result: the table first, library chatter goes elsewhere
    assert lines[header].split()[:5] == ["epoch", "loss", "R@1", "R@5", "R@10"]
    rows = [line.split() for line in lines[header + 1:header + 2 + EPOCHS]]
    assert [int(row[0]) for row in rows] == list(range(EPOCHS + 1))
    assert float(rows[-1][2]) == pytest.approx(last["R@1"], abs=1e-3)


def test_unreadable_photo_is_skipped_and_reported(trained):
    out, stdout = trained
    assert "skipped damaged.jpg:" in stdout
    report = json.loads((out / train.HISTORY_FILE).read_text())
    assert [s["image"] for s in report["skipped_photos"]] == ["damaged.jpg"]
    assert report["train_images"] + report["val_images"] == 36


def test_validation_holds_out_whole_photos(shapes):
    data, val, how = train.split_data(_options(shapes, shapes / "unused", None))
    assert len(val.images) == 9 and "9 of 37" in how  # the corrupt photo counts until decoded
    assert not set(data.images) & set(val.images)
    # Every caption of a held-out photo is held out with it.
    assert sorted(val.captions) == sorted(
        c for c, t in zip(*_all_pairs(shapes)) if t in {p.name for p in val.images})
    # The same photos every time, whatever the seed.
    again = train.split_data(_options(shapes, shapes / "unused", None, seed=7))[1]
    assert again.images == val.images


def test_a_coco_split_can_be_the_validation_set(shapes, cache_dir, tmp_path):
    # Without the feature cache (--no-cache) too.
    result = train.train(_options(shapes, tmp_path / "m", None, epochs=1, val_split="val", use_cache=False),
                         log=lambda *_: None)
    doc = json.loads((shapes / "captions.json").read_text())
    held = [i for i in doc["images"] if i.get("split") == "val"]
    assert result.data["val_images"] == len(held) == 7
    assert result.data["train_images"] == 36 - 7  # the rest, less the damaged photo
    assert result.data["validation"] == "COCO split 'val'"


def _all_pairs(shapes):
    doc = json.loads((shapes / "captions.json").read_text())
    names = {i["id"]: i["file_name"] for i in doc["images"]}
    return [a["caption"] for a in doc["annotations"]], [names[a["image_id"]] for a in doc["annotations"]]


def test_model_json_records_recipe_data_metrics_and_parity(trained):
    out, _ = trained
    spec = read_spec(out)
    assert spec.full_id == "shapes@0.1.0"
    assert spec.dim == 256 and spec.quantization == "int8"
    assert spec.extra["recipe"]["epochs"] == EPOCHS and spec.extra["recipe"]["unfreeze_image"] == 0
    assert spec.extra["training"]["train_images"] == 27 and spec.extra["training"]["val_images"] == 9
    history = json.loads((out / train.HISTORY_FILE).read_text())["history"]
    assert spec.extra["metrics"]["R@1"] == history[-1]["R@1"]
    assert spec.extra["parity"]["text_min_cosine"] >= 0.99
    assert spec.extra["parity"]["image_min_cosine"] >= 0.99
    from device.selftest import run_selftest

    assert min(run_selftest(out).values()) >= 0.98  # `glimpse selftest` has the model's reference
    card = (out / "MODEL_CARD.md").read_text()
    assert "Apache-2.0" in card and f"\n    {EPOCHS} " in card  # the curve's last row


#: Photos of scikit-image's that are not in the model's own parity reference set.
REAL_PHOTOS = ["coins.png", "moon.png", "camera.png", "brick.png"]


def test_exported_towers_run_on_the_device_encoders_and_match_pytorch(trained, shapes, cache_dir):
    out, _ = trained
    texts = ["a green square on a dark background", "a small red circle on the left", "a yellow thing",
             "two dogs playing in the snow"]
    rng = random.Random(42)
    drawn = [draw_photo(c, s, b, rng)[0] for c, s, b in
             [("red", "triangle", "sky"), ("blue", "circle", "white"), ("purple", "star", "sand")]]
    real = [images.open_photo(demo.demo_photo(name)).image for name in REAL_PHOTOS]
    pixels = [images.tower_input(img, 224) for img in [*real, *drawn]]

    text_tower, image_tower = train.TextTower(0), train.ImageTower(0)
    heads = train.DualHeads(text_tower, image_tower, dim=256, hidden=512)
    heads.load_state_dict(_heads(out.with_name(out.name + ".checkpoints")))
    text_ref = train.TextExport(text_tower, heads.text_head).eval()
    image_ref = train.ImageExport(image_tower, heads.image_head).eval()
    expected_text = default_model.embed_texts(text_ref, text_tower.tokenizer, texts)
    with torch.no_grad():
        expected_image = np.concatenate([image_ref(torch.from_numpy(p)).numpy() for p in pixels])

    with TextEncoder.create_from_model_dir(out) as text, ImageEncoder.create_from_model_dir(out) as image:
        assert text.dim == image.dim == 256
        lite_text = np.stack([text.embed(t) for t in texts])
        lite_image = np.stack([image.embed_pixels(p[0]) for p in pixels])
    assert convert.cosine_rows(lite_text, expected_text).min() >= 0.99
    image_cosine = convert.cosine_rows(lite_image, expected_image)
    print(f"int8 vs PyTorch: text {convert.cosine_rows(lite_text, expected_text).round(4)}, "
          f"image {image_cosine.round(4)}")
    assert image_cosine[:len(real)].min() >= 0.99
    # Flat drawings are the int8 image tower's hardest case: the trained head
    # amplifies small feature differences (measured 0.990 to 0.999 with the
    # depthwise convolutions kept float32; 0.92 with them in int8 too).
    assert image_cosine[len(real):].min() >= 0.98

    float32 = out.with_name("shapes-float32")
    checkpoints = out.with_name(out.name + ".checkpoints")
    # Resuming a finished run trains nothing and only exports: here as float32.
    train.train(train.TrainOptions(captions=shapes / "captions.json", images=shapes / "images", out=float32,
                                   val_fraction=0.25, batch_size=16, epochs=EPOCHS, cache_dir=cache_dir,
                                   checkpoint_dir=checkpoints, resume=True, variant="float32", progress=False),
                log=lambda *_: None)
    with TextEncoder.create_from_model_dir(float32) as text, ImageEncoder.create_from_model_dir(float32) as image:
        exact_text = np.stack([text.embed(t) for t in texts])
        exact_image = np.stack([image.embed_pixels(p[0]) for p in pixels])
    assert convert.cosine_rows(exact_text, expected_text).min() >= 0.9999
    assert convert.cosine_rows(exact_image, expected_image).min() >= 0.9999
    assert read_spec(float32).quantization == "float32"


def test_build_and_eval_work_with_the_trained_model(trained, shapes, tmp_path):
    out, _ = trained
    bundle = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(shapes / "images"), "--out", str(bundle),
            "--model", str(out), "--quiet")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["id"] == "shapes"
    report = {}
    for name, model in [("trained", ["--model", str(out)]), ("default", [])]:
        proc = run_cli("provisioning", "eval", "--captions", str(shapes / "captions.json"),
                       "--images", str(shapes / "images"), "--json", *model)
        report[name] = json.loads(proc.stdout)
    assert report["trained"]["model"] == "shapes@0.1.0"
    # On photos like its training set the trained model finds far more than the
    # zero-shot default (which knows no colours): R@1 about 0.6 against 0.03.
    assert report["trained"]["R@1"] > report["default"]["R@1"] + 0.3
    # The device's search finds the photo a caption was written for, from the bundle alone.
    proc = run_cli("device", "search", "a blue circle on a white background", "--bundle", str(bundle),
                   "-k", "3", "--json")
    assert "blue-circle-white-0.jpg" in [hit["path"] for hit in json.loads(proc.stdout)]


def test_a_bundle_of_the_trained_model_exports_to_the_task_library(trained, shapes, tmp_path):
    # train -> build -> export-tasklib: the Task Library's TextSearcher finds what Glimpse finds.
    out, _ = trained
    bundle = tmp_path / "bundle"
    run_cli("provisioning", "build", "--images", str(shapes / "images"), "--out", str(bundle),
            "--model", str(out), "--quiet")
    searcher = tmp_path / "shapes-searcher.tflite"
    proc = run_cli("provisioning", "export-tasklib", "--bundle", str(bundle), "--out", str(searcher))
    assert "model shapes@0.1.0" in proc.stdout
    queries = ["a blue circle on a white background", "a red square", "a green triangle against a blue sky"]
    with Searcher.from_bundle(bundle) as glimpse:
        ours = [[r.item.path for r in glimpse.search(q, k=5)] for q in queries]
    theirs = tasklib_probe(do="search", model=str(searcher), queries=queries, max_results=5)["results"]
    for query, glimpse_top5, found in zip(queries, ours, theirs):
        print(f"\n{query}\n  Glimpse:      {glimpse_top5}\n  Task Library: {[n['metadata'] for n in found]}")
    # The searcher's tower is float32, the bundle's int8: near-ties may swap, so compare the top 3 in
    # order and the top 5 as sets.
    for query, glimpse_top5, found in zip(queries, ours, theirs):
        paths = [n["metadata"] for n in found]
        assert paths[:3] == glimpse_top5[:3], query
        assert len(set(paths) & set(glimpse_top5)) >= 4, query


def test_the_same_seed_gives_the_same_weights_another_seed_others(shapes, cache_dir, tmp_path):
    runs = {}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        train.train(_options(shapes, tmp_path / name, cache_dir, epochs=3, seed=seed), log=lambda *_: None)
        runs[name] = _heads(tmp_path / f"{name}.checkpoints")
    assert _same_weights(runs["a"], runs["b"])
    assert not _same_weights(runs["a"], runs["c"])


def test_interrupted_and_resumed_run_ends_with_the_same_weights(shapes, cache_dir, tmp_path):
    quiet = lambda *_: None  # noqa: E731
    whole = train.train(_options(shapes, tmp_path / "whole", cache_dir, epochs=4), log=quiet)

    def ctrl_c(epoch, step):
        if (epoch, step) == (2, 0):
            signal.raise_signal(signal.SIGINT)

    options = _options(shapes, tmp_path / "cut", cache_dir, epochs=4)
    with pytest.raises(train.TrainInterrupted) as stopped:
        train.train(options, on_step=ctrl_c, log=quiet)
    assert stopped.value.exit_status == 130
    saved = torch.load(options.checkpoints / train.LAST_CHECKPOINT, weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 1)  # mid-epoch 2, after its first step

    options.resume = True
    resumed = train.train(options, log=quiet)
    assert _same_weights(_heads(tmp_path / "whole.checkpoints"), _heads(options.checkpoints))
    assert resumed.history == whole.history


def test_ctrl_c_on_the_command_line_saves_a_checkpoint_and_exits_130(shapes, cache_dir, tmp_path):
    out = tmp_path / "m"
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioning", "train", "--captions", str(shapes / "captions.json"),
         "--images", str(shapes / "images"), "--out", str(out), "--val-fraction", "0.25", "--batch-size", "16",
         "--epochs", "100000", "--cache-dir", str(cache_dir), "--no-export"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    seen = b""
    try:
        while b"training: " not in seen:  # the first progress line of the training steps
            ready, _, _ = select.select([proc.stderr], [], [], 120)
            chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
            assert chunk, f"no training progress: {seen.decode(errors='replace')}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    stderr = (seen + rest).decode(errors="replace")
    assert proc.returncode == 130
    assert "run the same command with --resume to continue" in stderr and "Traceback" not in stderr
    saved = torch.load(out.with_name("m.checkpoints") / train.LAST_CHECKPOINT, weights_only=True)
    assert saved["epoch"] * 2 + saved["step"] >= 1  # at least the step in progress was kept


def test_more_epochs_continue_a_finished_run(shapes, cache_dir, tmp_path):
    quiet = lambda *_: None  # noqa: E731
    train.train(_options(shapes, tmp_path / "whole", cache_dir, epochs=3), log=quiet)
    train.train(_options(shapes, tmp_path / "more", cache_dir, epochs=2), log=quiet)
    more = train.train(_options(shapes, tmp_path / "more", cache_dir, epochs=3, resume=True), log=quiet)
    assert [row["epoch"] for row in more.history] == [0, 1, 2, 3]
    assert _same_weights(_heads(tmp_path / "whole.checkpoints"), _heads(tmp_path / "more.checkpoints"))


def test_unfrozen_blocks_train_from_cached_activations(shapes, cache_dir, tmp_path):
    options = _options(shapes, tmp_path / "unfrozen", cache_dir, epochs=2, unfreeze_text=1, unfreeze_image=1)
    result = train.train(options, log=lambda *_: None)
    assert result.history[-1]["loss"] < result.history[1]["loss"]
    pretrained = train.ImageTower(1).net._blocks[15].state_dict()
    tuned = {k[len("image_blocks.0."):]: v for k, v in result.heads.items() if k.startswith("image_blocks.0.")}
    assert tuned.keys() == pretrained.keys()
    assert not all(torch.equal(tuned[k], pretrained[k]) for k in tuned)  # the block learned


def test_the_cut_towers_compute_what_the_whole_towers_do():
    texts = ["a red circle on a white background", "hi", "a much longer caption, with more words than the others"]
    text = train.TextTower(2)
    encodings = text.tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.int32)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.int32)
    with torch.no_grad():
        whole = text.full(ids, mask).numpy()
        cut = text.trained(text.frozen(texts)).numpy()
    assert np.abs(whole - cut).max() < 1e-5
    image = train.ImageTower(3)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    with torch.no_grad():
        assert np.abs(image.features(torch.from_numpy(pixels)).numpy()
                      - image.trained(image.frozen(pixels)).numpy()).max() < 1e-5


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "epochs must be at least 1"),
    (["--batch-size", "1"], "batch size must be at least 2"),
    (["--unfreeze-image", "17"], "16 blocks to unfreeze"),
    (["--val-fraction", "1"], "validation fraction"),
    (["--variant", "int8", "--id", " "], "model id and version"),
])
def test_bad_options_are_refused_with_a_reason(shapes, tmp_path, args, message):
    proc = _train_cli(shapes, tmp_path / "m", *args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_captions_or_unusable_photos_are_clear_errors(shapes, tmp_path):
    proc = run_cli("provisioning", "train", "--captions", str(tmp_path / "nope.json"),
                   "--images", str(shapes / "images"), "--out", str(tmp_path / "m"), check=False)
    assert proc.returncode == 2 and "no such captions file" in proc.stderr

    broken = tmp_path / "broken"
    (broken / "images").mkdir(parents=True)
    for n in range(3):
        (broken / "images" / f"{n}.jpg").write_bytes(b"not a photo")
    (broken / "captions.csv").write_text("image,caption\n" + "".join(f"{n}.jpg,photo {n}\n" for n in range(3)))
    proc = run_cli("provisioning", "train", "--captions", str(broken / "captions.csv"),
                   "--images", str(broken / "images"), "--out", str(tmp_path / "m"), "--quiet",
                   "--cache-dir", str(tmp_path / "cache"), check=False)
    assert proc.returncode == 2
    assert "0 usable photos to train on" in proc.stderr and "Traceback" not in proc.stderr


def test_checkpoints_are_neither_overwritten_nor_resumed_with_other_options(shapes, cache_dir, tmp_path):
    out = tmp_path / "m"
    train.train(_options(shapes, out, cache_dir, epochs=1), log=lambda *_: None)
    common = ["--val-fraction", "0.25", "--batch-size", "16", "--cache-dir", str(cache_dir), "--no-export",
              "--quiet"]
    proc = _train_cli(shapes, out, *common, check=False)
    assert proc.returncode == 2 and "--resume to continue it or --force to start over" in proc.stderr
    proc = _train_cli(shapes, out, *common, "--resume", "--dim", "64", check=False)
    assert proc.returncode == 2 and "dim (256 then, 64 now)" in proc.stderr
    proc = _train_cli(shapes, out, *common, "--resume", "--limit", "20", check=False)
    assert proc.returncode == 2 and "other data or options: the training photos or captions" in proc.stderr
    proc = _train_cli(shapes, tmp_path / "other", *common, "--resume", check=False)
    assert proc.returncode == 2 and "no checkpoint to resume from" in proc.stderr


def test_an_out_around_the_photos_is_refused_before_anything_is_loaded(shapes, tmp_path):
    from device.errors import GlimpseError  # OutputRefused, which older code lacks

    photos = sorted(p.name for p in (shapes / "images").iterdir())
    with pytest.raises(GlimpseError, match="contains the photo folder"):
        train.train(_options(shapes, shapes, tmp_path / "cache", export=True, force=True), log=lambda *_: None)
    with pytest.raises(GlimpseError, match="is inside the photo folder"):
        train.train(_options(shapes, shapes / "images" / "model", tmp_path / "cache", export=True),
                    log=lambda *_: None)
    assert sorted(p.name for p in (shapes / "images").iterdir()) == photos
    assert (shapes / "captions.json").is_file()
