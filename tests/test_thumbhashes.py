"""The batched ThumbHash encoder against the reference one (the `thumbhash` Rust package): the same hashes
but for rounding ties, and where a tie differs, placeholders that look the same."""

from __future__ import annotations

import numpy as np
import pytest
import thumbhash
from PIL import Image

from hf_ingest.thumbhashes import thumb_hashes
from tests import photos


def _decoded(made: bytes) -> np.ndarray:
    width, height, rgba = thumbhash.thumb_hash_to_rgba(made)
    return np.frombuffer(rgba, np.uint8).reshape(height, width, 4).astype(np.int64)


def _against_the_reference(images: np.ndarray) -> tuple[float, int]:
    """(share of hashes equal to the reference's, largest difference of their decoded pixels, of 255)."""
    height, width = images.shape[1:3]
    ours = thumb_hashes(images)
    reference = [thumbhash.rgba_to_thumb_hash(width, height, image.tobytes()) for image in images]
    assert [len(made) for made in ours] == [len(made) for made in reference]
    worst = max((int(np.abs(_decoded(a) - _decoded(b)).max()) for a, b in zip(ours, reference, strict=True) if a != b),
                default=0)
    return sum(a == b for a, b in zip(ours, reference, strict=True)) / len(ours), worst


@pytest.mark.parametrize(("height", "width", "alpha"), [
    (6, 8, "opaque"), (8, 6, "opaque"), (8, 8, "opaque"), (5, 8, "varied"), (8, 8, "some invisible"), (40, 100, "varied"),
])
def test_random_images_hash_as_the_reference_encoder_does(height: int, width: int, alpha: str) -> None:
    images = np.random.default_rng(height * 100 + width).integers(0, 256, (400, height, width, 4), dtype=np.uint8)
    if alpha == "opaque":
        images[..., 3] = 255
    elif alpha == "some invisible":
        images[:40, ..., 3] = 0
    equal, worst = _against_the_reference(images)
    assert equal >= 0.98
    assert worst <= 8


def test_real_photographs_hash_as_the_reference_encoder_does() -> None:
    """The placeholder's input: each photo box-reduced to 8 px on its longest side."""
    images = np.stack([np.asarray(photos.photo(name).convert("RGBA").resize((8, 6)), dtype=np.uint8) for name in photos.PHOTOS])
    equal, worst = _against_the_reference(images)
    assert equal >= 0.9
    assert worst <= 8


def test_photographs_with_transparent_rows_look_as_much_like_the_picture_as_the_reference_placeholders() -> None:
    """Alpha that is the same along every row makes its terms across x exactly zero, which ThumbHash stores as
    a tie (7.5 of 15): here it rounds up, the reference's float32 noise rounds it down; either decodes about
    as far from the picture (mean difference per channel, of 255)."""
    images = np.stack([np.asarray(photos.photo(name).convert("RGBA").resize((8, 6)), dtype=np.uint8) for name in photos.PHOTOS])
    images[:, :2, :, 3] = 0
    for image, ours in zip(images, thumb_hashes(images), strict=True):
        reference = thumbhash.rgba_to_thumb_hash(8, 6, image.tobytes())
        assert _off_the_picture(ours, image) <= _off_the_picture(reference, image) + 1.5


def _off_the_picture(made: bytes, image: np.ndarray) -> float:
    decoded = Image.fromarray(_decoded(made).astype(np.uint8), "RGBA").resize(image.shape[1::-1], Image.Resampling.BOX)
    return float(np.abs(np.asarray(decoded, dtype=np.float64) - image).mean())


def test_a_plain_image_and_an_invisible_one_decode_as_the_reference_ones() -> None:
    """No varying terms: their scale is 0, so the nibbles are 0 (the reference's are its rounding noise, which
    the decoder multiplies by that 0)."""
    plain = np.full((3, 6, 8, 4), 255, np.uint8)
    plain[0, ..., :3] = (200, 40, 90)  # no rounding tie in its average
    plain[2, ..., 3] = 0
    height, width = plain.shape[1:3]
    reference = [thumbhash.rgba_to_thumb_hash(width, height, image.tobytes()) for image in plain]
    for ours, theirs in zip(thumb_hashes(plain), reference, strict=True):
        assert ours[:5] == theirs[:5]  # the header: average colour, scales, layout
        assert np.array_equal(_decoded(ours), _decoded(theirs))
        assert set(ours[6 if ours[2] & 0x80 else 5:]) == {0}


def test_a_line_of_pixels_gets_a_placeholder_that_decodes() -> None:
    """One pixel high (the placeholder of a 1000x10 picture): the terms that are zero stay zero (the
    reference's float32 noise rounds them either way)."""
    line = np.random.default_rng(3).integers(0, 256, (5, 1, 8, 4), dtype=np.uint8)
    line[..., 3] = 255
    for made in thumb_hashes(line):
        assert _decoded(made).shape[1] > _decoded(made).shape[0]  # landscape, as the line


def test_more_than_100_pixels_a_side_is_refused() -> None:
    with pytest.raises(ValueError, match="100x100"):
        thumb_hashes(np.zeros((1, 101, 8, 4), np.uint8))
