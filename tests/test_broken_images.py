"""Validation stays as strict with derivatives on: a corpus of broken images (truncated at many points,
bytes flipped in headers and in the coded data; baseline and progressive JPEG decoded at reduced scale, for
the preview of a photo and for the tiny copy of an image that serves as its own thumbnail; every allowed
format) — each one the full decode rejects is rejected with derivatives on, for the same reason."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from hf_ingest.derivatives import DerivativeSizes
from hf_ingest.images import InvalidImage, inspect_image
from tests import photos

SIZES = DerivativeSizes()
MAX_PIXELS = 10**9


def originals() -> dict[str, bytes]:
    photo = photos.photo("chelsea.png").convert("RGB")
    return {
        "jpeg-large-baseline": photos.large_jpeg(),
        "jpeg-large-progressive": photos.large_jpeg(progressive=True),
        "jpeg-small": photos.encode(photo, "JPEG", quality=90),
        # within THUMBNAIL_SIZE: the original serves as its thumbnail, and the JPEG decodes at its tiny copy's scale
        "jpeg-thumbnail-size-baseline": photos.encode(photo.resize((240, 160)), "JPEG", quality=90),
        "jpeg-thumbnail-size-progressive": photos.encode(photo.resize((240, 160)), "JPEG", quality=90, progressive=True),
        "png": photos.encode(photo, "PNG"),
        "webp": photos.encode(photo, "WEBP", quality=80),
        "gif": photos.encode(photo.quantize(256), "GIF"),
        "gif-animated": photos.animated_gif(),
        "tiff": photos.encode(photo, "TIFF"),
        "bmp": photos.encode(photo, "BMP"),
    }


def broken(data: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for fraction in (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999):
        yield f"truncated at {fraction:.1%}", data[: max(1, int(len(data) * fraction))]
    for n in range(12):  # headers: the first 600 bytes (markers, tables, sizes)
        at = rng.randrange(2, min(600, len(data)))
        yield f"header byte {at} flipped", data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    for n in range(12):  # the coded data
        at = rng.randrange(len(data) // 4, len(data) - 2)
        yield f"data byte {at} flipped", data[:at] + bytes([data[at] ^ 0xA5]) + data[at + 1:]


def rejection(data: bytes, sizes: DerivativeSizes | None) -> str | None:
    try:
        inspect_image(data, MAX_PIXELS, sizes)
    except InvalidImage as exc:
        return exc.reason.value
    return None


@pytest.mark.parametrize("kind", list(originals()))
def test_every_image_the_full_decode_rejects_is_still_rejected(kind: str) -> None:
    original = originals()[kind]
    assert rejection(original, None) is None and rejection(original, SIZES) is None
    rejected_full = 0
    only_with_derivatives = []
    for what, data in broken(original, seed=len(kind)):
        full, reduced = rejection(data, None), rejection(data, SIZES)
        if full is not None:
            rejected_full += 1
            assert reduced == full, f"{kind}, {what}: full decode says {full}, with derivatives {reduced}"
        elif reduced is not None:
            only_with_derivatives.append(what)
    # (an animated GIF's truncations mostly cut frames after the first, which no decode reads)
    assert rejected_full >= (4 if kind == "gif-animated" else 10), f"{kind}: {rejected_full} rejected"
    assert not only_with_derivatives, f"{kind}: rejected only with derivatives on: {only_with_derivatives}"
