"""Writers for datasets in the Hub's own on-disk formats, for the sample, the tests and the benchmark.

`write_parquet_dataset` lays files out as `push_to_hub` does (`data/<split>-0000i-of-0000n.parquet`,
with the `datasets` features in the parquet schema metadata, image bytes embedded);
`write_imagefolder` writes the `imagefolder` layout (`<split>/<label>/<file>` plus `metadata.csv` or
`metadata.jsonl`); `write_webdataset` writes WebDataset tar shards (`<split>-0000i.tar`, one `<key>.<ext>`
member per field); `configs_card` is the README front matter that declares named configs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image as PILImage


def encode_image(
    size: tuple[int, int] = (32, 24),
    fmt: str = "JPEG",
    mode: str = "RGB",
    color: Any = (200, 40, 40),
    **save_options: Any,
) -> bytes:
    """A small real image in `fmt`, with a gradient so every (size, color) encodes differently."""
    image = PILImage.new(mode, size, color)
    if mode in ("RGB", "RGBA", "CMYK", "L"):
        width, height = size
        for x in range(0, width, max(1, width // 8)):
            image.putpixel((x, x * height // max(width, 1)), (0,) * len(mode) if mode != "L" else 0)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_options)
    return buffer.getvalue()


def write_parquet_dataset(
    folder: Path,
    rows: Sequence[dict[str, Any]],
    *,
    split: str = "train",
    image_column: str = "image",
    shards: int = 1,
    extra_features: dict[str, Any] | None = None,
    data_dir: str = "data",
    row_group_size: int | None = None,
) -> Path:
    """Write `rows` (image column as raw bytes, None, or `{"bytes", "path"}`) as the Hub's parquet layout.

    `row_group_size` writes row groups of that many rows with pyarrow (the features travel in the
    schema metadata as `datasets` writes them); by default `datasets` chooses, as `push_to_hub` does."""
    from datasets import Dataset, Features, Image, Value

    if not rows:
        raise ValueError("a dataset needs at least one row")
    features: dict[str, Any] = {}
    for name, value in rows[0].items():
        if name == image_column:
            features[name] = Image()
        elif extra_features and name in extra_features:
            features[name] = extra_features[name]
        else:
            features[name] = Value(_value_type(value))
    columns: dict[str, list[Any]] = {name: [] for name in features}
    for row in rows:
        for name in features:
            value = row.get(name)
            if name == image_column and not isinstance(value, dict):  # raw bytes; a dict may give a path
                value = {"bytes": value, "path": None} if value is not None else None
            columns[name].append(value)
    dataset = Dataset.from_dict(columns, features=Features(features))
    target = folder / data_dir
    target.mkdir(parents=True, exist_ok=True)
    for shard in range(shards):
        part = dataset.shard(num_shards=shards, index=shard, contiguous=True)
        path = target / f"{split}-{shard:05d}-of-{shards:05d}.parquet"
        if row_group_size is None:
            part.to_parquet(str(path))
        else:
            import pyarrow.parquet as pq

            table = dataset.data.table  # carries the features in its schema metadata, as datasets writes them
            offset = sum(len(dataset.shard(num_shards=shards, index=i, contiguous=True)) for i in range(shard))
            pq.write_table(table.slice(offset, len(part)), path, row_group_size=row_group_size)
    return folder


def write_parquet_file(path: Path, rows: Sequence[dict[str, Any]], **options: Any) -> Path:
    """One parquet data file at `path` (`data/train-00003-of-00005.parquet`), as `write_parquet_dataset` writes
    them: to lay out a dataset's commits file by file (an append, a file rewritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".parquet-", dir=path.parent))
    try:
        written = write_parquet_dataset(scratch, rows, **options)
        os.replace(next(written.rglob("*.parquet")), path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


def write_imagefolder(
    folder: Path,
    files: Iterable[tuple[str, bytes, dict[str, Any]]],
    *,
    split: str = "train",
    metadata_format: str = "csv",
) -> Path:
    """Write `(relative_name, bytes, metadata)` files as an `imagefolder` split with a `metadata.csv`
    (or `metadata.jsonl`)."""
    split_dir = folder / split
    split_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for name, data, metadata in files:
        target = split_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        records.append({"file_name": name, **metadata})
    if records and len(records[0]) > 1:
        if metadata_format == "jsonl":
            lines = (json.dumps(record) + "\n" for record in records)
            (split_dir / "metadata.jsonl").write_text("".join(lines))
        else:
            with (split_dir / "metadata.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(records[0]))
                writer.writeheader()
                writer.writerows(records)
    return folder


def write_webdataset(
    folder: Path, samples: Sequence[Mapping[str, bytes | str | dict[str, Any]]], *, split: str = "train", shards: int = 1
) -> Path:
    """Write samples (`{"__key__": ..., "jpg": bytes, "json": {...}}`) as WebDataset tar shards."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(samples) // shards)
    for shard in range(shards):
        with tarfile.open(folder / f"{split}-{shard:05d}.tar", "w") as tar:
            for sample in samples[shard * per_shard : (shard + 1) * per_shard]:
                key = str(sample["__key__"])
                for extension, value in sample.items():
                    if extension == "__key__":
                        continue
                    if isinstance(value, dict):
                        data = json.dumps(value).encode()
                    elif isinstance(value, str):
                        data = value.encode()
                    else:
                        data = bytes(value)
                    member = tarfile.TarInfo(f"{key}.{extension}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    return folder


def configs_card(configs: Mapping[str, Mapping[str, str]], title: str = "dataset") -> str:
    """A README.md whose front matter declares named configs: `{config: {split: data_files glob}}`."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        for split, pattern in splits.items():
            lines += [f"  - split: {split}", f"    path: {pattern}"]
    return "\n".join([*lines, "---", f"# {title}", ""])
