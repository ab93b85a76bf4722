"""Is this row a usable image? Decided by a full Pillow decode, guarded against bombs.

`Image.verify()` does not notice a truncated JPEG; `load()` does. The pixel guard runs
on the header's claimed size, before any pixel is decoded, so a bomb costs nothing.
Pillow opens only ALLOWED_FORMATS: formats a browser shows under the stored content type,
never EPS/PS/PDF (Ghostscript) or the long tail of formats Pillow also parses (dataset
content is untrusted input).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, UnidentifiedImageError, features

from hf_ingest.derivatives import DerivativeSizes, Rendered, draft_for_derivatives, render

# Our own guard (max_pixels) replaces Pillow's global one, so a configured limit is the only limit.
Image.MAX_IMAGE_PIXELS = None

ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP") + (
    ("AVIF",) if features.check("avif") else ()
)

_EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "TIFF": "tif",
    "BMP": "bmp",
    "MPO": "jpg",
    "AVIF": "avif",
}
# A multi-picture JPEG (MPO, from stereo cameras) is a JPEG to every viewer: stored as one.
_CONTENT_TYPES = {"MPO": "image/jpeg"}


class InvalidReason(StrEnum):
    """Why a row was skipped; the keys of `progress.invalid`."""

    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    TOO_LARGE = "too_large"
    CORRUPT = "corrupt"
    MISSING_FILE = "missing_file"
    OUTSIDE_DATASET = "outside_dataset"


class InvalidImage(Exception):
    """The row's bytes are not a usable image; `reason` is how it is counted."""

    def __init__(self, reason: InvalidReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    content_type: str
    extension: str
    rendered: Rendered | None = None  # its derivatives but for the batch's summary pass (`summarize`)


def inspect_image(data: bytes, max_pixels: int, sizes: DerivativeSizes | None = None) -> ImageInfo:
    """Decode `data` and describe it, or raise `InvalidImage` saying why it is unusable. With `sizes`,
    also make its derivatives from the same decode (a JPEG then decodes at the preview's scale)."""
    rendered: Rendered | None = None
    if not data:
        raise InvalidImage(InvalidReason.EMPTY, "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
                width, height = image.size
                if width <= 0 or height <= 0:
                    raise InvalidImage(InvalidReason.CORRUPT, f"bad dimensions {width}x{height}")
                if width * height > max_pixels:
                    raise InvalidImage(
                        InvalidReason.TOO_LARGE,
                        f"{width}x{height} = {width * height} pixels exceeds MAX_IMAGE_PIXELS={max_pixels}",
                    )
                if sizes is not None:
                    draft_for_derivatives(image, sizes)
                image.load()
                fmt = image.format or "UNKNOWN"
                if sizes is not None:
                    rendered = _rendered(image, sizes)
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise InvalidImage(
            InvalidReason.NOT_AN_IMAGE, f"not one of the accepted formats ({', '.join(ALLOWED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as exc:
        raise InvalidImage(InvalidReason.TOO_LARGE, str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise InvalidImage(InvalidReason.CORRUPT, f"{type(exc).__name__}: {exc}") from None
    return ImageInfo(
        width=width,
        height=height,
        format=fmt,
        content_type=_CONTENT_TYPES.get(fmt) or Image.MIME.get(fmt, "application/octet-stream"),
        extension=_EXTENSIONS.get(fmt, fmt.lower()),
        rendered=rendered,
    )


def _rendered(image: Image.Image, sizes: DerivativeSizes) -> Rendered | None:
    """The renditions, or None (the scene is stored without derivatives; the next import fills them in)
    if an image that decoded cannot be converted: the image itself is fine, so it is not skipped."""
    try:
        return render(image, sizes)
    except Exception as exc:  # noqa: BLE001 - a derivative never costs a valid image its scene
        logging.getLogger("hf_ingest.derivatives").warning("no derivatives for a %s %s image: %s: %s", image.format, image.mode,
                                     type(exc).__name__, exc)
        return None
