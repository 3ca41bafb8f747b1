"""Reading photos: decoding, EXIF orientation and date, tower input, thumbnails.

Pillow does all decoding. Every way a file can fail to be a usable photo is
turned into :class:`~device.errors.ImageUnreadable` with a short reason, so a
build can skip it and list it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.errors import ImageUnreadable

#: File endings the library walk looks at (lower case).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp",
                            ".heic", ".heif"})

#: Why a file that is not an image is refused (said for a person, not in Pillow's terms).
NOT_AN_IMAGE = "not a photo: the file is not an image Glimpse can read (JPEG, PNG, WebP, GIF, TIFF, BMP, HEIC)"

#: A photo over this many pixels is refused as a decompression bomb (a 100 MP
#: camera frame still passes; a crafted 40k x 40k PNG does not).
MAX_PIXELS = 120_000_000

_EXIF_IFD = 0x8769
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132


@dataclasses.dataclass
class Photo:
    """A decoded photo, upright, in RGB.

    Attributes:
        image: the pixels (possibly decoded at reduced scale, see :func:`open_photo`).
        width, height: the full-resolution size after EXIF orientation.
        taken: EXIF date taken as ISO 8601 (``YYYY-MM-DDTHH:MM:SS``), or ``None``.
    """

    image: Image.Image
    width: int
    height: int
    taken: str | None


def open_photo(path: Path, min_side: int | None = None, max_pixels: int = MAX_PIXELS) -> Photo:
    """Open a photo, apply its EXIF orientation and return it as RGB.

    Args:
        path: the file.
        min_side: when given, JPEGs may be decoded at a reduced scale as long as
            both sides stay at least this long (much faster on a Pi).
        max_pixels: larger images are refused as decompression bombs.

    Animated GIFs and multi-page TIFFs give their first frame.

    Raises:
        ImageUnreadable: missing, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageUnreadable(path.name, "empty file")
    except FileNotFoundError:
        raise ImageUnreadable(path.name, "no such file") from None
    except OSError as exc:
        raise ImageUnreadable(path.name, f"corrupt or truncated ({exc})") from None
    return _decode(path, path.name, min_side, max_pixels)


def decode_photo_bytes(data: bytes, name: str = "photo", min_side: int | None = None,
                       max_pixels: int = MAX_PIXELS) -> Photo:
    """Decode a photo held in memory (a phone's camera shot sent to search by), as
    :func:`open_photo` decodes a file.

    The header is checked first (:func:`check_photo_bytes`), so a decompression bomb
    is refused before any pixel is decoded.

    Raises:
        ImageUnreadable: empty, not an image, truncated, corrupt or too large.
    """
    import io

    check_photo_bytes(data, name, max_pixels)
    return _decode(io.BytesIO(data), name, min_side, max_pixels)


def _decode(source, name: str, min_side: int | None, max_pixels: int) -> Photo:
    """Decode ``source`` (a path or a binary file object) for :func:`open_photo`."""
    _register_heif()
    try:
        with warnings.catch_warnings():
            # Pillow warns past its own limit (89 MP), below ours; the explicit
            # check after opening (before decoding) is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageUnreadable(name, f"{width}x{height} pixels is over the limit of {max_pixels}")
                img.seek(0)
                taken = _exif_date(img)
                orientation = img.getexif().get(0x0112, 1)
                if min_side and img.format == "JPEG":
                    scale = min(width, height) // min_side
                    if scale >= 2:
                        img.draft("RGB", (width // scale, height // scale))
                img.load()
                upright = ImageOps.exif_transpose(img)
                rgb = upright.convert("RGB")
    except ImageUnreadable:
        raise
    except FileNotFoundError:
        raise ImageUnreadable(name, "no such file") from None
    except UnidentifiedImageError:
        raise ImageUnreadable(name, NOT_AN_IMAGE) from None
    except Image.DecompressionBombError:
        raise ImageUnreadable(name, "refused as a decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageUnreadable(name, f"corrupt or truncated ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: full size swaps too
        width, height = height, width
    return Photo(image=rgb, width=width, height=height, taken=taken)


_heif_registered = False


def _register_heif() -> None:
    """Teach Pillow HEIC/HEIF (phone photos) once, on first use, through pillow-heif."""
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:  # optional: without it HEIC files are reported unreadable
            pass
        else:
            register_heif_opener()
        _heif_registered = True


def check_photo_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> str:
    """Check that ``data`` is an image Pillow can read, without decoding its pixels.

    Returns:
        Pillow's format name (``JPEG``, ``PNG``, ``HEIF``...).

    Raises:
        ImageUnreadable: empty, not an image, or over ``max_pixels`` (a decompression bomb).
    """
    import io

    _register_heif()
    if not data:
        raise ImageUnreadable(name, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                fmt = img.format or "unknown"
    except Image.DecompressionBombError:
        raise ImageUnreadable(name, "refused as a decompression bomb") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageUnreadable(name, NOT_AN_IMAGE) from None
    if width * height > max_pixels:
        raise ImageUnreadable(name, f"{width}x{height} pixels is over the limit of {max_pixels}; "
                              "refused as a decompression bomb")
    return fmt


def _exif_date(img: Image.Image) -> str | None:
    """EXIF DateTimeOriginal (else DateTime) as ISO 8601, or None when absent or malformed."""
    try:
        exif = img.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL) or exif.get(_EXIF_DATETIME)
    except Exception:  # noqa: BLE001 - a broken EXIF block only costs us the date
        return None
    if not isinstance(raw, str):
        return None
    try:
        return _dt.datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def tower_input(image: Image.Image, size: int) -> np.ndarray:
    """The image tower's input: shorter side resized to ``size``, centre crop.

    Returns:
        float32 array of shape (1, size, size, 3), RGB in 0..255.
    """
    fitted = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    return np.asarray(fitted, dtype=np.float32)[np.newaxis]


def thumbnail(image: Image.Image, max_side: int) -> Image.Image:
    """A copy of ``image`` whose longer side is at most ``max_side`` (aspect kept)."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return thumb


def rendition(image: Image.Image, max_side: int, fmt: str = "JPEG") -> bytes:
    """A thumbnail or preview of ``image`` encoded as ``fmt`` (Pillow's name, e.g. ``JPEG``, ``WEBP``)."""
    import io

    buffer = io.BytesIO()
    thumbnail(image, max_side).save(buffer, fmt, quality=85)
    return buffer.getvalue()
