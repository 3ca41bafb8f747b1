"""device.images: decoding every supported format, EXIF orientation and date,
refusing files that are not usable photos, tower input and thumbnails."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from device.errors import ImageUnreadable
from device.images import MAX_PIXELS, open_photo, thumbnail, tower_input

COLOUR = (200, 100, 50)

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132
_ORIENTATION = 0x0112


def _close(pixel, expected, tolerance):
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected))


def _png_header_only(path, width, height):
    """A PNG whose IHDR claims ``width`` x ``height`` but which holds almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _real_jpeg(path, size=(200, 160)):
    """A JPEG with real (noisy) content, large enough that half of it is a truncation."""
    Image.effect_noise(size, 60).convert("RGB").save(path, "JPEG", quality=90)
    return path


# --- formats -------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, fmt, mode, tolerance, options",
    [
        ("photo.jpg", "JPEG", "RGB", 6, {"quality": 95}),
        ("gray.jpeg", "JPEG", "L", 6, {"quality": 95}),
        ("cmyk.jpg", "JPEG", "CMYK", 8, {"quality": 95}),
        ("photo.png", "PNG", "RGB", 0, {}),
        ("alpha.png", "PNG", "RGBA", 0, {}),
        ("palette.png", "PNG", "P", 0, {}),
        ("photo.webp", "WEBP", "RGB", 6, {"quality": 95}),
        ("photo.gif", "GIF", "RGB", 8, {}),
        ("photo.tif", "TIFF", "RGB", 0, {}),
        ("photo.tiff", "TIFF", "RGBA", 0, {}),
        ("photo.bmp", "BMP", "RGB", 0, {}),
    ],
)
def test_every_format_opens_as_rgb(tmp_path, name, fmt, mode, tolerance, options):
    image = Image.new("RGB", (30, 20), COLOUR)
    if mode == "P":
        image = image.quantize(colors=4)
    elif mode != "RGB":
        image = image.convert(mode)
    path = tmp_path / name
    image.save(path, fmt, **options)
    expected = image.convert("RGB").getpixel((15, 10))

    photo = open_photo(path)

    assert photo.image.mode == "RGB"
    assert photo.image.size == (30, 20)
    assert (photo.width, photo.height) == (30, 20)
    assert photo.taken is None
    assert _close(photo.image.getpixel((15, 10)), expected, tolerance)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (24, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3  # really animated

    photo = open_photo(path)

    assert photo.image.mode == "RGB"
    assert photo.image.size == (24, 16)
    assert _close(photo.image.getpixel((12, 8)), (255, 0, 0), 8)


def test_multi_page_tiff_gives_its_first_page(tmp_path):
    pages = [Image.new("RGB", (24, 16), (0, 200, 0)), Image.new("RGB", (50, 50), (0, 0, 200))]
    path = tmp_path / "scan.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])

    photo = open_photo(path)

    assert photo.image.size == (24, 16)
    assert _close(photo.image.getpixel((0, 0)), (0, 200, 0), 0)


# --- EXIF ----------------------------------------------------------------------

def test_exif_orientation_6_is_turned_upright(tmp_path):
    # Stored 40 wide, 20 high, blue with a red patch in the stored top-left corner.
    # Orientation 6 means "rotate 90 degrees clockwise to display", so the patch
    # must end up in the top-right corner of a 20 wide, 40 high upright picture.
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 5))
    exif = Image.Exif()
    exif[_ORIENTATION] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, "JPEG", exif=exif, quality=95)

    photo = open_photo(path)

    assert (photo.width, photo.height) == (20, 40)
    assert photo.image.size == (20, 40)
    assert _close(photo.image.getpixel((19, 0)), (255, 0, 0), 20)
    assert _close(photo.image.getpixel((0, 0)), (0, 0, 255), 20)
    assert _close(photo.image.getpixel((19, 39)), (0, 0, 255), 20)


def test_exif_orientation_1_leaves_the_picture_as_stored(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 10, 5))
    exif = Image.Exif()
    exif[_ORIENTATION] = 1
    path = tmp_path / "upright.jpg"
    stored.save(path, "JPEG", exif=exif, quality=95)

    photo = open_photo(path)

    assert (photo.width, photo.height) == (40, 20)
    assert _close(photo.image.getpixel((0, 0)), (255, 0, 0), 20)


def _save_with_exif(path, original=None, datetime=None):
    exif = Image.Exif()
    if original is not None:
        exif.get_ifd(_EXIF_IFD)[_DATETIME_ORIGINAL] = original
    if datetime is not None:
        exif[_DATETIME] = datetime
    Image.new("RGB", (16, 16), COLOUR).save(path, "JPEG", exif=exif)
    return path


def test_exif_date_taken_is_iso_8601(tmp_path):
    path = _save_with_exif(tmp_path / "dated.jpg", original="2021:07:04 12:30:00")
    assert open_photo(path).taken == "2021-07-04T12:30:00"


def test_exif_date_taken_prefers_original_over_modified(tmp_path):
    path = _save_with_exif(tmp_path / "both.jpg", original="2021:07:04 12:30:00",
                           datetime="2023:01:01 00:00:00")
    assert open_photo(path).taken == "2021-07-04T12:30:00"


def test_exif_datetime_is_the_fallback(tmp_path):
    path = _save_with_exif(tmp_path / "modified.jpg", datetime="2020:01:02 03:04:05")
    assert open_photo(path).taken == "2020-01-02T03:04:05"


@pytest.mark.parametrize("raw", ["not a date at all", "2021:13:45 99:99:99", "0000:00:00 00:00:00", ""])
def test_malformed_exif_date_gives_none(tmp_path, raw):
    path = _save_with_exif(tmp_path / "bad-date.jpg", original=raw)
    photo = open_photo(path)
    assert photo.taken is None
    assert photo.image.size == (16, 16)  # the photo itself is still usable


# --- refusals ------------------------------------------------------------------

def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageUnreadable, match=r"empty\.jpg: empty file"):
        open_photo(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageUnreadable, match=r"gone\.jpg: no such file"):
        open_photo(tmp_path / "gone.jpg")


def test_text_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: eggs, milk\n")
    with pytest.raises(ImageUnreadable, match=r"notes\.jpg: not a photo: the file is not an image Glimpse can read") as caught:
        open_photo(path)
    assert caught.value.reason.startswith("not a photo:") and "Pillow" not in caught.value.reason


def test_truncated_jpeg_is_refused(tmp_path):
    whole = _real_jpeg(tmp_path / "whole.jpg")
    open_photo(whole)  # the complete file is fine
    data = whole.read_bytes()
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageUnreadable, match=r"half\.jpg: corrupt or truncated"):
        open_photo(half)


def test_image_over_max_pixels_is_refused(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 60), COLOUR).save(path)
    assert open_photo(path, max_pixels=6000).width == 100  # exactly at the limit passes
    with pytest.raises(ImageUnreadable, match=r"big\.png: 100x60 pixels is over the limit of 5999"):
        open_photo(path, max_pixels=5999)


def test_png_header_claiming_a_huge_size_is_refused_as_a_bomb(tmp_path):
    path = _png_header_only(tmp_path / "bomb.png", 60_000, 60_000)
    assert path.stat().st_size < 200  # tiny file, 3.6 gigapixels claimed
    with pytest.raises(ImageUnreadable, match=r"bomb\.png: .*(decompression bomb|over the limit)"):
        open_photo(path)


def test_a_100_megapixel_camera_jpeg_is_not_refused(tmp_path):
    # 11648 x 8736 is a real 100 MP sensor (Fujifilm GFX100); under MAX_PIXELS.
    width, height = 11648, 8736
    assert width * height < MAX_PIXELS
    path = tmp_path / "gfx100.jpg"
    Image.new("L", (width, height), 128).save(path, "JPEG", quality=50)

    photo = open_photo(path, min_side=320)  # decoded at 1/8 scale: cheap

    assert (photo.width, photo.height) == (width, height)
    assert photo.image.mode == "RGB"


def test_min_side_decodes_a_large_jpeg_smaller_but_reports_full_size(tmp_path):
    path = tmp_path / "large.jpg"
    Image.new("RGB", (2000, 1000), COLOUR).save(path, "JPEG", quality=90)

    photo = open_photo(path, min_side=224)

    assert (photo.width, photo.height) == (2000, 1000)
    assert min(photo.image.size) >= 224
    assert photo.image.size[0] < 2000
    assert photo.image.size[0] / photo.image.size[1] == pytest.approx(2.0, rel=0.01)


# --- tower input and thumbnails ---------------------------------------------------

def test_tower_input_shape_dtype_and_range():
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 64, 24))

    pixels = tower_input(image, 32)

    assert pixels.shape == (1, 32, 32, 3)
    assert pixels.dtype == np.float32
    assert pixels.min() == 0.0
    assert pixels.max() == 255.0  # not scaled to 0..1: the graph does that


def test_tower_input_is_a_centre_crop():
    # 300 x 100: a red centre square between two blue side bars.
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (100, 0, 200, 100))

    pixels = tower_input(image, 50)[0]

    assert pixels.shape == (50, 50, 3)
    assert pixels[25, 25].tolist() == [255.0, 0.0, 0.0]
    # The side bars are cropped away, not squeezed in.
    assert (pixels[..., 0] > 200).all()
    assert (pixels[..., 2] < 60).all()


@pytest.mark.parametrize(
    "size, max_side, expected",
    [((400, 100), 64, (64, 16)), ((90, 300), 100, (30, 100)), ((320, 320), 128, (128, 128)),
     ((50, 20), 100, (50, 20))],
)
def test_thumbnail_keeps_aspect_and_max_side(size, max_side, expected):
    image = Image.new("RGB", size, COLOUR)

    thumb = thumbnail(image, max_side)

    assert thumb.size == expected
    assert max(thumb.size) <= max_side
    assert image.size == size  # the original is untouched


# --- decoding bounded by memory, not only by pixels (issue 13.1) ----------------------------


def _bitonal_png(path, side: int = 6000) -> None:
    """A PNG of 1-bit pixels: tiny on disk, ``side`` squared bytes once Pillow decodes it."""
    img = Image.new("1", (side, side), 0)
    img.paste(1, (side // 4, side // 4, side // 2, side // 2))
    img.save(path, optimize=True)


def test_a_photo_needing_more_memory_than_the_budget_is_refused_before_decoding(tmp_path):
    from device.images import check_photo_bytes

    path = tmp_path / "wide.png"
    Image.new("RGB", (5000, 4000), (10, 20, 30)).save(path)  # 20 MP RGB: 80 MB decoded
    with pytest.raises(ImageUnreadable, match=r"a 5000x4000 RGB PNG needs about \d+ MiB to decode, over the "
                                              r"budget of 50 MiB \(setting decode_budget_mb\)"):
        open_photo(path, min_side=1280, max_bytes=50 * 2**20)
    with pytest.raises(ImageUnreadable, match="over the budget of 50 MiB"):
        check_photo_bytes(path.read_bytes(), "wide.png", max_bytes=50 * 2**20, min_side=1280)
    assert open_photo(path, min_side=1280, max_bytes=300 * 2**20).image.size == (5000, 4000)  # 240 MB fits
    assert open_photo(path, min_side=1280, max_bytes=200 * 2**20).image.size == (1667, 1334)  # reduced by 3


def test_over_the_budget_a_photo_is_reduced_right_after_decoding(tmp_path):
    # 36 MB of 1-bit pixels fit a 60 MiB budget; RGB copies of the full frame (144 MB) would not.
    path = tmp_path / "scan.png"
    _bitonal_png(path)
    photo = open_photo(path, min_side=1280, max_bytes=60 * 2**20)
    assert (photo.width, photo.height) == (6000, 6000)  # the full size is still reported
    assert photo.image.size == (1500, 1500) and photo.image.mode == "RGB"  # reduced by 4, sides >= 1280
    assert photo.image.getpixel((500, 500)) == (255, 255, 255) and photo.image.getpixel((100, 100)) == (0, 0, 0)


def test_a_jpeg_is_budgeted_at_the_scale_it_is_decoded_at(tmp_path):
    from device.images import decode_cost

    path = tmp_path / "camera.jpg"
    Image.new("RGB", (8000, 6000), (90, 120, 150)).save(path, quality=80)
    # 48 MP: 576 MB at full scale, but draft decodes it at 1/4 (2000x1500 >= 1280) first.
    photo = open_photo(path, min_side=1280, max_bytes=64 * 2**20)
    assert (photo.width, photo.height) == (8000, 6000) and photo.image.size == (2000, 1500)
    assert decode_cost("RGB", (2000, 1500), 1280, 64 * 2**20) == (2000 * 1500 * 12, 1)


def test_decode_cost_counts_pillows_bytes_per_pixel():
    from device.images import decode_cost

    assert decode_cost("L", (1000, 1000), None) == (1000 * 1000 * 9, 1)
    assert decode_cost("RGB", (1000, 1000), None) == (1000 * 1000 * 12, 1)  # RGB is held as 4 bytes
    # Within the budget nothing changes: processed at full size, as before.
    assert decode_cost("1", (10950, 10950), 1280, 2**40)[1] == 1
    # Over it: reduced by 8 (10950 // 1280), the frame itself still counted whole.
    cost, factor = decode_cost("1", (10950, 10950), 1280, 150 * 2**20)
    assert factor == 8 and cost == 10950 * 10950 + (10950 * 10950 // 64) * 9


def test_the_default_budget_follows_the_cgroup_memory_limit(monkeypatch, tmp_path):
    from device import images

    cgroup = tmp_path / "sys" / "system.slice" / "glimpse.service"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.max").write_text("419430400\n")  # MemoryMax=400M
    real_path = images.Path

    def fake_path(name, *rest):
        if str(name) == "/proc/self/cgroup":
            name = tmp_path / "cgroup"
        elif str(name) == "/sys/fs/cgroup":
            name = tmp_path / "sys"
        return real_path(name, *rest)

    (tmp_path / "cgroup").write_text("0::/system.slice/glimpse.service\n")
    monkeypatch.setattr(images, "Path", fake_path)
    assert images.memory_limit() == 400 * 2**20
    assert images.decode_budget() == 160 * 2**20
    assert images.decode_budget(64) == 64 * 2**20  # the setting wins
    (cgroup / "memory.max").write_text("max\n")  # no limit: the machine's memory
    import os

    assert images.memory_limit() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
