"""Image validation: a full decode, the bomb guard, and a reason for every rejection."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from hf_ingest.images import InvalidImage, inspect_image
from tests.image_cases import cases, truncated_jpeg

DEFAULT_MAX = 89_478_485


@pytest.mark.parametrize("case", [c for c in cases() if c.invalid_reason is None], ids=lambda c: c.name)
def test_valid_images_are_described(case) -> None:
    info = inspect_image(case.data, DEFAULT_MAX)
    with Image.open(io.BytesIO(case.data)) as image:
        assert (info.width, info.height) == image.size
    assert info.extension == case.extension
    assert info.content_type.startswith("image/")


@pytest.mark.parametrize("case", [c for c in cases() if c.invalid_reason], ids=lambda c: c.name)
def test_invalid_images_are_rejected_with_their_reason(case) -> None:
    with pytest.raises(InvalidImage) as raised:
        inspect_image(case.data, DEFAULT_MAX)
    assert raised.value.reason.value == case.invalid_reason


def test_truncated_jpeg_passes_verify_but_not_our_check() -> None:
    """The reason for a full decode: Pillow's verify() accepts a truncated JPEG."""
    data = truncated_jpeg()
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # does not raise
    with pytest.raises(InvalidImage) as raised:
        inspect_image(data, DEFAULT_MAX)
    assert raised.value.reason.value == "corrupt"


def test_pixel_guard_is_configurable_and_checked_before_decoding() -> None:
    small = inspect_image(_png(100, 100), 10_000)
    assert (small.width, small.height) == (100, 100)
    with pytest.raises(InvalidImage) as raised:
        inspect_image(_png(101, 100), 10_000)
    assert raised.value.reason.value == "too_large"
    assert "MAX_IMAGE_PIXELS=10000" in str(raised.value)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name, pillow_format", [("eps", "EPS"), ("ico", "ICO"), ("tga", "TGA")])
def test_formats_pillow_reads_but_we_refuse_are_never_opened(name: str, pillow_format: str) -> None:
    """Pillow alone opens these (EPS through Ghostscript); the allowlist refuses them before any parsing."""
    case = next(c for c in cases() if c.name == name)
    with Image.open(io.BytesIO(case.data)) as image:
        assert image.format == pillow_format
    with pytest.raises(InvalidImage) as raised:
        inspect_image(case.data, DEFAULT_MAX)
    assert raised.value.reason.value == "not_an_image"
    assert "accepted formats" in str(raised.value)


def test_a_multi_picture_jpeg_is_stored_as_a_jpeg() -> None:
    first, second = Image.new("RGB", (16, 12), (200, 0, 0)), Image.new("RGB", (16, 12), (0, 200, 0))
    buffer = io.BytesIO()
    first.save(buffer, "MPO", save_all=True, append_images=[second])
    info = inspect_image(buffer.getvalue(), DEFAULT_MAX)
    assert (info.format, info.content_type, info.extension) == ("MPO", "image/jpeg", "jpg")
