"""The benchmark's datasets, written once into .data/bench in the Hub's parquet layout."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image

from hf_ingest.hub_formats import write_parquet_dataset


def _small(i: int) -> bytes:
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


def ensure(root: Path, name: str, count: int) -> Path:
    folder = root / name
    if (folder / "data").exists():
        return folder
    make = _large if name.startswith("large") else _small
    rows = [{"image": make(i), "i": i} for i in range(count)]
    return write_parquet_dataset(folder, rows, shards=max(1, count // 10_000))
