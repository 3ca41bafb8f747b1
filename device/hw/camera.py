"""The camera: a still photo for "What is this like?".

:class:`PiCamera` takes stills with Pi OS's ``picamera2`` (``apt install
python3-picamera2``; imported only when ``camera = picamera2``).
:class:`MockCamera` stands in for it, as gpiozero's ``MockFactory`` does for
pins: it "takes" a real photo from a file, so tests and demos run the same
path from the shutter to the results.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageOps

from device.errors import CameraUnavailable

#: Camera models the ``camera`` setting names.
MODELS = ("picamera2",)


class Camera(Protocol):
    """What the daemon needs from a camera.

    Attributes:
        name: how logs and ``/api/status`` call it.
    """

    name: str

    def capture(self) -> Image.Image:
        """Take a photo now: an upright RGB image.

        Raises:
            CameraUnavailable: the camera could not take it.
        """

    def close(self) -> None:
        """Release the camera."""


class PiCamera:
    """A Raspberry Pi camera module through ``picamera2`` (libcamera).

    Args:
        size: the still's size in pixels (the image tower needs far fewer than the sensor has).

    Raises:
        ImportError: picamera2 is not installed (the factory reports it).
        RuntimeError, OSError: no camera answers (the factory reports it).
    """

    def __init__(self, size: tuple[int, int] = (1280, 960)):
        from picamera2 import Picamera2  # only when a camera is configured

        self.name = "picamera2"
        self._camera = Picamera2()
        self._camera.configure(self._camera.create_still_configuration(main={"size": size, "format": "RGB888"}))
        self._camera.start()
        self._lock = threading.Lock()

    def capture(self) -> Image.Image:
        with self._lock:  # one exposure at a time: a button hold and a web request may meet
            try:
                image = self._camera.capture_image("main")
            except Exception as exc:  # libcamera reports through several exception types
                raise CameraUnavailable(f"the camera could not take a photo: {exc}") from None
        return image.convert("RGB")

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


class MockCamera:
    """A camera that yields the photo in ``path`` each time (tests, demos without a camera).

    Args:
        path: a photo file; read at every capture, so a test can change what it "sees".

    Attributes:
        captures: how many photos it took.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = f"mock camera ({self.path.name})"
        self.captures = 0

    def capture(self) -> Image.Image:
        try:
            with Image.open(self.path) as img:
                image = ImageOps.exif_transpose(img).convert("RGB")
        except OSError as exc:
            raise CameraUnavailable(f"the mock camera could not read {self.path}: {exc}") from None
        self.captures += 1
        return image

    def close(self) -> None:
        pass
