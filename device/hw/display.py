"""The small display: a status screen drawn through luma, at a limited frame rate.

The screen shows, top to bottom: the address to browse to, then the thumbnail of
the result in front beside the query, its position ("3/12") and file name, the
number of photos and the bundle id. :func:`render` draws it with Pillow for any
size and colour mode; :class:`Display` sends frames to a luma device no more
often than ``display_fps`` allows. luma is imported only by
:func:`create_device`, when a display is configured.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw, ImageFont, ImageOps

from device.errors import HardwareInvalid
from device.wording import plural

#: Display models: (luma module, class name, bus, usual width, usual height).
MODELS = {
    "ssd1306": ("luma.oled.device", "ssd1306", "i2c", 128, 64),
    "sh1106": ("luma.oled.device", "sh1106", "i2c", 128, 64),
    "st7735": ("luma.lcd.device", "st7735", "spi", 160, 128),
    "ili9341": ("luma.lcd.device", "ili9341", "spi", 320, 240),
}


@dataclasses.dataclass(frozen=True)
class Screen:
    """What the display should show.

    Attributes:
        address: where to browse to, e.g. ``192.168.1.20:8080``.
        bundle_id: the bundle being served ("" while starting).
        items: photos in the bundle.
        query: the query whose result is in front ("" when none).
        position: e.g. ``3/12`` ("" when there are no results).
        caption: the file name of the result in front, or a message.
        thumb: the thumbnail file of the result in front, or ``None``.
        note: a word in place of the picture when there is none (``Starting``).
        admin_token: the admin token made by the first start, shown (instead of the
            result) until an admin call uses it; "" otherwise.
    """

    address: str = ""
    bundle_id: str = ""
    items: int = 0
    query: str = ""
    position: str = ""
    caption: str = ""
    thumb: Path | None = None
    note: str = ""
    admin_token: str = ""


class FrameLimiter:
    """Allows at most ``fps`` frames per second.

    Args:
        fps: frames per second (> 0).
        clock: monotonic time in seconds (injected by tests).
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic):
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.interval = 1.0 / fps
        self._clock = clock
        self._last: float | None = None

    def wait_time(self) -> float:
        """Seconds until the next frame is allowed (0 when it is allowed now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - self._clock())

    def try_frame(self) -> bool:
        """Take a frame slot if one is free now; ``False`` means wait :meth:`wait_time`."""
        if self.wait_time() > 0:
            return False
        self._last = self._clock()
        return True


class Display:
    """A luma device with a frame limiter: :meth:`show` asks, :meth:`poll` draws.

    Args:
        device: a luma device (``luma.core.device.device``: ``size``, ``mode``, ``display()``).
        fps: the most frames per second.
        clock: monotonic time (injected by tests).
        name: how logs and ``/api/status`` call it, e.g. ``ssd1306 128x64``.
    """

    def __init__(self, device, fps: float = 2.0, clock: Callable[[], float] = time.monotonic, name: str = ""):
        self.device = device
        self.name = name or f"{type(device).__name__} {device.width}x{device.height}"
        self.limiter = FrameLimiter(fps, clock)
        self.frames = 0
        self.image: Image.Image | None = None
        self._pending: Screen | None = None

    def show(self, screen: Screen) -> None:
        """Ask for ``screen`` to be drawn at the next allowed frame (a newer ask replaces it)."""
        self._pending = screen

    def poll(self) -> float | None:
        """Draw the pending screen if the limiter allows.

        Returns:
            ``None`` when nothing is pending any more, else seconds until a frame is allowed.
        """
        if self._pending is None:
            return None
        if not self.limiter.try_frame():
            return self.limiter.wait_time()
        screen, self._pending = self._pending, None
        self.image = render(screen, self.device.size, self.device.mode)
        self.device.display(self.image)
        self.frames += 1
        return None

    def close(self, screen: Screen | None = None) -> None:
        """Draw ``screen`` (if given, regardless of the limiter) and release the device;
        the picture stays on the panel (luma's ``persist``)."""
        if screen is not None:
            self.image = render(screen, self.device.size, self.device.mode)
            self.device.display(self.image)
            self.frames += 1
        self.device.persist = screen is not None
        self.device.cleanup()


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where :func:`render` puts things on a display of one size and mode.

    Attributes:
        header: height of the address line in pixels.
        thumb: the thumbnail's box (left, top, right, bottom).
        pixel_font: whether text uses Pillow's pixel font (small mono OLEDs).
    """

    header: int
    thumb: tuple[int, int, int, int]
    pixel_font: bool


def layout(size: tuple[int, int], mode: str = "RGB") -> Layout:
    """The :class:`Layout` for a display of ``size`` in ``mode``."""
    width, height = size
    # A small mono OLED reads best in Pillow's pixel font; larger screens get the scalable one.
    pixel = mode in ("1", "L") and height <= 64
    header = _height(_font(_font_px(height), pixel)) + 3
    side = min(height - header, width // 2)
    top = header + (height - header - side) // 2
    return Layout(header=header, thumb=(0, top, side, top + side), pixel_font=pixel)


def render(screen: Screen, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Draw ``screen`` as an image of ``size`` in luma colour ``mode`` (``1``, ``L``, ``RGB``...)."""
    width, height = size
    color = mode not in ("1", "L")
    place = layout(size, mode)
    image = Image.new("RGB", size, "black")
    draw = ImageDraw.Draw(image)
    if not color:
        draw.fontmode = "1"  # crisp glyphs: anti-aliased edges would dither into speckles
    font_px = _font_px(height)
    font = _font(font_px, place.pixel_font)
    small = _font(max(8, font_px - 2), place.pixel_font)
    accent = (120, 200, 255) if color else (255, 255, 255)

    # Top line: where to browse to (the one thing a visitor needs to take away).
    draw.text((1, 0), _fit(draw, screen.address or "no network", font, width - 2), font=font, fill=accent)
    top = place.header
    draw.line([(0, top - 1), (width, top - 1)], fill=(80, 80, 80) if color else (255, 255, 255))

    if screen.admin_token:
        # The first start's token: what the owner needs before anything else, as large as fits.
        _draw_token(draw, screen.admin_token, top, width, height, place.pixel_font)
        return image.convert(mode)

    left_x, thumb_top, side, _ = place.thumb
    thumb = _thumbnail(screen.thumb, side) if screen.thumb else None
    left = 1
    if thumb is not None:
        image.paste(thumb, (left_x, thumb_top))
        left = side + 3
    elif screen.note:
        note_font = _font(max(8, min(32, height // 4)), False)
        draw.text((1, top + 2), _fit(draw, screen.note, note_font, width - 2), font=note_font, fill="white")
        top += _height(note_font) + 4
    elif not place.pixel_font:
        # Nothing in front: the status lines have the whole screen, in larger type.
        font = small = _font(max(8, min(32, height // 6)), False)
    room = width - left - 1

    y = top + 1
    lines: list[tuple[str, object, object]] = []
    quoted = f'"{screen.query}"' if place.pixel_font else f"\u201c{screen.query}\u201d"
    for text in _wrap(draw, quoted if screen.query else "", font, room, 1 if height <= 64 else 2):
        lines.append((text, font, "white"))
    if screen.position or screen.caption:
        lines.append((" ".join(p for p in (screen.position, screen.caption) if p), small, "white"))
    if screen.items:
        lines.append((plural(screen.items, "photo"), small, "white"))
    if screen.bundle_id:
        lines.append((screen.bundle_id, small, (160, 160, 160) if color else "white"))
    for text, face, fill in lines:
        if y + _height(face) > height:
            break
        draw.text((left, y), _fit(draw, text, face, room), font=face, fill=fill)
        y += _height(face) + 2
    return image.convert(mode)


def _draw_token(draw: ImageDraw.ImageDraw, token: str, top: int, width: int, height: int, pixel: bool) -> None:
    """"Admin token" and the token in groups, one line per group when they do not fit on one."""
    label = _font(max(8, _font_px(height) - 2), pixel)
    draw.text((1, top + 1), "Admin token:", font=label, fill="white")
    y = top + _height(label) + 3
    groups = token.split("-")
    face = _font(max(8, min(40, (height - y) // max(1, len(groups)) - 2)), pixel)
    lines = [token] if draw.textlength(token, font=face) <= width - 2 else [
        "-".join(groups[i:i + 2]) for i in range(0, len(groups), 2)]
    if any(draw.textlength(line, font=face) > width - 2 for line in lines):
        lines = groups
    face = _font(max(8, min(40, (height - y) // len(lines) - 2)), pixel)
    for line in lines:
        if y + _height(face) > height:
            break
        draw.text((1, y), _fit(draw, line, face, width - 2), font=face, fill="white")
        y += _height(face) + 2


def _font_px(height: int) -> int:
    return max(8, min(20, height // 7))


def _font(px: int, pixel: bool):
    # Pillow's built-in fonts: nothing to install on the Pi.
    return ImageFont.load_default_imagefont() if pixel else ImageFont.load_default(size=px)


def _is_pixel(font) -> bool:
    return not isinstance(font, ImageFont.FreeTypeFont)


def _height(font) -> int:
    """Line height of ``font`` in pixels."""
    return font.getbbox("Ag")[3]


def _thumbnail(path: Path, side: int) -> Image.Image | None:
    try:
        with Image.open(path) as img:
            return ImageOps.fit(img.convert("RGB"), (side, side))
    except (OSError, ValueError):
        return None  # a missing thumbnail must not stop the status screen


def _fit(draw: ImageDraw.ImageDraw, text: str, font, room: int) -> str:
    """``text``, cut with an ellipsis to fit ``room`` pixels."""
    ellipsis = "\u2026"
    if _is_pixel(font):
        # The pixel font has Latin-1 glyphs only; anything else would raise.
        text = text.encode("latin-1", "replace").decode("latin-1")
        ellipsis = ".."
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + ellipsis, font=font) > room:
        text = text[:-1]
    return text + ellipsis if text else ""


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, room: int, most: int) -> list[str]:
    """``text`` in at most ``most`` lines of ``room`` pixels (the last one cut)."""
    words, lines, current = text.split(), [], ""
    if _is_pixel(font):
        words = [w.encode("latin-1", "replace").decode("latin-1") for w in words]
    for word in words:
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= room or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > most:
        lines = lines[:most - 1] + [" ".join(lines[most - 1:])]
    return [_fit(draw, line, font, room) for line in lines]


def parse_size(text: str, model: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (or the model's usual size for ``""``).

    Raises:
        HardwareInvalid: not two positive whole numbers.
    """
    if not text:
        return MODELS[model][3], MODELS[model][4]
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise HardwareInvalid(f"setting display_size: {text!r} is not WIDTHxHEIGHT, e.g. 128x64") from None
    if not (8 <= width <= 1024 and 8 <= height <= 1024):
        raise HardwareInvalid(f"setting display_size: {text!r} is out of range (8..1024 each way)")
    return width, height


def parse_i2c_address(text: str) -> int:
    """``0x3C`` or ``60`` as a number.

    Raises:
        HardwareInvalid: not an I2C address (0x03..0x77).
    """
    try:
        address = int(text, 0)
    except ValueError:
        raise HardwareInvalid(f"setting display_i2c_address: {text!r} is not a number such as 0x3C") from None
    if not 0x03 <= address <= 0x77:
        raise HardwareInvalid(f"setting display_i2c_address: {text!r} is not a 7-bit I2C address (0x03..0x77)")
    return address


def create_device(model: str, size: tuple[int, int], rotate: int = 0, i2c_address: int = 0x3C,
                  spi_device: int = 0, dc_pin: int = 24, reset_pin: int = 25):
    """Open the luma device for ``model`` on the Pi's I2C bus 1 or SPI bus 0.

    Raises:
        ImportError: luma is not installed (``pip install 'glimpse[hardware]'``).
        luma.core.error.Error, OSError: no such device answers (the caller reports it).
    """
    import importlib

    module_name, class_name, bus, _, _ = MODELS[model]
    from luma.core.interface import serial

    if bus == "i2c":
        interface = serial.i2c(port=1, address=i2c_address)
    else:
        interface = serial.spi(port=0, device=spi_device, gpio_DC=dc_pin, gpio_RST=reset_pin)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(serial_interface=interface, width=size[0], height=size[1], rotate=rotate)
