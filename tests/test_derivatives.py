"""Derivatives from the one decode that validates an image: real photographs and the awkward kinds,
every derivative decoded and checked; the placeholder decoded; the pHash against the reference one."""

from __future__ import annotations

import base64
import io

import imagehash
import numpy as np
import pytest
import thumbhash
from PIL import Image, ImageCms

from hf_ingest.derivatives import (
    Derivatives,
    DerivativeSizes,
    Rendition,
    placeholder_pixels,
    summarize,
)
from hf_ingest.images import inspect_image
from tests import photos

SIZES = DerivativeSizes(thumbnail=256, preview=1024)
MAX_PIXELS = 10**9


def derived(data: bytes) -> Derivatives:
    rendered = inspect_image(data, MAX_PIXELS, SIZES).rendered
    assert rendered is not None
    return summarize([rendered])[0]


def opened(rendition: Rendition | None) -> Image.Image:
    assert rendition is not None
    image = Image.open(io.BytesIO(rendition.data))
    image.load()
    assert image.format == "WEBP"
    assert image.size == (rendition.width, rendition.height)
    return image


def check_sizes(made: Derivatives, upright: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
    """Longest sides at the sizes (never above the image's own), aspect kept to a pixel."""
    thumbnail, preview = opened(made.thumbnail), opened(made.preview)
    for image, longest in ((thumbnail, SIZES.thumbnail), (preview, SIZES.preview)):
        assert max(image.size) == min(longest, max(upright))
        expected_short = min(upright) * max(image.size) / max(upright)
        assert abs(min(image.size) - expected_short) <= 1
        assert (image.width >= image.height) == (upright[0] >= upright[1])
    return thumbnail, preview


@pytest.mark.parametrize("name", photos.PHOTOS)
def test_every_real_photograph_gets_webp_derivatives_of_the_right_size(name: str) -> None:
    image = photos.photo(name)
    data = photos.encode(image.convert("RGB"), "JPEG", quality=92) if image.mode not in ("L", "RGB") else \
        photos.encode(image, "PNG")
    made = derived(data)
    if max(image.size) <= SIZES.thumbnail:
        assert made.thumbnail is None and made.preview is None  # the original is its own thumbnail
        return
    thumbnail, preview = check_sizes(made, image.size)
    assert thumbnail.mode == preview.mode == "RGB"
    # the preview shows the photo: its mean colour is the original's (in sRGB where it has a colour profile)
    shown = image.convert("RGB")
    if image.info.get("icc_profile") and image.mode == "RGB":  # (a grey image's grey profile: left as it is)
        source = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        shown = ImageCms.profileToProfile(shown, source, ImageCms.createProfile("sRGB"))
    original = np.asarray(shown, dtype=np.float64).mean(axis=(0, 1))
    assert np.abs(np.asarray(preview.convert("RGB"), dtype=np.float64).mean(axis=(0, 1)) - original).max() < 6


def test_a_phone_photo_is_turned_upright_and_decoded_at_the_preview_scale() -> None:
    data = photos.phone_jpeg()
    info = inspect_image(data, MAX_PIXELS, SIZES)
    assert (info.width, info.height) == (4032, 3024)  # the stored image's own size, as today
    assert info.rendered is not None
    made = summarize([info.rendered])[0]
    thumbnail, preview = check_sizes(made, (3024, 4032))  # upright: portrait
    assert preview.size == (768, 1024) and thumbnail.size == (192, 256)
    # upright means the cat's picture turned clockwise: compare with the original turned by Pillow
    reference = Image.open(io.BytesIO(data)).convert("RGB").transpose(Image.Transpose.ROTATE_270).resize(preview.size)
    difference = np.abs(np.asarray(preview, dtype=np.float64) - np.asarray(reference, dtype=np.float64)).mean()
    assert difference < 8


def test_cmyk_becomes_rgb_with_its_colours() -> None:
    data = photos.cmyk_jpeg()
    made = derived(data)
    thumbnail, preview = check_sizes(made, (600, 400))
    assert preview.mode == "RGB"
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))
    assert np.abs(np.asarray(preview, dtype=np.float64).mean(axis=(0, 1)) - expected).max() < 6


def test_sixteen_bit_grey_keeps_its_tones() -> None:
    made = derived(photos.grey16_png())
    _, preview = check_sizes(made, (512, 512))
    shown = np.asarray(preview.convert("L"), dtype=np.float64)
    original = np.asarray(photos.photo("camera.png").convert("L"), dtype=np.float64)
    assert abs(shown.mean() - original.mean()) < 3  # not clipped to white, as a plain convert("RGB") would
    assert shown.std() > 0.8 * original.std()


def test_palette_transparency_becomes_alpha() -> None:
    made = derived(photos.palette_png_with_transparency())
    thumbnail, preview = check_sizes(made, (512, 512))
    assert preview.mode == thumbnail.mode == "RGBA"
    alpha = np.asarray(preview)[..., 3]
    assert alpha[:200, :200].max() == 0  # the transparent quarter
    assert alpha[300:, 300:].min() == 255


def test_an_animated_gif_gives_its_first_frame() -> None:
    data = photos.animated_gif()
    with Image.open(io.BytesIO(data)) as gif:
        assert gif.n_frames > 1
        first = np.asarray(gif.convert("RGB"), dtype=np.int16)
    made = derived(data)
    preview = opened(made.preview)
    assert preview.size == (14, 25)  # never upscaled
    assert np.abs(np.asarray(preview.convert("RGB"), dtype=np.int16) - first).mean() < 12


def test_a_small_plain_image_is_its_own_thumbnail_and_preview() -> None:
    made = derived(photos.encode(photos.photo("astronaut.png").resize((120, 120)), "JPEG"))
    assert made.thumbnail is None and made.preview is None
    assert len(made.phash) == 16 and made.placeholder


def test_the_placeholder_decodes_to_the_picture_in_small() -> None:
    for data in (photos.large_jpeg(), photos.cmyk_jpeg(), photos.phone_jpeg()):
        made = derived(data)
        raw = base64.b64decode(made.placeholder)
        assert len(raw) <= 32
        image = Image.open(io.BytesIO(data))
        upright = (image.height, image.width) if data == photos.phone_jpeg() else image.size
        assert thumbhash.thumb_hash_to_approximate_aspect_ratio(raw) == pytest.approx(upright[0] / upright[1], rel=0.2)
        mean = np.asarray(image.convert("RGB").reduce(8), dtype=np.float64).mean(axis=(0, 1)) / 255
        assert np.abs(np.asarray(thumbhash.thumb_hash_to_average_rgba(raw)[:3]) - mean).max() < 0.05
        width, height, rgba = thumbhash.thumb_hash_to_rgba(raw)
        assert len(rgba) == width * height * 4


def test_the_phash_is_the_standard_one_within_a_few_bits() -> None:
    distances = []
    for name in photos.PHOTOS:
        image = photos.photo(name)
        mine = int(derived(photos.encode(image, "PNG")).phash, 16)
        reference = int(str(imagehash.phash(image)), 16)
        distances.append(bin(mine ^ reference).count("1"))
    assert max(distances) <= 12 and sum(distances) / len(distances) <= 5, distances


def test_a_batch_is_summarized_as_each_image_alone() -> None:
    """Placeholders and pHashes are made per batch, same-size tiny copies together: the result is each
    image's own, in the batch's order, whatever sizes and modes the batch mixes."""
    crops = [photos.photo("astronaut.png").crop((i * 7, i * 5, 96 + i * 7, 64 + i * 5)) for i in range(4)]
    batch = [photos.encode(crop, "JPEG") for crop in crops] + [
        photos.palette_png_with_transparency(), photos.large_jpeg(), photos.encode(crops[0].convert("L"), "PNG"),
        photos.encode(crops[1].resize((28, 28)), "PNG"), photos.encode(crops[2].resize((3, 40)), "PNG"),
        photos.encode(crops[0], "PNG"), photos.encode(crops[3].resize((120, 80)), "PNG"),  # tiny copies of two
    ]  # sizes whose placeholders are made from one size: the placeholders are grouped apart from the pHashes
    rendered = [inspect_image(data, MAX_PIXELS, SIZES).rendered for data in batch]
    assert all(item is not None for item in rendered)
    tinies = [item.tiny for item in rendered[-2:]]  # type: ignore[union-attr]
    assert tinies[0].shape != tinies[1].shape
    assert placeholder_pixels(tinies[0][None]).shape == placeholder_pixels(tinies[1][None]).shape
    together = summarize(rendered)  # type: ignore[arg-type]
    alone = [summarize([item])[0] for item in rendered]  # type: ignore[list-item]
    assert [(d.placeholder, d.phash) for d in together] == [(d.placeholder, d.phash) for d in alone]
    assert len({d.phash for d in together[:4]}) == 4  # four different crops, four hashes


def test_the_placeholder_averages_blocks_as_pillow_reduce_does() -> None:
    """The batch's box filter, edge blocks included, is Pillow's `reduce` (what the placeholder was made
    with one image at a time), within rounding."""
    from hf_ingest.derivatives import _box_reduced

    for size, factor in (((96, 64), 4), ((33, 21), 4), ((57, 57), 7), ((10, 3), 2)):
        image = photos.photo("coffee.png").convert("RGB").resize(size)
        mine = _box_reduced(np.asarray(image)[None], factor)[0]
        pillows = np.asarray(image.reduce(factor))
        assert mine.shape == pillows.shape
        assert np.abs(mine.astype(int) - pillows.astype(int)).max() <= 1


def test_derivatives_off_costs_nothing_and_makes_nothing() -> None:
    assert inspect_image(photos.large_jpeg(), MAX_PIXELS, None).rendered is None


def test_the_summary_says_what_was_made_and_shows_public_thumbnails() -> None:
    from hf_ingest.summary import ImportReport, summary_markdown

    progress = {"rows_seen": 10, "derivatives_stored": 14, "derivatives_backfilled": 3, "near_duplicates": 2}
    report = ImportReport("j", "o/n", "default", "train", "abc", "file:///x/images/", 1.0, progress,
                          sample_urls=["https://cdn.example/images/a.jpg"],
                          sample_thumbnails=["https://cdn.example/derived/a-256x171.webp"])
    text = summary_markdown(report)
    assert "| derivatives stored / backfilled | 14 / 3 |" in text
    assert "| near-duplicates (of an earlier scene of this split) | 2 |" in text
    assert "![thumbnail](https://cdn.example/derived/a-256x171.webp)" in text
    local = summary_markdown(ImportReport("j", "o/n", "default", "train", None, "file:///x/", 1.0, {"rows_seen": 1},
                                          sample_thumbnails=["file:///x/derived/a.webp"]))
    assert "![thumbnail]" not in local and "| near-duplicates (of an earlier scene of this split) | off |" in local
