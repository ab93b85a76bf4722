"""ThumbHash (https://evanw.github.io/thumbhash/) of many small images at once, in a few numpy calls.

The reference encoder takes one image per call (~8 us of Rust for 8x6 pixels, each call letting the GIL
go and waiting to get it back in the import's threads); here a batch's DCTs are matrix products and its
bytes are packed together (~4 us per image for a batch of 512, one thread). The arithmetic is the
reference's (evanw's JavaScript, in float64): the output equals the Rust encoder's (float32) but for a
nibble at a rounding tie in 0-2 % of images, whose decoded placeholders differ by a few of 255. A term
that is exactly zero (a plain picture; alpha the same along every row) is stored as exactly zero, where
the Rust encoder stores its rounding noise: either decodes about as far from the picture
(tests/test_thumbhashes.py)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

MAX_SIDE = 100  # as the reference: a larger image costs more and adds nothing to ~25 bytes


def thumb_hashes(rgba: np.ndarray) -> list[bytes]:
    """The ThumbHash of each of `rgba` (n, height, width, 4) 8-bit images, RGB not premultiplied by A."""
    count, height, width, _ = rgba.shape
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ValueError(f"{width}x{height} does not fit in {MAX_SIDE}x{MAX_SIDE}")
    pixels = rgba.astype(np.float64)
    alpha = pixels[..., 3] / 255
    coverage = alpha.sum(axis=(1, 2))
    average = (alpha[..., None] / 255 * pixels[..., :3]).sum(axis=(1, 2))
    average /= np.where(coverage > 0, coverage, 1.0)[:, None]  # an invisible image keeps a zero average
    has_alpha = coverage < width * height
    hashes: list[bytes] = [b""] * count
    for transparent in (False, True):  # the layout differs with alpha: each kind in one go
        chosen = np.flatnonzero(has_alpha == transparent)
        if len(chosen):
            for index, made in zip(chosen.tolist(), _encoded(pixels[chosen], alpha[chosen], average[chosen], transparent),
                                   strict=True):
                hashes[index] = made
    return hashes


def _encoded(pixels: np.ndarray, alpha: np.ndarray, average: np.ndarray, transparent: bool) -> list[bytes]:
    """The hashes of images that all have (or all lack) transparency."""
    height, width = alpha.shape[1:]
    opacity = alpha[..., None]
    rgb = average[:, None, None, :] * (1 - opacity) + opacity / 255 * pixels[..., :3]  # atop the average colour
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    limit = 5 if transparent else 7  # fewer luminance terms where alpha needs the room
    lx = max(1, _half_up(limit * width / max(width, height)))
    ly = max(1, _half_up(limit * height / max(width, height)))
    l_dc, l_ac, l_scale = _channel((red + green + blue) / 3, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _channel((red + green) / 2 - blue, 3, 3)
    q_dc, q_ac, q_scale = _channel(red - green, 3, 3)
    landscape = int(width > height)
    header24 = (_rounded(63 * l_dc) | (_rounded(31.5 + 31.5 * p_dc) << 6) | (_rounded(31.5 + 31.5 * q_dc) << 12)
                | (_rounded(31 * l_scale) << 18) | (int(transparent) << 23))
    header16 = ((ly if landscape else lx) | (_rounded(63 * p_scale) << 3) | (_rounded(63 * q_scale) << 9)
                | (landscape << 15))
    columns = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    factors = [l_ac, p_ac, q_ac]
    if transparent:
        a_dc, a_ac, a_scale = _channel(alpha, 5, 5)
        columns.append(_rounded(15 * a_dc) | (_rounded(15 * a_scale) << 4))
        factors.append(a_ac)
    nibbles = _rounded(15 * np.concatenate(factors, axis=1))
    if nibbles.shape[1] % 2:
        nibbles = np.concatenate([nibbles, np.zeros((len(nibbles), 1), dtype=nibbles.dtype)], axis=1)
    packed = np.concatenate([np.stack(columns, axis=1), nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)], axis=1)
    return [row.tobytes() for row in packed.astype(np.uint8)]


def _channel(values: np.ndarray, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DC, AC factors scaled into 0..1, and their scale, of (n, height, width) `values`: the DCT terms
    cx * ny < nx * (ny - cy), in the reference's order (row by row)."""
    height, width = values.shape[1:]
    terms = _basis(ny, height) @ values @ _basis(nx, width).T / (width * height)
    terms[np.abs(terms) < 1e-9] = 0.0  # a zero term's rounding noise (a plain picture's, or where the basis is
    # zero: cos(pi / 2)): exactly zero, so it scales to exactly the middle instead of a nibble the noise picks
    rows, columns = _triangle(nx, ny)
    chosen = terms[:, rows, columns]
    dc, ac = chosen[:, 0], chosen[:, 1:]
    scale = np.abs(ac).max(axis=1)
    scaled = 0.5 + 0.5 / np.where(scale > 0, scale, 1.0)[:, None] * ac
    return dc, np.where(scale[:, None] > 0, scaled, ac), scale


@lru_cache(maxsize=64)
def _basis(terms: int, size: int) -> np.ndarray:
    """cos(pi / size * k * (i + 0.5)) for k < terms, i < size."""
    basis = np.cos(np.pi / size * np.arange(terms)[:, None] * (np.arange(size)[None, :] + 0.5))
    basis.flags.writeable = False  # cached and shared by the import's threads
    return basis


@lru_cache(maxsize=64)
def _triangle(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    cells = [(cy, cx) for cy in range(ny) for cx in range(nx) if cx * ny < nx * (ny - cy)]
    return np.array([cy for cy, _ in cells]), np.array([cx for _, cx in cells])


def _rounded(values: np.ndarray) -> np.ndarray:
    """JavaScript's Math.round (halves up), as the reference; numpy's round takes halves to even."""
    return np.floor(values + 0.5).astype(np.int64)


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)  # `_rounded` for one number
