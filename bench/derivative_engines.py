"""Choosing the derivatives' engine by measurement: per-image cost of validating a photo and making its
256 px and 1024 px WebP, with Pillow (full decode, or `draft` to the preview's DCT scale; WebP `method`
0, 2, 4) and with libvips (pyvips, shrink-on-load `thumbnail_buffer`), on a 12-megapixel camera JPEG
and a 1.5-megapixel one. Median of REPEAT runs, one thread (`python -m bench.derivative_engines`)."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

from PIL import Image

from hf_ingest.derivatives import DerivativeSizes, summarize
from hf_ingest.images import inspect_image
from tests import photos

REPEAT = 9


def timed(work: Callable[[], object]) -> float:
    work()
    runs = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        work()
        runs.append(time.perf_counter() - started)
    return 1000 * statistics.median(runs)


def pillow(data: bytes, draft: bool, method: int) -> None:
    with Image.open(io.BytesIO(data)) as image:
        if draft:
            image.draft("RGB", (1024 * image.width // max(image.size), 1024 * image.height // max(image.size)))
        image.load()
        preview = image.copy()
        preview.thumbnail((1024, 1024), Image.Resampling.BICUBIC, reducing_gap=2.0)
        thumbnail = preview.copy()
        thumbnail.thumbnail((256, 256), Image.Resampling.BICUBIC, reducing_gap=2.0)
        for made in (preview, thumbnail):
            made.save(io.BytesIO(), "WEBP", quality=80, method=method)


def vips(data: bytes) -> None:
    import pyvips

    full = pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="warning")
    full.avg()  # validation: decode every pixel (what Pillow's load() does)
    for size in (1024, 256):
        pyvips.Image.thumbnail_buffer(data, size).webpsave_buffer(Q=80, effort=0)


def main() -> int:
    cases = {"12 MP camera JPEG (4032x3024, ~3 MB)": photos.phone_jpeg(),
             "1.5 MP JPEG (1411x1411)": (photos.SAMPLES / "retina.jpg").read_bytes()}
    for name, data in cases.items():
        print(f"\n{name}: ms per image, one thread, median of {REPEAT}")
        rows = {
            "validate only (full decode, today's import)": lambda: inspect_image(data, 10**9, None),
            "Pillow: full decode + both WebP, method 4 (Pillow's default)": lambda: pillow(data, False, 4),
            "Pillow: full decode + both WebP, method 0": lambda: pillow(data, False, 0),
            "Pillow: draft decode + both WebP, method 2": lambda: pillow(data, True, 2),
            "Pillow: draft decode + both WebP, method 0": lambda: pillow(data, True, 0),
            "libvips: full decode (validate) + 2 shrink-on-load thumbnails, effort 0": lambda: vips(data),
            "hf-ingest (Pillow draft, method 0, placeholder, pHash)":
                lambda: summarize([inspect_image(data, 10**9, DerivativeSizes()).rendered]),  # type: ignore[list-item]
        }
        for label, work in rows.items():
            print(f"  {label:76} {timed(work):7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
