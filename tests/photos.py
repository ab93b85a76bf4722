"""Real photographs (scikit-image's sample data, shipped in its wheel) and the awkward kinds users import:
an EXIF-rotated phone-size JPEG, CMYK, 16-bit grey PNG, palette with transparency, an animated GIF."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

import skimage

SAMPLES = Path(skimage.__file__).parent / "data"
PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "retina.jpg",
          "hubble_deep_field.jpg", "horse.png", "coins.png", "moon.png", "grass.png", "gravel.png",
          "motorcycle_left.png", "page.png", "ihc.png", "clock_motion.png"]


def photo(name: str) -> Image.Image:
    with Image.open(SAMPLES / name) as image:
        image.load()
        return image.copy()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def phone_jpeg() -> bytes:
    """A 4032x3024 camera JPEG stored sideways with EXIF orientation 6 (shown rotated 90 degrees clockwise),
    as phones write them: upright it is 3024 wide and 4032 high."""
    image = photo("chelsea.png").convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def cmyk_jpeg() -> bytes:
    return encode(photo("coffee.png").convert("RGB").convert("CMYK"), "JPEG", quality=90)


def grey16_png() -> bytes:
    """16-bit greyscale: the camera man scaled to the full 0-65535 range."""
    grey = photo("camera.png").convert("L")
    return encode(grey.point(lambda v: v * 257, "I").convert("I;16"), "PNG")


def palette_png_with_transparency() -> bytes:
    """Astronaut in 63 colours, the top-left quarter in a 64th that is transparent (tRNS)."""
    image = photo("astronaut.png").convert("RGB").quantize(63)
    palette = image.getpalette() or []
    image.putpalette(palette[: 63 * 3] + [0, 255, 0])
    image.paste(63, (0, 0, image.width // 2, image.height // 2))
    image.info["transparency"] = 63
    return encode(image, "PNG", transparency=63)


def animated_gif() -> bytes:
    return (SAMPLES / "no_time_for_that_tiny.gif").read_bytes()


def large_jpeg(progressive: bool = False) -> bytes:
    """2500 px wide: decoded at 1/2 scale for a 1024 px preview."""
    image = photo("hubble_deep_field.jpg").convert("RGB").resize((2500, 2180), Image.Resampling.BICUBIC)
    return encode(image, "JPEG", quality=88, progressive=progressive)
