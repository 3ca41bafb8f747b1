"""The multilingual evaluation set's queries and their tune/test split (bench/eval_set.py)."""

from __future__ import annotations

import json

import pytest

from bench import eval_set


@pytest.fixture(scope="module")
def groups():
    return eval_set.read_groups()


def test_the_committed_halves_are_the_split_of_the_table(groups):
    """An edit to queries.tsv without re-running the split (or an edit to a half) is caught."""
    halves = eval_set.split(groups)
    for half in eval_set.HALVES:
        assert eval_set.queries(half) == halves[half]


def test_halves_are_disjoint_by_group_and_share_every_category(groups):
    tune, test = eval_set.queries("tune"), eval_set.queries("test")
    assert not {g["group"] for g in tune} & {g["group"] for g in test}
    assert len(tune) + len(test) == len(groups) >= 100
    for category in eval_set.CATEGORIES:
        counts = [sum(g["category"] == category for g in half) for half in (tune, test)]
        assert abs(counts[0] - counts[1]) <= 1 and min(counts) > 0


def test_the_split_ignores_the_order_of_the_table(groups):
    assert eval_set.split(list(reversed(groups))) == eval_set.split(groups)


def test_every_query_is_in_every_language_and_names_known_photos(groups):
    manifest = json.loads((eval_set.EVAL_DIR / "photos.json").read_text(encoding="utf-8"))["photos"]
    ids = {p["id"] for p in manifest}
    assert len(ids) == len(manifest) >= 40
    for group in groups:
        assert set(group["queries"]) == set(eval_set.LANGUAGES)
        assert set(group["relevant"]) <= ids


def test_a_row_naming_an_unknown_photo_is_refused(tmp_path):
    table = tmp_path / "queries.tsv"
    header = "\t".join(["group", "category", "relevant", *eval_set.LANGUAGES])
    table.write_text(header + "\n" + "\t".join(["g", "objects", "no-such-photo", *("x" * 9)]) + "\n",
                     encoding="utf-8")
    with pytest.raises(ValueError, match="no-such-photo"):
        eval_set.read_groups(table)


def test_a_photo_from_a_missing_package_is_reported(monkeypatch, tmp_path):
    manifest = {"photos": [{"id": "x", "package": "pypi:nothing", "module": "no_such_module_here",
                            "path": "a.jpg", "sha256": "0" * 64, "licence": "", "description": ""}]}
    (tmp_path / "photos.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setattr(eval_set, "EVAL_DIR", tmp_path)
    with pytest.raises(eval_set.PhotoMissing, match="not installed"):
        eval_set.photos()
    assert eval_set.photos(available_only=True) == []


def test_a_photo_that_is_not_the_expected_file_is_refused(monkeypatch, tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"another version")
    manifest = {"photos": [{"id": "x", "package": "deb:something", "path": str(photo), "sha256": "0" * 64,
                            "licence": "", "description": ""}]}
    (tmp_path / "photos.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setattr(eval_set, "EVAL_DIR", tmp_path)
    with pytest.raises(eval_set.PhotoMissing, match="expects"):
        eval_set.photos()
    assert [p.id for p in eval_set.photos(verify=False)] == ["x"]
