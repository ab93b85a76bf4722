"""The benchmark's datasets, written once into .data/bench in the Hub's own layouts.

Each parquet dataset is ONE file with the row groups `datasets` writes (`to_parquet`, as `push_to_hub`
does): a one-file dataset can be a single row group of tens of megabytes, which is what a reader
that holds whole row groups gets wrong. Photos are real-size JPEGs (~1.2-1.6 MB); a few distinct
encodes are made distinct per row by a JPEG comment segment, so every image is stored once.
"""

from __future__ import annotations

import io
import random
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from hf_ingest.hub_formats import write_parquet_file, write_parquet_dataset

LAYOUT_VERSION = "one-file-v2"  # a dataset written with another layout is written again


def small_image(i: int) -> bytes:
    """A 96x64 JPEG (~2 KB) that differs per index."""
    rng = random.Random(i)
    image = Image.new("RGB", (96, 64), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    for _ in range(12):
        x, y = rng.randrange(96), rng.randrange(64)
        image.paste((rng.randrange(256),) * 3, (x, y, min(96, x + 8), min(64, y + 8)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _large(i: int) -> bytes:
    """A 1600x1200 JPEG (~100-300 KB)."""
    rng = random.Random(i)
    image = Image.effect_noise((400, 300), 40 + i % 20).convert("RGB").resize((1600, 1200))
    image.paste((rng.randrange(256), 0, 0), (0, 0, 200, 200))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _photo_encodes(size: tuple[int, int], count: int = 8) -> list[bytes]:
    """A few real-size camera-like JPEGs (noise does not compress: ~1.2-1.6 MB at 2400x1600)."""
    encodes = []
    for seed in range(count):
        rng = random.Random(seed)
        half = (size[0] // 2, size[1] // 2)
        image = Image.effect_noise(half, 30 + seed).convert("RGB").resize(size)
        image.paste((rng.randrange(256), 80, 20), (0, 0, size[0] // 4, size[1] // 4))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
        encodes.append(buffer.getvalue())
    return encodes


def distinct(jpeg: bytes, i: int) -> bytes:
    """`jpeg` with a comment segment naming `i`: the same picture, a different file (and hash)."""
    payload = f"hf-ingest-bench-{i}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _write_once(folder: Path, write: Callable[[Path], None]) -> Path:
    marker = folder / ".layout"
    if marker.exists() and marker.read_text() == LAYOUT_VERSION:
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # missing, or written with an older layout
    write(folder)
    marker.write_text(LAYOUT_VERSION)
    return folder


def ensure(root: Path, name: str, count: int, files: int = 1, first: int = 0) -> Path:
    """`small-N` / `large-N`: N images in one parquet file (or `files` of them, as a large Hub dataset is);
    `first` shifts which images they are, so two datasets can share no image."""
    make = _large if name.startswith("large") else small_image
    return _write_once(root / name, lambda folder: write_parquet_dataset(
        folder, [{"image": make(first + i), "i": i} for i in range(count)], shards=files
    ))


def ensure_photos(root: Path, name: str, count: int) -> Path:
    """`count` photos of ~1.4 MB in ONE parquet file, in the row groups `datasets` writes."""
    encodes = _photo_encodes((2400, 1600))
    return _write_once(root / name, lambda folder: write_parquet_dataset(
        folder, [{"image": distinct(encodes[i % len(encodes)], i), "i": i} for i in range(count)]
    ))


def ensure_mixed_photos(root: Path, name: str, count: int, files: int = 1) -> Path:
    """`count` distinct photos of ~0.3-2 MB (five camera sizes, in turn) in one parquet file (or `files`,
    written one at a time: a binary column of all of them passes 2 GB, which one Arrow array cannot hold)."""
    encodes = [e for size in ((900, 600), (1200, 800), (1600, 1100), (2000, 1300), (2400, 1600))
               for e in _photo_encodes(size, count=2)]

    def write(folder: Path) -> None:
        for part in range(files):
            rows = [{"image": distinct(encodes[i % len(encodes)], i), "i": i}
                    for i in range(count * part // files, count * (part + 1) // files)]
            write_parquet_file(folder / "data" / f"train-{part:05d}-of-{files:05d}.parquet", rows)

    return _write_once(root / name, write)


def ensure_imagefolder(root: Path, name: str, count: int) -> Path:
    """`count` JPEG files of ~1 MB in the `imagefolder` layout (`train/<class>/<file>.jpg`)."""
    encodes = _photo_encodes((2000, 1400))

    def write(folder: Path) -> None:
        for i in range(count):
            target = folder / "train" / f"class{i % 10}" / f"{i:05d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(distinct(encodes[i % len(encodes)], i))

    return _write_once(root / name, write)
