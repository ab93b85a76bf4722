"""Messy image rows for the tests: valid images of many kinds among broken ones, each with its expected fate."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hf_ingest.hub_formats import encode_image


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    invalid_reason: str | None  # None: valid, must be stored byte for byte
    extension: str = "bin"


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims `width`x`height`: a decompression bomb's calling card."""
    raw = encode_image((1, 1), "PNG", "L", 0)
    ihdr_start = raw.index(b"IHDR")
    ihdr = bytearray(raw[ihdr_start : ihdr_start + 4 + 13])
    ihdr[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return raw[:ihdr_start] + bytes(ihdr) + crc + raw[ihdr_start + 4 + 13 + 4 :]


def corrupt_first_data_page(parquet_file: Path) -> None:
    """Garble the first page header of a parquet file (its footer intact, so the rows are still counted and
    planned): reading its first row group fails, as a damaged file on the Hub would."""
    data = bytearray(parquet_file.read_bytes())
    data[4:68] = b"\xff" * 64  # just after the leading "PAR1"
    parquet_file.write_bytes(bytes(data))


def sixteen_bit_png() -> bytes:
    image = Image.new("I;16", (20, 10))
    for x in range(20):
        image.putpixel((x, 5), x * 3000)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    whole = encode_image((256, 256), "JPEG", color=(10, 200, 30), quality=95)
    return whole[: int(len(whole) * 0.6)]


def encapsulated_postscript() -> bytes:
    """An EPS file: Pillow would hand it to Ghostscript, so it must never be opened."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
        b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
    )


def cases() -> list[Case]:
    """Nine valid images (JPEG, PNG, WebP, GIF, CMYK JPEG, 16-bit PNG, RGBA PNG, TIFF, BMP) and eight
    invalid rows, among them formats Pillow can read but hf-ingest must not (EPS, ICO, TGA)."""
    return [
        Case("jpeg", encode_image((40, 30), "JPEG", color=(1, 2, 3)), None, "jpg"),
        Case("png", encode_image((33, 21), "PNG", color=(9, 8, 7)), None, "png"),
        Case("webp", encode_image((25, 25), "WEBP", color=(50, 60, 70)), None, "webp"),
        Case("gif", encode_image((16, 12), "GIF", "P", 3), None, "gif"),
        Case("cmyk", encode_image((30, 20), "JPEG", "CMYK", (0, 128, 255, 10)), None, "jpg"),
        Case("png16", sixteen_bit_png(), None, "png"),
        Case("rgba", encode_image((18, 18), "PNG", "RGBA", (1, 2, 3, 4)), None, "png"),
        Case("truncated", truncated_jpeg(), "corrupt"),
        Case("empty", b"", "empty"),
        Case("text", b"definitely not an image, just text", "not_an_image"),
        Case("bomb", png_claiming(60_000, 60_000), "too_large"),
        Case("html", b"<html><body>404</body></html>", "not_an_image"),
        Case("tiff", encode_image((21, 13), "TIFF", color=(90, 10, 10)), None, "tif"),
        Case("bmp", encode_image((23, 7), "BMP", color=(5, 10, 90)), None, "bmp"),
        Case("eps", encapsulated_postscript(), "not_an_image"),
        Case("ico", encode_image((32, 32), "ICO", color=(1, 1, 1)), "not_an_image"),
        Case("tga", encode_image((20, 20), "TGA", color=(7, 7, 7)), "not_an_image"),
    ]


def valid_cases() -> list[Case]:
    return [c for c in cases() if c.invalid_reason is None]


def expected_invalid() -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in cases():
        if case.invalid_reason:
            counts[case.invalid_reason] = counts.get(case.invalid_reason, 0) + 1
    return counts
