"""The share of a photo's pixels named by each of the 11 basic colour terms.

Colour naming model: **nearest centroid in CIELAB by CIEDE2000** to the colours
that people name with those terms, as measured by the xkcd colour survey (R.
Munroe, 2010: about 5 million namings of random sRGB colours by 222,500 people;
its centroids of the 954 most common names are public domain, CC0, and are the
``xkcd:`` colours matplotlib ships). Each basic term of Berlin & Kay is
represented by the survey's centroid for the term itself and, where the survey
has them, for "light <term>" and "dark <term>" (29 centroids in all), so each
term covers its lightness range; the mapping from survey name to basic term is
the name itself, with no judgement of ours.

Why this model: it is published and fixed (nothing fitted to our photos), it
comes from people naming colours in their own words on sRGB screens, which is
what a query like "something red" appeals to, and it names the primaries as
people do. We first tried Kelly's 22 ISCC-NBS centroids of maximum contrast:
with them sRGB's red came out orange and its blue purple, because Kelly's "vivid
red" is a crimson and his blues are few. CIEDE2000 rather than Euclidean ΔE*ab
because its hue term corrects CIELAB's bend in the blue region. Learned lookups
from web images (van de Weijer et al. 2009) may name photos somewhat better but
ship as a 32k-entry table without a stated licence.

Speed: every sRGB colour quantised to 5 bits per channel (32³ = 32768 bins) is
named once, on first use (about a second), into a lookup table; a photo is then
one resize to at most 64 pixels a side and one table look-up per pixel.
"""

from __future__ import annotations

import functools

import numpy as np

#: The basic colour terms of English (Berlin & Kay 1969), in the order of every distribution.
COLOUR_TERMS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")

#: xkcd colour survey centroids (sRGB hex, CC0) of each term and its light/dark variants.
CENTROIDS = (
    ("red", "e50000", "red"), ("light red", "ff474c", "red"), ("dark red", "840000", "red"),
    ("orange", "f97306", "orange"), ("light orange", "fdaa48", "orange"), ("dark orange", "c65102", "orange"),
    ("yellow", "ffff14", "yellow"), ("light yellow", "fffe7a", "yellow"), ("dark yellow", "d5b60a", "yellow"),
    ("green", "15b01a", "green"), ("light green", "96f97b", "green"), ("dark green", "033500", "green"),
    ("blue", "0343df", "blue"), ("light blue", "95d0fc", "blue"), ("dark blue", "00035b", "blue"),
    ("purple", "7e1e9c", "purple"), ("light purple", "bf77f6", "purple"), ("dark purple", "35063e", "purple"),
    ("pink", "ff81c0", "pink"), ("light pink", "ffd1df", "pink"), ("dark pink", "cb416b", "pink"),
    ("brown", "653700", "brown"), ("light brown", "ad8150", "brown"), ("dark brown", "341c02", "brown"),
    ("black", "000000", "black"), ("white", "ffffff", "white"),
    ("grey", "929591", "grey"), ("light grey", "d8dcd6", "grey"), ("dark grey", "363737", "grey"),
)

#: Longest side of the copy of a photo that is counted.
SAMPLE_SIDE = 64
_BITS = 5


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white) of sRGB colours.

    Args:
        rgb: (..., 3) sRGB components in 0..255.

    Returns:
        (..., 3) float64 L*, a*, b*.
    """
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    # IEC 61966-2-1 sRGB to XYZ, normalised by the D65 white point.
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > eps, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (kL = kC = kH = 1), broadcasting over leading axes.

    Follows Sharma, Wu & Dalal, "The CIEDE2000 color-difference formula:
    implementation notes", Color Res. Appl. 30(1), 2005.
    """
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    C1, C2 = np.hypot(a1, b1), np.hypot(a2, b2)
    C_mean7 = ((C1 + C2) / 2) ** 7
    G = 0.5 * (1 - np.sqrt(C_mean7 / (C_mean7 + 25.0 ** 7)))
    a1p, a2p = (1 + G) * a1, (1 + G) * a2
    C1p, C2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    dLp = L2 - L1
    dCp = C2p - C1p
    dhp = h2p - h1p
    dhp = np.where(dhp > 180, dhp - 360, np.where(dhp < -180, dhp + 360, dhp))
    dhp = np.where(C1p * C2p == 0, 0.0, dhp)
    dHp = 2 * np.sqrt(C1p * C2p) * np.sin(np.radians(dhp) / 2)
    Lp = (L1 + L2) / 2
    Cp = (C1p + C2p) / 2
    hsum = h1p + h2p
    hp = np.where(np.abs(h1p - h2p) > 180, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2), hsum / 2)
    hp = np.where(C1p * C2p == 0, hsum, hp)
    T = (1 - 0.17 * np.cos(np.radians(hp - 30)) + 0.24 * np.cos(np.radians(2 * hp))
         + 0.32 * np.cos(np.radians(3 * hp + 6)) - 0.20 * np.cos(np.radians(4 * hp - 63)))
    d_theta = 30 * np.exp(-(((hp - 275) / 25) ** 2))
    Cp7 = Cp ** 7
    R_C = 2 * np.sqrt(Cp7 / (Cp7 + 25.0 ** 7))
    S_L = 1 + 0.015 * (Lp - 50) ** 2 / np.sqrt(20 + (Lp - 50) ** 2)
    S_C = 1 + 0.045 * Cp
    S_H = 1 + 0.015 * Cp * T
    R_T = -np.sin(np.radians(2 * d_theta)) * R_C
    return np.sqrt((dLp / S_L) ** 2 + (dCp / S_C) ** 2 + (dHp / S_H) ** 2 + R_T * (dCp / S_C) * (dHp / S_H))


def name_colours(rgb: np.ndarray) -> np.ndarray:
    """Index into :data:`COLOUR_TERMS` of the term naming each sRGB colour (exact, no table).

    Args:
        rgb: (..., 3) sRGB in 0..255.
    """
    centroids = srgb_to_lab(np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for _, h, _ in CENTROIDS]))
    term_of = np.array([COLOUR_TERMS.index(term) for _, _, term in CENTROIDS])
    lab = srgb_to_lab(rgb)
    distances = delta_e_2000(lab[..., np.newaxis, :], centroids)
    return term_of[np.argmin(distances, axis=-1)]


@functools.cache
def lookup_table() -> np.ndarray:
    """Term index of every 5-bit-per-channel sRGB bin (32768 entries, uint8), named at its centre."""
    levels = (np.arange(1 << _BITS) << (8 - _BITS)) + (1 << (7 - _BITS))
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    return name_colours(np.stack([r, g, b], axis=-1).reshape(-1, 3)).astype(np.uint8)


def colour_distribution(pixels: np.ndarray) -> np.ndarray:
    """Share of ``pixels`` named by each of :data:`COLOUR_TERMS` (sums to 1).

    Args:
        pixels: (..., 3) RGB in 0..255, any numeric dtype: a downscaled photo
            (see :func:`photo_colours`) or the image tower's input.

    Raises:
        ValueError: ``pixels`` is not an array of RGB triples or holds none.
    """
    array = np.asarray(pixels)
    if array.ndim < 2 or array.shape[-1] != 3 or array.size == 0:
        raise ValueError(f"expected RGB pixels (..., 3), got shape {array.shape}")
    q = np.clip(array.reshape(-1, 3), 0, 255).astype(np.uint16) >> (8 - _BITS)
    index = (q[:, 0] << (2 * _BITS)) | (q[:, 1] << _BITS) | q[:, 2]
    counts = np.bincount(lookup_table()[index], minlength=len(COLOUR_TERMS))
    return counts / counts.sum()


def photo_colours(image) -> dict[str, float]:
    """The colour terms of a PIL image: term -> share of its pixels, on a copy at most 64 px a side.

    Args:
        image: a PIL image, any mode (converted to RGB; greyscale photos come out black, grey and white).
    """
    from PIL import Image

    sample = image.convert("RGB") if image.mode != "RGB" else image
    if max(sample.size) > SAMPLE_SIDE:
        # reduce() (box filter by an integer factor) is cheap on a full-size photo; then a small resize.
        factor = max(1, max(sample.size) // (2 * SAMPLE_SIDE))
        sample = sample.reduce(factor) if factor > 1 else sample
        scale = SAMPLE_SIDE / max(sample.size)
        sample = sample.resize((max(1, round(sample.width * scale)), max(1, round(sample.height * scale))),
                               Image.Resampling.BILINEAR)
    shares = colour_distribution(np.asarray(sample))
    return dict(zip(COLOUR_TERMS, (float(s) for s in shares)))
