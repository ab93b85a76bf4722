"""What an app paints of a scene, made from the pixels that validation decodes anyway.

One decode in (`inspect_image` hands over the loaded image), out: a thumbnail and a preview (WebP,
longest side THUMBNAIL_SIZE / PREVIEW_SIZE, never upscaled, EXIF orientation applied, sRGB 8-bit
RGB or RGBA whatever the source), a ThumbHash placeholder and a 64-bit perceptual hash (pHash).
`render` makes the renditions and a tiny copy per image; `summarize` makes the placeholders and the
pHashes of a whole batch at once from the tiny copies (a few numpy calls per distinct size: a dataset
of small images, where these are the whole cost, has one size).
A JPEG is decoded at the reduced scale its derivatives need (`draft_for_derivatives`: libjpeg's DCT
scaling reads every coefficient, so it rejects what a full decode rejects; see
tests/test_broken_images.py), which pays for most of the encodes.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms, ImageOps

from hf_ingest.storage import derived_key
from hf_ingest.thumbhashes import thumb_hashes

WEBP_QUALITY = 80
WEBP_METHOD = 0  # libwebp's fastest: see docs/performance.md (method 4, Pillow's default, is ~4x slower)
SUMMARY_SIDE = 32  # the placeholder and the pHash are made from a copy of the thumbnail about this small (`tiny`)
PLACEHOLDER_SIDE = 8  # ThumbHash keeps at most 7 frequencies a side; from 8 px the decoded placeholder differs from
# one made from 100 px by ~2 of 255 per channel, and encoding costs a fraction (the reference encoder, 8 px: 10-20 us;
# 16 px: 30-50; 32 px: 100-220)
_SRGB = ImageCms.createProfile("sRGB")


@dataclass(frozen=True)
class DerivativeSizes:
    """Longest sides of the thumbnail and the preview (pixels)."""

    thumbnail: int = 256
    preview: int = 1024


@dataclass(frozen=True)
class Rendition:
    """One WebP derivative: its pixels' size and its bytes."""

    width: int
    height: int
    data: bytes

    def key(self, sha256: str) -> str:
        return derived_key(sha256, self.width, self.height)


@dataclass(frozen=True)
class Rendered:
    """What one decode yields: the renditions (None: the original serves as it, `serves_as_is`) and the tiny
    copy its placeholder and pHash are made from (RGB or RGBA, 8-bit, longest side under 2x SUMMARY_SIDE)."""

    thumbnail: Rendition | None
    preview: Rendition | None
    tiny: np.ndarray


@dataclass(frozen=True)
class Derivatives:
    """An image's derivatives; a rendition of None means the original serves as it (`serves_as_is`)."""

    thumbnail: Rendition | None
    preview: Rendition | None
    placeholder: str  # ThumbHash, base64
    phash: str  # 64 bits, 16 hex digits


def draft_for_derivatives(image: Image.Image, sizes: DerivativeSizes) -> None:
    """Let a JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8) whose longest side still reaches what its
    derivatives need: the preview, or, for an image that serves as its own thumbnail and preview
    (`serves_as_is`), only its tiny copy (a 96x64 JPEG then decodes at 48x32 and needs no reduction)."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = image.size
    longest = max(width, height)
    if longest > sizes.preview:
        target = sizes.preview
    elif serves_as_is(image, _orientation(image), sizes):
        target = SUMMARY_SIDE
    else:
        return
    scale = target / longest
    image.draft(image.mode, (max(1, int(width * scale)), max(1, int(height * scale))))


def render(image: Image.Image, sizes: DerivativeSizes) -> Rendered:
    """The renditions of a loaded image (its first frame) and its tiny copy."""
    orientation = _orientation(image)
    as_is = serves_as_is(image, orientation, sizes)
    upright = ImageOps.exif_transpose(image) if orientation > 1 else image
    preview = _shrink(to_srgb(upright), sizes.preview)
    thumbnail = _shrink(preview, sizes.thumbnail)
    tiny = _pixels(_reduced(thumbnail, SUMMARY_SIDE))
    if as_is:
        return Rendered(None, None, tiny)
    preview_rendition = _webp(preview)
    thumbnail_rendition = preview_rendition if thumbnail.size == preview.size else _webp(thumbnail)
    return Rendered(thumbnail_rendition, preview_rendition, tiny)


def summarize(rendered: Sequence[Rendered]) -> list[Derivatives]:
    """The derivatives of a batch: pHashes made together for the tiny copies of one size, placeholders for
    the ~8 px copies of one size (a dataset of many sizes has a few dozen of those, against one per
    image of the tiny copies). Made one at a time, the dozen small Pillow and numpy calls per image (and
    the reference ThumbHash encoder's call) cost ~100 us, and twice that in threads on 2 cores (each call
    gives the GIL up and waits for it back)."""
    hashes: list[str] = [""] * len(rendered)
    smalls: list[np.ndarray] = [np.empty(0, np.uint8)] * len(rendered)
    for indexes in _indexes_by_shape([item.tiny for item in rendered]):
        tinies = np.stack([rendered[i].tiny for i in indexes])
        for i, phash, small in zip(indexes, phashes(tinies), placeholder_pixels(tinies), strict=True):
            hashes[i], smalls[i] = phash, small
    placeholders: list[str] = [""] * len(rendered)
    for indexes in _indexes_by_shape(smalls):
        made = thumb_hashes(np.stack([smalls[i] for i in indexes]))
        for i, placeholder in zip(indexes, made, strict=True):
            placeholders[i] = base64.b64encode(placeholder).decode()
    return [Derivatives(item.thumbnail, item.preview, placeholder, phash)
            for item, placeholder, phash in zip(rendered, placeholders, hashes, strict=True)]


def _indexes_by_shape(arrays: Sequence[np.ndarray]) -> list[list[int]]:
    by_shape: defaultdict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, array in enumerate(arrays):
        by_shape[array.shape].append(index)
    return list(by_shape.values())


def serves_as_is(image: Image.Image, orientation: int, sizes: DerivativeSizes) -> bool:
    """Is the original already what its thumbnail would be? Small (within THUMBNAIL_SIZE), a still JPEG, PNG
    or WebP that every browser shows as it is (upright, 8-bit, no colour profile to convert): re-encoding
    it as WebP would cost more time (~0.2 ms for a 96x64 JPEG, twice what validating it costs) than it saves."""
    return (
        image.format in ("JPEG", "PNG", "WEBP")
        and max(image.size) <= sizes.thumbnail
        and orientation <= 1
        and image.mode in ("RGB", "RGBA", "L", "LA", "P", "1")
        and not image.info.get("icc_profile")
        and not getattr(image, "is_animated", False)
    )


def _orientation(image: Image.Image) -> int:
    """EXIF orientation (1: upright). Parsing EXIF costs ~50 us: only where the file has an EXIF block
    (TIFF keeps it in its own tags)."""
    if image.format != "TIFF" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - an unreadable EXIF block leaves the image as stored
        return 1


def to_srgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, or RGBA where the source has transparency; colours through its ICC profile when it has one."""
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):  # 16-bit (or float 0-1) grey to 8 bits
        grey = np.asarray(image, dtype=np.float64)
        scale = 255.0 if mode == "F" else 255.0 / 65535.0
        image = Image.fromarray(np.clip(grey * scale + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"
    if mode in ("P", "PA", "1"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    profile = image.info.get("icc_profile")
    if profile and mode in ("RGB", "CMYK", "RGBA"):
        try:
            return _icc_transform(profile, mode).apply(image)
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: the plain conversion below
    if mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if mode in ("LA", "La", "RGBa", "PA") or "transparency" in image.info else "RGB")


@lru_cache(maxsize=32)
def _icc_transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    """Source profile -> sRGB, built once per distinct profile (building one takes milliseconds)."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    return ImageCms.buildTransform(source, _SRGB, mode, "RGBA" if mode == "RGBA" else "RGB")


def _shrink(image: Image.Image, longest: int, resample: Image.Resampling = Image.Resampling.BICUBIC) -> Image.Image:
    """`image` with its longest side at most `longest`, aspect kept; never larger than it is."""
    width, height = image.size
    if max(width, height) <= longest:
        return image
    scale = longest / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, resample, reducing_gap=None if resample == Image.Resampling.BOX else 2.0)


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """A box-filtered copy whose longest side is about `side` (between `side` and 2x: an integer factor,
    Pillow's `reduce`, is a fraction of the cost of a resize to an exact size)."""
    factor = max(image.size) // side
    return image.reduce(factor) if factor > 1 else image


def _pixels(image: Image.Image) -> np.ndarray:
    """An RGB or RGBA image's pixels as (height, width, channels): from its bytes, which costs half of
    `np.asarray` on a small image (that goes through Pillow's array interface)."""
    return np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width, len(image.mode))


def _webp(image: Image.Image) -> Rendition:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return Rendition(image.width, image.height, buffer.getvalue())


def placeholder_pixels(tinies: np.ndarray) -> np.ndarray:
    """What the ThumbHash placeholder (base64, ~25 bytes: an app decodes it into a blurred picture before any
    download) is made from, for each of `tinies` (n, height, width, RGB or RGBA): RGBA of about
    PLACEHOLDER_SIDE pixels a side, box-averaged as Pillow's `reduce` does (edge blocks over the pixels
    they have)."""
    height, width, channels = tinies.shape[1:]
    factor = max(1, max(height, width) // PLACEHOLDER_SIDE)
    small = _box_reduced(tinies, factor)
    if channels == 3:
        small = np.concatenate([small, np.full((*small.shape[:3], 1), 255, np.uint8)], axis=3)
    return small


def _box_reduced(images: np.ndarray, factor: int) -> np.ndarray:
    """(n, h, w, c) 8-bit images, each block of factor x factor pixels averaged (rounded) into one; the blocks
    at the right and bottom edges over the pixels they have. The blocks' sums are two products with 0/1
    matrices (exact: every sum is an integer under 2^24), half the time of summing a zero-padded copy's
    reshaped blocks; numpy's `reduceat` took 10-40x longer."""
    if factor == 1:
        return images
    rows, columns = _blocks(images.shape[1], factor), _blocks(images.shape[2], factor)
    sums = (rows @ images.transpose(0, 3, 1, 2).astype(np.float32) @ columns.T).astype(np.uint32)
    counts = np.outer(rows.sum(axis=1), columns.sum(axis=1)).astype(np.uint32)
    return ((sums + counts // 2) // counts).astype(np.uint8).transpose(0, 2, 3, 1)


@lru_cache(maxsize=128)
def _blocks(n: int, factor: int) -> np.ndarray:
    """The 0/1 matrix that sums n samples into blocks of `factor` (the last one over what is left)."""
    return (np.arange(n)[None, :] // factor == np.arange(-(-n // factor))[:, None]).astype(np.float32)


@lru_cache(maxsize=128)
def _dct_rows(n: int) -> np.ndarray:
    """The 8 lowest DCT-II basis rows over n samples."""
    k = np.arange(8)[:, None]
    x = np.arange(n)[None, :]
    return np.cos(np.pi * k * (2 * x + 1) / (2 * n)).astype(np.float32)


_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2 luma, as Pillow's convert("L")


def phashes(tinies: np.ndarray) -> list[str]:
    """The 64-bit pHash of each of `tinies` (n, height, width, RGB or RGBA): the 8x8 lowest DCT-II
    frequencies of the grey picture, a bit set for each above their median; 16 hex digits. As
    `imagehash.phash`, but the frequencies are taken over the box-filtered copy's own grid instead of a
    32x32 Lanczos resize (the low frequencies are the same picture's; no resize to pay): copies of one
    picture stay a few bits apart, different pictures ~20 or more."""
    grey = tinies[..., :3].astype(np.float32) @ _GREY
    for axis in (1, 2):  # a side under 8 pixels: repeated, so that 8 frequencies exist
        if grey.shape[axis] < 8:
            grey = np.repeat(grey, -(-8 // grey.shape[axis]), axis=axis)
    low = (_dct_rows(grey.shape[1]) @ grey @ _dct_rows(grey.shape[2]).T).reshape(len(grey), 64)
    middle = np.partition(low, (31, 32), axis=1)[:, 31:33].mean(axis=1, keepdims=True)
    return [f"{value:016x}" for value in np.packbits(low > middle, axis=1).view(">u8").ravel().tolist()]
