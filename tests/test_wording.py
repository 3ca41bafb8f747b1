"""Counted nouns agree with their count in every message."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, run_cli
from device.wording import plural


@pytest.mark.parametrize("count, noun, many, expected", [
    (0, "photo", None, "0 photos"),
    (1, "photo", None, "1 photo"),
    (2, "duplicate file", None, "2 duplicate files"),
    (1, "search", "searches", "1 search"),
    (3, "search", "searches", "3 searches"),
])
def test_plural(count, noun, many, expected):
    assert plural(count, noun, many) == expected


def test_one_duplicate_is_one_duplicate_file(tmp_path, library):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):  # the same photo twice, and one other
        (photos / name).write_bytes((library / "pets" / "cat.png").read_bytes())
    (photos / "c.png").write_bytes((library / "coins.png").read_bytes())
    out = run_cli("provisioning", "build", "--images", str(photos), "--out", str(tmp_path / "b"), "--quiet").stdout
    assert "1 duplicate file kept once" in out and "2 photos in" in out
    verify = run_cli("device", "verify", "--bundle", str(tmp_path / "b")).stdout
    assert "is intact: 2 photos" in verify


# Messages that count something in a literal plural ("{n} photos") say "1 photos" for one:
# every such message goes through plural() instead.
_COUNTED = re.compile(r"\{[^{}]*(?:len\(|count|items|queries|\[.(?:items|queries|ready)|wheels)[^{}]*\} "
                      r"(?:photos|files|duplicate files|wheels|searches|bytes)\b")


def test_no_message_counts_in_a_literal_plural():
    offenders = []
    for path in [*(REPO / "device").rglob("*.py"), *(REPO / "provisioning").rglob("*.py"),
                 *(REPO / "device" / "web" / "templates").glob("*.html")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _COUNTED.search(line) or re.search(r"\}\} (?:added )?photos", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
