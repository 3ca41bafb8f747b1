"""The data directory: where a device keeps its bundles and which one it serves.

One format shared by the daemon (which reads and switches it) and the host's
``glimpse-provision push``/``install`` (which write it over ssh), so its names
live here and nowhere else::

    DATA_DIR/current -> bundles/<id>      the bundle the daemon serves (a relative link)
    DATA_DIR/bundles/<id>/                complete, verified bundles
    DATA_DIR/bundles/.incoming/<id>/      transfers in progress (never served: a name
                                          starting with "." is not a bundle name)

The daemon's own state sits beside them (the added-photos store, :mod:`device.ingest`).
The link is switched atomically (a new link renamed over the old one), so a
reader sees either the old bundle or the new one, never neither.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from device.errors import BundleNameInvalid, GlimpseError

#: Where the daemon keeps its data unless configured otherwise (``data_dir`` setting).
DEFAULT_DATA_DIR = "/var/lib/glimpse"
#: The folder of versioned bundles, one directory per bundle id.
BUNDLES_DIR = "bundles"
#: The link (in the data directory) to the bundle being served.
CURRENT_LINK = "current"
#: Transfers in progress, under ``bundles/``; the leading dot keeps it from ever being a bundle name.
INCOMING_DIR = ".incoming"
#: Longest bundle name, in bytes of UTF-8: a directory entry holds at most 255 (NAME_MAX).
MAX_BUNDLE_NAME_BYTES = 255


def bundles_dir(data_dir: str | PurePath) -> Path:
    """``DATA_DIR/bundles``."""
    return Path(data_dir) / BUNDLES_DIR


def current_link(data_dir: str | PurePath) -> Path:
    """``DATA_DIR/current``, the link to the bundle served."""
    return Path(data_dir) / CURRENT_LINK


def bundle_by_name(data_dir: str | PurePath, name: str) -> Path:
    """The bundle directory called ``name`` under ``DATA_DIR/bundles``.

    Raises:
        BundleNameInvalid: ``name`` is not one plain directory name (empty, a path, hidden,
            too long, or with control characters).
    """
    bundles = bundles_dir(data_dir)
    if len(name.encode("utf-8", "surrogatepass")) > MAX_BUNDLE_NAME_BYTES:
        raise BundleNameInvalid(f"a bundle name of {len(name)} characters is not a bundle name: "
                                f"at most {MAX_BUNDLE_NAME_BYTES} bytes (a directory under {bundles})")
    if (not name or "/" in name or "\\" in name or name.startswith(".")
            or any(not ch.isprintable() for ch in name)):
        raise BundleNameInvalid(f"{name!r} is not a bundle name (a directory under {bundles}, "
                                "without control characters, slashes or a leading dot)")
    return bundles / name


def switch_link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (a new link renamed over the old).

    Raises:
        GlimpseError: the link cannot be written (read-only or full disk...).
    """
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        # A relative target keeps the data directory relocatable.
        os.symlink(os.path.relpath(target, link.parent), tmp)
        os.replace(tmp, link)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise GlimpseError(f"cannot switch {link} to {target.name}: {exc.strerror}") from None
