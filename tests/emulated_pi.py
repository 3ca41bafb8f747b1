"""An emulated Raspberry Pi: a Debian arm64 root filesystem run under QEMU user-mode.

How (``docs``: shared research, platform notes): ``debootstrap --foreign`` fetches
a minimal arm64 Debian with ``python3``; its packages are unpacked with
``dpkg-deb -x`` (no arm64 code runs, so no binfmt_misc and no second stage); then
``qemu-aarch64-static -cpu cortex-a72 -L ROOT ROOT/usr/bin/python3.X`` runs that
Python on an emulated Pi 4 core. Emulation proves that code loads and computes
correctly on the Pi's instruction set; its speed means nothing.

Root filesystems are cached between runs, outside any checkout, one directory per
suite (default ``/var/cache/glimpse-pi/<suite>-arm64``; ``GLIMPSE_PI_CACHE`` moves it).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

#: Debian suites of the two Raspberry Pi OS releases and the Python each ships.
SUITES = {"bookworm": "3.11", "trixie": "3.13"}
#: QEMU CPU models: the Pi 4 and Pi 400 (Cortex-A72); the Pi 3 and Zero 2 W (Cortex-A53).
CPUS = {"cortex-a72": "Pi 4", "cortex-a53": "Pi 3 / Zero 2 W"}
DEFAULT_CACHE = Path("/var/cache/glimpse-pi")
QEMU = "qemu-aarch64-static"
#: Written last into a finished root filesystem; a directory without it is debris.
STAMP = ".glimpse-rootfs.json"
#: Part of the cache key: change it and every cached root filesystem is rebuilt.
RECIPE = {"arch": "arm64", "variant": "minbase", "include": "python3", "recipe": 1}


class EmulationUnavailable(Exception):
    """The tools or privileges to emulate a Pi are missing on this host."""


class RootfsFailed(Exception):
    """A root filesystem could not be built (mirror unreachable, broken suite...)."""


@dataclasses.dataclass(frozen=True)
class Rootfs:
    """A finished arm64 root filesystem.

    Attributes:
        suite: Debian suite, e.g. ``bookworm``.
        path: its root directory.
        python: the ``X.Y`` version of its ``python3``.
    """

    suite: str
    path: Path
    python: str

    @property
    def interpreter(self) -> Path:
        """The arm64 ``python3.X`` binary inside the root filesystem."""
        return self.path / "usr" / "bin" / f"python{self.python}"


def cache_dir() -> Path:
    """Where root filesystems are kept: ``$GLIMPSE_PI_CACHE`` or ``/var/cache/glimpse-pi``."""
    return Path(os.environ.get("GLIMPSE_PI_CACHE") or DEFAULT_CACHE)


def check_host() -> None:
    """Raise :class:`EmulationUnavailable` naming what is missing to build and run a Pi."""
    missing = [tool for tool in ("debootstrap", "dpkg-deb", QEMU) if not shutil.which(tool)]
    if missing:
        raise EmulationUnavailable(
            f"{', '.join(missing)} not found; make test-pi installs debootstrap and qemu-user-static")
    if os.geteuid() != 0:
        raise EmulationUnavailable("debootstrap needs root; run make test-pi as root (or with sudo)")


def ensure_rootfs(suite: str, cache: Path | None = None, mirror: str | None = None) -> Rootfs:
    """The cached root filesystem of ``suite``, built first if absent.

    Building takes about a minute with a nearby mirror; a lock file keeps two test
    runs from building the same suite at once. A half-built directory (killed
    run) has no stamp and is rebuilt.

    Raises:
        RootfsFailed: debootstrap or unpacking failed; the message carries
            debootstrap's own last lines (an unreachable mirror shows there).
    """
    python = SUITES[suite]
    cache = Path(cache or cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / f"{suite}-{RECIPE['arch']}"
    with open(cache / f".{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _stamp_matches(root, suite):
            return Rootfs(suite, root, python)
        if root.exists():
            shutil.rmtree(root)
        # Build next to the cache entry, then rename: the entry is whole or absent.
        work = Path(tempfile.mkdtemp(prefix=f".{suite}-", dir=cache))
        try:
            _debootstrap(suite, work, mirror or os.environ.get("GLIMPSE_PI_MIRROR"))
            _unpack(work)
            interpreter = work / "usr" / "bin" / f"python{python}"
            if not interpreter.is_file():
                found = sorted(p.name for p in (work / "usr" / "bin").glob("python3.*"))
                raise RootfsFailed(f"{suite}: expected Python {python}, the suite has {found or 'no python3'}")
            stamp = {"suite": suite, "python": python, **RECIPE,
                     "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            (work / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
            os.replace(work, root)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return Rootfs(suite, root, python)


def _stamp_matches(root: Path, suite: str) -> bool:
    try:
        stamp = json.loads((root / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("suite") == suite and all(stamp.get(k) == v for k, v in RECIPE.items())


def _debootstrap(suite: str, root: Path, mirror: str | None) -> None:
    command = ["debootstrap", "--foreign", f"--arch={RECIPE['arch']}", f"--variant={RECIPE['variant']}",
               f"--include={RECIPE['include']}", suite, str(root)]
    if mirror:
        command.append(mirror)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        log = root / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace") if log.is_file() else ""
        lines = (proc.stdout + proc.stderr + detail).strip().splitlines()
        raise RootfsFailed(
            f"debootstrap of Debian {suite} arm64 failed (exit {proc.returncode}); is the Debian mirror "
            f"reachable? Its last words:\n" + "\n".join(lines[-12:]))


def _unpack(root: Path) -> None:
    """Unpack every package debootstrap fetched, as its second stage would (minus the scripts)."""
    debpaths = root / "debootstrap" / "debpaths"
    for line in debpaths.read_text().splitlines():
        package, relative = line.split()
        deb = root / relative.lstrip("/")
        proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RootfsFailed(f"unpacking {package} failed: {proc.stderr.strip()}")
    # The .deb files are not needed once unpacked; the cache stays small.
    for deb in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()


def run_python(rootfs: Rootfs, cpu: str, args: list[str], pythonpath: list[Path],
               timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the root filesystem's Python with ``args`` on an emulated ``cpu``.

    The environment is emptied but for ``PYTHONPATH`` (the installed wheels) and a
    UTF-8 locale, so nothing from the host's Python leaks in.
    """
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # keep the shared site directory as installed
        "LANG": "C.UTF-8",
        "HOME": "/nonexistent",
    }
    command = [QEMU, "-cpu", cpu, "-L", str(rootfs.path), str(rootfs.interpreter), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
