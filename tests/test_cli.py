"""End to end through the real command lines, as a user runs them."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli


def search(bundle_dir, query, k=3):
    proc = run_cli("device", "search", query, "--bundle", str(bundle_dir), "-k", str(k), "--json")
    return json.loads(proc.stdout)


@pytest.mark.parametrize("query, expected", [
    ("a cup of coffee", "kitchen/coffee.png"),
    ("a cat", "pets/cat.png"),
    ("a space launch", "space/rocket.jpg"),
    ("a motorbike", "garage/motorcycle.png"),
    ("coins", "coins.png"),
])
def test_plain_queries_rank_the_right_photo_first(bundle_dir, query, expected):
    results = search(bundle_dir, query)
    assert results[0]["path"] == expected, results


def test_json_results_carry_the_contract_fields(bundle_dir):
    results = search(bundle_dir, "a cup of coffee", k=5)
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert all(isinstance(r["id"], str) and len(r["id"]) == 16 for r in results)
    assert all(r["strength"] in ("strong", "weak") for r in results)  # glimpse-default is calibrated


def test_a_strong_match_and_a_weak_one_are_labelled(bundle_dir):
    assert [r["strength"] for r in search(bundle_dir, "a cat", k=2)] == ["strong", "weak"]
    proc = run_cli("device", "search", "a cat", "--bundle", str(bundle_dir), "-k", "2")
    assert [line.split()[-1] for line in proc.stdout.splitlines()] == ["(strong)", "(weak)"]


def test_table_output_lists_rank_score_and_path(bundle_dir):
    proc = run_cli("device", "search", "a cat", "--bundle", str(bundle_dir), "-k", "2")
    first = proc.stdout.splitlines()[0].split()
    assert first[0] == "1" and first[2] == "pets/cat.png"
    assert 0 < float(first[1]) <= 1


def test_build_skips_and_reports_the_corrupt_photo(library, tmp_path):
    out = tmp_path / "bundle"
    proc = run_cli("provisioning", "build", "--images", str(library), "--out", str(out), "--quiet")
    assert "skipped broken.jpg: corrupt or truncated" in proc.stdout  # the name once
    assert "skipped notes.txt: not a photo file type" in proc.stdout
    assert "8 photos" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert {s["path"] for s in report["skipped"]} == {"broken.jpg", "notes.txt"}


def test_build_refuses_to_overwrite_without_force(bundle_dir, library):
    proc = run_cli("provisioning", "build", "--images", str(library), "--out", str(bundle_dir),
                   "--quiet", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("glimpse-provision: error:") and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_of_a_folder_without_photos_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "broken.png").write_bytes(b"nope")
    proc = run_cli("provisioning", "build", "--images", str(tmp_path / "empty"), "--out",
                   str(tmp_path / "b"), "--quiet", check=False)
    assert proc.returncode == 2
    assert "no usable photo" in proc.stderr
    assert not (tmp_path / "b").exists()


def test_search_of_a_tampered_bundle_is_refused(copy_bundle):
    bundle = copy_bundle()
    with open(bundle / "embeddings.npy", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x7f")
    proc = run_cli("device", "search", "a cat", "--bundle", str(bundle), check=False)
    assert proc.returncode == 2
    assert "glimpse: error:" in proc.stderr and "embeddings.npy was altered" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_verify_reports_an_intact_bundle(bundle_dir):
    proc = run_cli("device", "verify", "--bundle", str(bundle_dir))
    assert "is intact: 8 photos" in proc.stdout


def test_empty_query_is_an_error_not_a_traceback(bundle_dir):
    proc = run_cli("device", "search", "   ", "--bundle", str(bundle_dir), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "glimpse: error: the query is empty: type what you are looking for"
    assert proc.stdout == ""


def test_missing_bundle_is_an_error(tmp_path):
    proc = run_cli("device", "search", "a cat", "--bundle", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2
    assert "no such bundle directory" in proc.stderr


def test_selftest_passes_on_this_runtime():
    proc = run_cli("device", "selftest")
    *figures, verdict = proc.stdout.splitlines()
    lines = dict(line.split(": min cosine ") for line in figures)
    assert float(lines["text"]) >= 0.99 and float(lines["image"]) >= 0.99
    assert verdict == "selftest: PASS" and proc.returncode == 0


def test_selftest_ends_with_a_failing_verdict_and_status():
    proc = run_cli("device", "selftest", "--min-cosine", "1.01", check=False)
    assert proc.returncode == 1
    verdict = proc.stdout.splitlines()[-1]
    assert verdict.startswith("selftest: FAIL (text tower min cosine ") and "is below 1.01" in verdict


def test_python_m_and_console_scripts_share_their_entry_points():
    from device import cli as device_cli
    from provisioning import cli as provisioning_cli

    import configparser
    from conftest import REPO

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    scripts = cfg["options.entry_points"]["console_scripts"]
    assert "glimpse = device.cli:main" in scripts
    assert "glimpse-provision = provisioning.cli:main" in scripts
    assert callable(device_cli.main) and callable(provisioning_cli.main)


def test_import_model_without_the_host_tools_says_what_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        pytest.skip("PyTorch is installed here: the host tests cover import-model")
    (tmp_path / "source").mkdir()
    proc = run_cli("provisioning", "import-model", str(tmp_path / "source"), "--out", str(tmp_path / "m"),
                   check=False)
    assert proc.returncode == 2
    assert "needs the host tools" in proc.stderr and ".venv-host" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_at_word_that_names_no_photo_is_a_cli_error(bundle_dir):
    proc = run_cli("device", "search", "@nonexistent", "--bundle", str(bundle_dir), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("glimpse: error: no photo with id 'nonexistent'")
    assert proc.stdout == ""


def test_search_keeps_stderr_clean_and_debug_shows_the_runtime_log(bundle_dir):
    quiet = run_cli("device", "search", "a cat", "--bundle", str(bundle_dir), "--json")
    assert quiet.stderr == ""  # a script piping --json sees only its answer
    assert json.loads(quiet.stdout)
    loud = run_cli("device", "--debug", "search", "a cat", "--bundle", str(bundle_dir), "--json")
    assert "XNNPACK delegate" in loud.stderr


def test_the_native_log_filter_passes_other_lines_through(capfd):
    import os

    from device import runtime

    with runtime._routine_native_log_hidden():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something that matters\n")
    assert capfd.readouterr().err == "ERROR: something that matters\n"


@pytest.mark.parametrize("module", ["device", "provisioning"])
def test_every_subcommand_help_has_a_description_line(module):
    from device import cli as device_cli
    from provisioning import cli as provisioning_cli

    parser = (device_cli if module == "device" else provisioning_cli)._parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert len(commands) >= 10
    for name in commands:
        text = run_cli(module, name, "--help").stdout
        # usage (possibly wrapped), a blank line, then the description: a sentence, not an option list.
        description = text.split("\n\n")[1].strip()
        assert description[0].isupper() and description.endswith("."), (name, text)
        assert not description.startswith(("positional arguments", "options")), (name, text)
