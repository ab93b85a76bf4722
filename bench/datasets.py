"""The benchmark's datasets, written once into .data/bench in the Hub's parquet layout."""

from __future__ import annotations

import io
import random
import shutil
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


ROWS_PER_SHARD = 5_000


def ensure(root: Path, name: str, count: int) -> Path:
    """Every dataset in shards of at most ROWS_PER_SHARD rows (one row group each): the 5,000 and
    the 50,000-image runs then read the same row groups, and their peak RSS compares image counts,
    not file layouts."""
    folder = root / name
    shards = max(1, -(-count // ROWS_PER_SHARD))
    if len(list((folder / "data").glob("*.parquet"))) == shards:
        return folder
    shutil.rmtree(folder, ignore_errors=True)  # missing, or written with an older layout
    make = _large if name.startswith("large") else _small
    rows = [{"image": make(i), "i": i} for i in range(count)]
    return write_parquet_dataset(folder, rows, shards=shards)
