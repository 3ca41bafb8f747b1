"""Reading photos: decoding, EXIF orientation and date, tower input, thumbnails.

Pillow does all decoding. Every way a file can fail to be a usable photo is
turned into :class:`~device.errors.ImageUnreadable` with a short reason, so a
build can skip it and list it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
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

#: Bytes per pixel Pillow holds in memory for a mode (RGB is stored as 4 bytes).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

#: EXIF orientation -> the transpose that makes the photo upright (as ImageOps.exif_transpose).
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}

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


def memory_limit() -> int:
    """Bytes this process may use: its cgroup's ``memory.max`` (systemd's ``MemoryMax``)
    when one is set, else the machine's physical memory."""
    limits = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, group = line.split(":", 2)
            base = Path("/sys/fs/cgroup")
            if controllers == "":  # cgroup v2
                candidates = [base / group.lstrip("/") / "memory.max"]
            elif "memory" in controllers.split(","):  # cgroup v1
                candidates = [base / "memory" / group.lstrip("/") / "memory.limit_in_bytes"]
            else:
                continue
            for candidate in candidates:
                try:
                    text = candidate.read_text().strip()
                except OSError:
                    continue
                if text.isdigit():
                    limits.append(int(text))
    except (OSError, ValueError):
        pass
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min([physical, *limits])  # v1 reports "no limit" as a huge number


#: Share of :func:`memory_limit` one decode may take when no budget is set: the daemon
#: itself (model, bundle, server) needs about 100 MiB of a 400 MiB unit.
BUDGET_SHARE = 0.4


def decode_budget(megabytes: int = 0) -> int:
    """The most bytes decoding one photo may take: ``megabytes`` when set, else
    :data:`BUDGET_SHARE` of :func:`memory_limit`."""
    return megabytes * 2**20 if megabytes > 0 else int(memory_limit() * BUDGET_SHARE)


def decode_cost(mode: str, size: tuple[int, int], min_side: int | None,
                budget: int | None = None) -> tuple[int, int]:
    """Bytes decoding an image of ``mode`` and ``size`` needs at the peak, and the
    reduction factor to apply right after decoding.

    Pillow decodes a PNG, TIFF or WebP whole into memory (only JPEG can be
    decoded at reduced scale, through ``draft``, before this is asked). The
    peak is the decoded frame plus its upright and RGB copies (4 bytes a pixel
    each) while the frame is still held. When those copies at full size would
    not fit ``budget``, the frame is first reduced by the largest integer factor
    keeping both sides at least ``min_side``, and the copies are of that.
    """
    width, height = size
    pixels = width * height
    per_pixel = _MODE_BYTES.get(mode, 4)
    full = pixels * (per_pixel + 8)
    factor = max(1, min(width, height) // min_side) if min_side else 1
    if factor == 1 or budget is None or full <= budget:
        return full, 1  # small enough: processed at full size, as always
    reduced = pixels // (factor * factor)
    return pixels * per_pixel + reduced * (per_pixel + 8), factor


def open_photo(path: Path, min_side: int | None = None, max_pixels: int = MAX_PIXELS,
               max_bytes: int | None = None) -> Photo:
    """Open a photo, apply its EXIF orientation and return it as RGB.

    Args:
        path: the file.
        min_side: when given, the photo may be decoded (JPEG) or reduced right after
            decoding (other formats) as long as both sides stay at least this long:
            much faster and smaller on a Pi.
        max_pixels: larger images are refused as decompression bombs.
        max_bytes: decoding may take at most this much memory (default
            :func:`decode_budget`); a photo estimated to need more is refused before
            its pixels are decoded. Pixels alone do not bound memory: a 15 KB 1-bit
            PNG of 120 MP decodes to 480 MB of RGB.

    Animated GIFs and multi-page TIFFs give their first frame.

    Raises:
        ImageUnreadable: missing, empty, not an image, truncated, corrupt, too large,
            or needing more memory to decode than ``max_bytes``.
    """
    path = Path(path)
    budget = decode_budget() if max_bytes is None else max_bytes
    try:
        if path.stat().st_size == 0:
            raise ImageUnreadable(path.name, "empty file")
    except FileNotFoundError:
        raise ImageUnreadable(path.name, "no such file") from None
    except OSError as exc:
        raise ImageUnreadable(path.name, f"corrupt or truncated ({exc})") from None
    return _decode(path, path.name, min_side, max_pixels, budget)


def decode_photo_bytes(data: bytes, name: str = "photo", min_side: int | None = None,
                       max_pixels: int = MAX_PIXELS, max_bytes: int | None = None) -> Photo:
    """Decode a photo held in memory (a phone's camera shot sent to search by), as
    :func:`open_photo` decodes a file.

    The header is checked first (:func:`check_photo_bytes`), so a decompression bomb
    is refused before any pixel is decoded.

    Raises:
        ImageUnreadable: empty, not an image, truncated, corrupt, too large, or needing
            more memory to decode than ``max_bytes`` (default :func:`decode_budget`).
    """
    import io

    budget = decode_budget() if max_bytes is None else max_bytes
    check_photo_bytes(data, name, max_pixels, max_bytes=budget, min_side=min_side)
    return _decode(io.BytesIO(data), name, min_side, max_pixels, budget)


def _decode(source, name: str, min_side: int | None, max_pixels: int, budget: int) -> Photo:
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
                _draft(img, min_side)
                cost, factor = decode_cost(img.mode, img.size, min_side, budget)
                if cost > budget:
                    raise _over_budget(name, img, cost, budget)
                img.load()
                # Reduce before anything copies the frame: the copies are then small.
                small = _reduced(img, factor)
                method = _ORIENTATIONS.get(orientation)
                upright = small.transpose(method) if method is not None else small
                rgb = upright.convert("RGB")
                del small, upright
    except ImageUnreadable:
        raise
    except FileNotFoundError:
        raise ImageUnreadable(name, "no such file") from None
    except UnidentifiedImageError:
        raise ImageUnreadable(name, NOT_AN_IMAGE) from None
    except Image.DecompressionBombError:
        raise ImageUnreadable(name, "refused as a decompression bomb") from None
    except MemoryError:
        raise ImageUnreadable(name, "out of memory while decoding") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ImageUnreadable(name, f"corrupt or truncated ({exc})") from None
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: full size swaps too
        width, height = height, width
    return Photo(image=rgb, width=width, height=height, taken=taken)


def _draft(img: Image.Image, min_side: int | None) -> None:
    """Ask a JPEG to decode at the smallest scale keeping both sides >= ``min_side``."""
    if min_side and img.format == "JPEG":
        width, height = img.size
        scale = min(width, height) // min_side
        if scale >= 2:
            img.draft("RGB", (width // scale, height // scale))


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """``img`` shrunk by an integer ``factor`` (box filter), or itself."""
    if factor < 2:
        return img
    if img.mode in ("1", "P", "PA", "I;16", "I;16B", "I;16L", "I;16N"):  # modes reduce() does not take
        # nearest-neighbour resize works in any mode and copies only the small result
        return img.resize((max(1, img.width // factor), max(1, img.height // factor)), Image.Resampling.NEAREST)
    return img.reduce(factor)


def _over_budget(name: str, img: Image.Image, cost: int, budget: int) -> ImageUnreadable:
    return ImageUnreadable(name, f"a {img.width}x{img.height} {img.mode} {img.format or 'image'} needs about "
                                 f"{cost / 2**20:,.0f} MiB to decode, over the budget of {budget / 2**20:,.0f} MiB "
                                 "(setting decode_budget_mb)")


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


def check_photo_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS,
                      max_bytes: int | None = None, min_side: int | None = None) -> str:
    """Check that ``data`` is an image Pillow can read, without decoding its pixels.

    Args:
        max_bytes, min_side: as :func:`open_photo` will decode it: a photo it
            would refuse for memory is refused here, before it is stored.

    Returns:
        Pillow's format name (``JPEG``, ``PNG``, ``HEIF``...).

    Raises:
        ImageUnreadable: empty, not an image, over ``max_pixels`` (a decompression bomb),
            or needing more memory to decode than ``max_bytes``.
    """
    import io

    _register_heif()
    if not data:
        raise ImageUnreadable(name, "empty file")
    budget = decode_budget() if max_bytes is None else max_bytes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                fmt = img.format or "unknown"
                if width * height <= max_pixels:
                    _draft(img, min_side)
                    cost, _ = decode_cost(img.mode, img.size, min_side, budget)
                    if cost > budget:
                        raise _over_budget(name, img, cost, budget)
    except ImageUnreadable:
        raise
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
