"""The multilingual evaluation set: real photographs that ship inside packages, and queries.

Photos are never copied into the repository: ``bench/eval/photos.json`` names each
one by the package that ships it (a Python package's directory or a Debian
package's path), its sha256 and its licence, and :func:`photos` finds and checks
them. Queries come from ``bench/eval/queries.tsv`` (one row per query group: the
same query in English and eight other languages, with the ids of the photos
that answer it); :func:`split` divides the groups into a tuning and a test half
once, deterministically and per category, and the halves are committed::

    python -m bench.eval_set check            # every photo found, sha256 right
    python -m bench.eval_set split            # (re)writes queries_tune.json, queries_test.json

What installs the photos: ``make eval-deps`` (Debian packages and the ``eval`` extra).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parent / "eval"
LANGUAGES = ("en", "es", "de", "fr", "pt", "it", "ru", "zh", "ja")
CATEGORIES = ("objects", "people", "colours", "scenes", "textures")
HALVES = ("tune", "test")


class PhotoMissing(FileNotFoundError):
    """A photo of the set is not installed or is not the file it should be."""


@dataclasses.dataclass(frozen=True)
class EvalPhoto:
    """One photograph of the set: its id, where it is on this machine, where it comes from."""

    id: str
    path: Path
    package: str
    licence: str
    description: str


def _locate(entry: dict) -> Path:
    module = entry.get("module")
    if module is None:
        return Path(entry["path"])
    # find_spec locates a top-level package without importing it.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PhotoMissing(f"{entry['id']}: Python package {module!r} ({entry['package']}) is not installed; "
                           "run make eval-deps")
    return Path(list(spec.submodule_search_locations)[0]) / entry["path"]


def photos(verify: bool = True, available_only: bool = False) -> list[EvalPhoto]:
    """Every photo of the set, found in its installed package.

    Args:
        verify: check each file's sha256 against the manifest.
        available_only: leave out photos whose package is not installed instead of
            raising (for timing runs in an environment that lacks some packages).

    Raises:
        PhotoMissing: a photo's package is not installed or its file differs
            (another package version): run ``make eval-deps``.
    """
    manifest = json.loads((EVAL_DIR / "photos.json").read_text(encoding="utf-8"))
    out = []
    for entry in manifest["photos"]:
        try:
            path = _locate(entry)
        except PhotoMissing:
            if available_only:
                continue
            raise
        if not path.is_file():
            raise PhotoMissing(f"{entry['id']}: {path} not found ({entry['package']}); run make eval-deps")
        if verify:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != entry["sha256"]:
                raise PhotoMissing(f"{entry['id']}: {path} has sha256 {digest[:12]}…, the set expects "
                                   f"{entry['sha256'][:12]}… (another version of {entry['package']}?)")
        out.append(EvalPhoto(entry["id"], path, entry["package"], entry["licence"], entry["description"]))
    return out


def read_groups(path: Path = EVAL_DIR / "queries.tsv") -> list[dict]:
    """The query groups of the authoring table, checked against the photo manifest.

    Raises:
        ValueError: a row lacks a language, names an unknown category or photo.
    """
    ids = {entry["id"] for entry in json.loads((EVAL_DIR / "photos.json").read_text(encoding="utf-8"))["photos"]}
    groups = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            relevant = row["relevant"].split(",")
            unknown = sorted(set(relevant) - ids)
            if unknown or row["category"] not in CATEGORIES or any(not row.get(lang) for lang in LANGUAGES):
                raise ValueError(f"{path}: group {row['group']}: bad row (unknown photos {unknown}, "
                                 f"category {row['category']!r}, or a missing language)")
            groups.append({"group": row["group"], "category": row["category"], "relevant": relevant,
                           "queries": {lang: row[lang] for lang in LANGUAGES}})
    return groups


def split(groups: list[dict]) -> dict[str, list[dict]]:
    """Divide query groups into tune and test halves, per category, by a hash of the group id.

    Within each category the groups are ordered by sha256 of their id and dealt
    alternately to tune and test, so each half gets half of every category and
    the split never depends on the order of the table or on any result.
    """
    halves = {half: [] for half in HALVES}
    for category in CATEGORIES:
        members = sorted((g for g in groups if g["category"] == category),
                         key=lambda g: hashlib.sha256(g["group"].encode()).hexdigest())
        for i, group in enumerate(members):
            halves[HALVES[i % 2]].append(group)
    return halves


def queries(half: str) -> list[dict]:
    """The committed query groups of ``half`` (``tune``, ``test`` or ``all``)."""
    if half == "all":
        return queries("tune") + queries("test")
    if half not in HALVES:
        raise ValueError(f"unknown half {half!r}: tune, test or all")
    return json.loads((EVAL_DIR / f"queries_{half}.json").read_text(encoding="utf-8"))["groups"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("check", "split"))
    args = parser.parse_args(argv)
    if args.command == "check":
        try:
            found = photos()
        except PhotoMissing as exc:
            print(f"eval_set: error: {exc}", file=sys.stderr)
            return 1
        groups = read_groups()
        print(f"{len(found)} photos found and verified; {len(groups)} query groups x {len(LANGUAGES)} languages")
        return 0
    halves = split(read_groups())
    for half, members in halves.items():
        path = EVAL_DIR / f"queries_{half}.json"
        path.write_text(json.dumps({"half": half, "made_by": "python -m bench.eval_set split",
                                    "groups": members}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        counts = {c: sum(g["category"] == c for g in members) for c in CATEGORIES}
        print(f"{path.name}: {len(members)} groups {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
