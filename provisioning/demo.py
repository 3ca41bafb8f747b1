"""The demo gallery: real photographs that ship inside scikit-image.

They are read from the installed ``skimage/data`` folder, never copied into
this repository. Their licences (CC0 or public domain) are listed in
scikit-image's own ``skimage/data/README.txt``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from device.errors import GlimpseError

#: skimage/data file -> the name it gets in the demo library (what it shows).
DEMO_PHOTOS = {
    "astronaut.png": "astronaut.png",
    "brick.png": "brick-wall.png",
    "camera.png": "cameraman.png",
    "chelsea.png": "cat.png",
    "clock_motion.png": "clock.png",
    "coffee.png": "coffee.png",
    "coins.png": "coins.png",
    "grass.png": "grass.png",
    "gravel.png": "gravel.png",
    "hubble_deep_field.jpg": "hubble-deep-field.jpg",
    "ihc.png": "microscope-tissue.png",
    "moon.png": "moon.png",
    "motorcycle_left.png": "motorcycle.png",
    "page.png": "book-page.png",
    "retina.jpg": "retina.jpg",
    "rocket.jpg": "rocket.jpg",
}


def skimage_data_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image.

    Raises:
        GlimpseError: scikit-image is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise GlimpseError("the demo gallery needs scikit-image: pip install 'glimpse[demo]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def demo_photo(name: str) -> Path:
    """Path of one demo photo by its skimage file name (e.g. ``chelsea.png``)."""
    path = skimage_data_dir() / name
    if not path.is_file():
        raise GlimpseError(f"scikit-image has no {name} (is its version too old?)")
    return path


def gather(dest: Path) -> list[Path]:
    """Copy the demo photos into ``dest`` under descriptive names; returns the copies."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copies = []
    for source, name in DEMO_PHOTOS.items():
        target = dest / name
        shutil.copyfile(demo_photo(source), target)
        copies.append(target)
    return copies
