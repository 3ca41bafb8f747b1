"""The wheelhouse: every wheel a device needs, downloaded on a host, for offline installs.

``glimpse-provision wheelhouse --platform linux_aarch64 --python 3.11 --python 3.13
--out DIR`` builds Glimpse itself as a wheel, then has pip download the wheels of
``glimpse[device]`` and all their dependencies for each target (CPU, Python,
glibc), so a Pi with no internet installs with::

    pip install --no-index --find-links DIR 'glimpse[device]'

pip does the resolving and the downloading (``pip download`` with ``--platform``,
``--python-version``, ``--implementation`` and ``--abi``); this module only
computes the target's tags, drives pip, and records what it got in
``wheelhouse.json``: per target, each wheel with its tags and sha256. The record
comes from pip's own installation report of an offline, resolve-only install
from the wheelhouse, which also proves the wheelhouse is complete for that target.

pip evaluates environment markers (``python_version < "3.12"``...) with the
host's interpreter, not the target's; ``make test-pi`` therefore also has each
Pi OS's own Python and pip resolve from the wheelhouse and checks they pick the
same wheels.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from device import ownership
from device.errors import TargetInvalid, WheelhouseFailed
from device.model import sha256_file

MANIFEST = "wheelhouse.json"
MANIFEST_FORMAT = "glimpse-wheelhouse"
#: Written first into a new wheelhouse: the directory is Glimpse's to prune.
MARKER = ".glimpse-wheelhouse"
WHEELHOUSE_MARKERS = ((MANIFEST, MANIFEST_FORMAT), (MARKER, MANIFEST_FORMAT))
MANIFEST_FORMAT_VERSION = 1
#: What a device installs: Glimpse with its ``device`` extra.
REQUIREMENT = "glimpse[device]"
#: The oldest glibc of a supported Pi OS: Bookworm's 2.36 (Trixie has 2.41). Wheels
#: needing a newer glibc would fail to load on Bookworm, so they are not taken.
DEFAULT_GLIBC = "2.36"
#: PEP 599's manylinux2014 is glibc 2.17, the oldest manylinux tag with aarch64 wheels.
_OLDEST_GLIBC_MINOR = 17
#: CPUs a wheelhouse can target, by pip platform name.
PLATFORMS = {"linux_aarch64": "aarch64", "linux_armv7l": "armv7l", "linux_x86_64": "x86_64"}
#: Oldest Python Glimpse runs on (``python_requires`` in setup.cfg).
MIN_PYTHON = (3, 11)
#: pip before 24.2 checks Requires-Python against the running interpreter, not
#: ``--python-version``, when installing for another target (so a 3.13 target
#: fails from a 3.11 host).
MIN_PIP = (24, 2)


@dataclasses.dataclass(frozen=True)
class Target:
    """One device environment: CPU platform, CPython version and glibc.

    Attributes:
        python: ``"3.11"`` style version.
        platform: pip platform name, e.g. ``linux_aarch64``.
        glibc: the device's glibc version, ``"2.36"`` style; wheels that need a
            newer one are not taken.

    Use :func:`parse_target` to build one from user input (it validates).
    """

    python: str
    platform: str = "linux_aarch64"
    glibc: str = DEFAULT_GLIBC

    @property
    def version_info(self) -> tuple[int, int]:
        """``(3, 11)`` for ``"3.11"``."""
        major, minor = self.python.split(".")
        return int(major), int(minor)

    @property
    def abi(self) -> str:
        """The CPython ABI tag, e.g. ``cp311``."""
        return "cp{}{}".format(*self.version_info)

    @property
    def arch(self) -> str:
        """The CPU architecture, e.g. ``aarch64``."""
        return PLATFORMS[self.platform]

    def platform_tags(self) -> list[str]:
        """Platform tags of wheels that load on this target, newest glibc first.

        Every ``manylinux_2_N_<arch>`` from the target's glibc down to 2.17, and
        the legacy ``manylinux2014_<arch>`` alias; pip before 25 does not expand
        ``--platform manylinux_2_N`` to older glibc versions, hence the full list.
        ``linux_<arch>`` is left out: such wheels are local builds, not portable.
        """
        newest = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{minor}_{self.arch}" for minor in range(newest, _OLDEST_GLIBC_MINOR - 1, -1)]
        return [*tags, f"manylinux2014_{self.arch}"]

    def supported_tags(self) -> frozenset[Tag]:
        """Every wheel tag this target accepts, computed as pip does (``packaging.tags``):
        ``cpXY-cpXY-<platform>``, ``cpXY-abi3-<platform>`` (and older ``cp3N-abi3``),
        ``cpXY-none-<platform>``, ``py3-none-<platform>`` and ``py3-none-any``."""
        platforms = self.platform_tags()
        return frozenset([
            *cpython_tags(self.version_info, abis=[self.abi], platforms=platforms),
            *compatible_tags(self.version_info, interpreter=self.abi, platforms=platforms),
        ])

    def accepts(self, filename: str) -> bool:
        """Whether the wheel ``filename`` installs on this target (one of its tags matches).

        Raises:
            TargetInvalid: ``filename`` is not a wheel file name.
        """
        try:
            _, _, _, tags = parse_wheel_filename(filename)
        except InvalidWheelFilename as exc:
            raise TargetInvalid(f"{filename}: not a wheel: {exc}") from None
        return not tags.isdisjoint(self.supported_tags())

    def pip_args(self) -> list[str]:
        """The pip options that select this target's wheels (for ``download``,
        ``install --target`` and ``install --dry-run``)."""
        args = ["--only-binary=:all:", "--implementation", "cp", "--python-version", self.python,
                "--abi", self.abi]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        return args

    def __str__(self) -> str:
        return f"CPython {self.python} {self.platform} (glibc {self.glibc})"


def parse_target(python: str, platform: str = "linux_aarch64", glibc: str = DEFAULT_GLIBC) -> Target:
    """Validate user input and return a :class:`Target`.

    Raises:
        TargetInvalid: unknown platform, malformed or unsupported Python version
            (Glimpse needs 3.11 or later), malformed glibc version.
    """
    if platform not in PLATFORMS:
        raise TargetInvalid(f"platform {platform!r} is not supported; choose from {', '.join(PLATFORMS)}")
    match = re.fullmatch(r"3\.(\d{1,2})", python or "")
    if not match:
        raise TargetInvalid(f"Python version {python!r} is malformed; write it as 3.11")
    if (3, int(match.group(1))) < MIN_PYTHON:
        raise TargetInvalid(f"Python {python} is too old; Glimpse needs {'.'.join(map(str, MIN_PYTHON))} or later")
    glibc_match = re.fullmatch(r"2\.(\d{1,2})", glibc or "")
    if not glibc_match or int(glibc_match.group(1)) < _OLDEST_GLIBC_MINOR:
        raise TargetInvalid(f"glibc version {glibc!r} is malformed or older than 2.{_OLDEST_GLIBC_MINOR}")
    return Target(python=python, platform=platform, glibc=glibc)


def source_tree() -> Path:
    """The Glimpse source tree this ``provisioning`` package runs from.

    Raises:
        WheelhouseFailed: Glimpse runs from an installed wheel, not a source tree.
    """
    root = Path(__file__).resolve().parents[2]  # provisioning/deploy/wheelhouse.py
    if not (root / "setup.cfg").is_file() or not (root / "device").is_dir():
        raise WheelhouseFailed(f"{root} is not a Glimpse source tree; pass --source DIR")
    return root


def check_pip(pip: list[str]) -> None:
    """Refuse a pip too old to install for another Python version.

    Raises:
        WheelhouseFailed: pip is missing or older than :data:`MIN_PIP`.
    """
    proc = subprocess.run([*pip, "--version"], capture_output=True, text=True)
    match = re.match(r"pip (\d+)\.(\d+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise WheelhouseFailed(f"cannot run pip ({' '.join(pip)}): {proc.stderr.strip()}")
    if (int(match.group(1)), int(match.group(2))) < MIN_PIP:
        raise WheelhouseFailed(
            f"pip {match.group(1)}.{match.group(2)} cannot resolve for another Python version; "
            f"upgrade it: {sys.executable} -m pip install 'pip>={'.'.join(map(str, MIN_PIP))}'"
        )


def _pip(pip: list[str], args: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*pip, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        # pip's last lines name the missing wheel or the unreachable index.
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise WheelhouseFailed(f"{what} failed (pip exited {proc.returncode}):\n{tail}")
    return proc


def build_glimpse_wheel(source: Path, out: Path, pip: list[str]) -> Path:
    """Build Glimpse (pure Python) as a wheel into ``out``, replacing older Glimpse wheels.

    Raises:
        WheelhouseFailed: the build failed.
    """
    with tempfile.TemporaryDirectory(prefix="glimpse-wheel-") as tmp:
        _pip(pip, ["wheel", "--no-deps", "--wheel-dir", tmp, str(source)], f"building the Glimpse wheel from {source}")
        built = sorted(Path(tmp).glob("glimpse-*.whl"))
        if len(built) != 1:
            raise WheelhouseFailed(f"building {source} gave {[p.name for p in built]}, not one Glimpse wheel")
        # An older Glimpse wheel left here would be as installable as the new one.
        for old in out.glob("glimpse-*.whl"):
            old.unlink()
        return Path(shutil.move(str(built[0]), out / built[0].name))


def download_command(target: Target, requirement: str, dest: Path) -> list[str]:
    """pip arguments that download ``requirement`` and its dependencies for ``target`` into ``dest``."""
    return ["download", "--dest", str(dest), *target.pip_args(), requirement]


def resolve_command(target: Target, requirement: str, wheelhouse: Path, report: Path) -> list[str]:
    """pip arguments of an offline, resolve-only install of ``requirement`` from
    ``wheelhouse`` for ``target``, writing pip's installation report to ``report``.

    ``--isolated`` keeps configured indexes and find-links out, so only the
    wheelhouse counts; ``--ignore-installed`` makes pip list every wheel, not
    only those missing from the host.
    """
    return ["--isolated", "install", "--dry-run", "--ignore-installed", "--no-index",
            "--find-links", str(wheelhouse), "--report", str(report), *target.pip_args(), requirement]


def wheels_from_report(report: dict, wheelhouse: Path, target: Target) -> list[dict]:
    """The manifest entries of the wheels in pip's installation ``report``.

    Raises:
        WheelhouseFailed: the report names a file outside ``wheelhouse``, not a
            wheel, or a wheel ``target`` does not accept.
    """
    wheelhouse = Path(wheelhouse).resolve()
    entries = []
    for install in report.get("install", []):
        url = install.get("download_info", {}).get("url", "")
        parsed = urlparse(url)
        path = Path(unquote(parsed.path)).resolve()
        if parsed.scheme != "file" or path.parent != wheelhouse or not path.name.endswith(".whl"):
            raise WheelhouseFailed(f"{target}: pip resolved {url!r}, not a wheel in {wheelhouse}")
        try:
            name, version, _, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            raise WheelhouseFailed(f"{path.name}: not a wheel: {exc}") from None
        if not target.accepts(path.name):
            raise WheelhouseFailed(f"{target}: {path.name} does not install there")
        entries.append({"file": path.name, "name": str(name), "version": str(version),
                        "tags": sorted(str(t) for t in tags), "sha256": sha256_file(path)})
    return sorted(entries, key=lambda e: e["name"])


def build(targets: list[Target], out: Path, source: Path | None = None,
          pip: list[str] | None = None) -> dict:
    """Fill ``out`` with every wheel ``glimpse[device]`` needs on each target; write ``wheelhouse.json``.

    Wheels already in ``out`` are reused; wheels no target needs any more (an
    older release, a dropped Python version) are removed, so the directory holds
    exactly what the manifest lists.

    Args:
        targets: the device environments, e.g. CPython 3.11 and 3.13 on linux_aarch64.
        out: the wheelhouse directory (created if missing).
        source: the Glimpse source tree (default: :func:`source_tree`).
        pip: the pip command (default: this interpreter's ``python -m pip``).

    Returns:
        The manifest written to ``out/wheelhouse.json``.

    Raises:
        OutputRefused: ``out`` is or holds the source tree, or holds other things than a wheelhouse.
        TargetInvalid: no target given.
        WheelhouseFailed: pip too old, no source tree, a build or download
            failed (no network, no wheel for a target), or the result does not
            install offline on a target.
    """
    if not targets:
        raise TargetInvalid("name at least one target Python version (--python 3.11)")
    source = Path(source) if source else source_tree()
    out = Path(out).resolve()
    # Stale wheels are deleted below: only ever in a wheelhouse Glimpse made (or an empty
    # directory), never in a folder of the user's own (a Downloads folder full of wheels).
    ownership.check_apart(out, [("the Glimpse source tree", source)], allow_inside=True)
    ownership.check_replaceable(out, ["marked"], True, "a wheelhouse", markers=WHEELHOUSE_MARKERS)
    pip = pip or [sys.executable, "-m", "pip"]
    check_pip(pip)
    out.mkdir(parents=True, exist_ok=True)
    # Marks the directory as a wheelhouse before any wheel arrives, so a run cut off
    # before the manifest is written can be resumed.
    (out / MARKER).write_text(json.dumps({"format": MANIFEST_FORMAT}) + "\n", encoding="utf-8")
    glimpse_wheel = build_glimpse_wheel(source, out, pip)
    # A direct reference: a project named "glimpse" on an index must not be taken instead.
    pinned = f"{REQUIREMENT} @ {glimpse_wheel.as_uri()}"
    manifest_targets = []
    for target in targets:
        _pip(pip, download_command(target, pinned, out), f"downloading wheels for {target}")
        with tempfile.TemporaryDirectory(prefix="glimpse-wheelhouse-") as tmp:
            report_path = Path(tmp) / "report.json"
            _pip(pip, resolve_command(target, REQUIREMENT, out, report_path),
                 f"installing {REQUIREMENT} offline from {out} for {target}")
            report = json.loads(report_path.read_text(encoding="utf-8"))
        manifest_targets.append({
            "python": target.python, "platform": target.platform, "glibc": target.glibc,
            "implementation": "cp", "abi": target.abi, "platform_tags": target.platform_tags(),
            "wheels": wheels_from_report(report, out, target),
        })
    needed = {wheel["file"] for target in manifest_targets for wheel in target["wheels"]}
    for stale in out.glob("*.whl"):
        if stale.name not in needed:
            stale.unlink()
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "requirement": REQUIREMENT,
        "glimpse_wheel": glimpse_wheel.name,
        "install": f"pip install --no-index --find-links {out.name} '{REQUIREMENT}'",
        "targets": manifest_targets,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def read_manifest(wheelhouse: Path) -> dict:
    """The parsed ``wheelhouse.json`` of ``wheelhouse``.

    Raises:
        WheelhouseFailed: missing, unreadable or not a Glimpse wheelhouse manifest.
    """
    path = Path(wheelhouse) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WheelhouseFailed(f"{path}: unreadable wheelhouse manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise WheelhouseFailed(f"{path}: not a {MANIFEST_FORMAT} manifest")
    return manifest
