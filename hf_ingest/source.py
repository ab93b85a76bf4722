"""Reading a dataset as a stream of image rows, from the Hub or a local folder in the Hub's formats.

`load_dataset(..., streaming=True)` never downloads the whole dataset. The image column
is cast to `Image(decode=False)`: with decoding on, the first corrupt image would end the
iterator and the rest of the dataset would be lost. We decode (and judge) images ourselves.
"""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hf_ingest.transient import PermanentIngestError


@dataclass(frozen=True)
class DatasetRequest:
    """What to import; the flow's parameters, minus the job."""

    dataset: str
    config: str | None = None
    split: str = "train"
    image_column: str | None = None
    limit: int | None = None

    def as_params(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "config": self.config,
            "split": self.split,
            "image_column": self.image_column,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class ImageRow:
    """One row of the stream: the image's bytes (parquet/Hub) or only its path (imagefolder)."""

    row_index: int
    data: bytes | None
    path: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetStream:
    """An opened dataset: which image column, which config, and the rows in batches."""

    request: DatasetRequest
    config_name: str
    image_column: str
    scalar_columns: list[str]
    _iterable: Any

    def batches(self, batch_size: int, max_bytes: int | None = None) -> Iterator[list[ImageRow]]:
        """Rows in order, at most `batch_size` rows and about `max_bytes` of image bytes at a time.

        The byte bound keeps memory flat whatever the image sizes: a batch of 1,024 thumbnails
        and a batch of a few hundred 12-megapixel photos cost about the same."""
        row_index = 0
        batch: list[ImageRow] = []
        size = 0
        for columns in self._iterable.iter(batch_size=batch_size):
            images = columns[self.image_column]
            scalars = {name: columns[name] for name in self.scalar_columns if name in columns}
            for offset, image in enumerate(images):
                image = image or {}
                row = ImageRow(
                    row_index=row_index,
                    data=image.get("bytes"),
                    path=image.get("path"),
                    metadata={name: _json_scalar(values[offset]) for name, values in scalars.items()},
                )
                row_index += 1
                batch.append(row)
                size += len(row.data or b"")
                if len(batch) >= batch_size or (max_bytes is not None and size >= max_bytes):
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch


def canonical_dataset(dataset: str) -> str:
    """A local folder by its absolute path (so scenes stay unique whatever the working directory); Hub ids as given."""
    folder = Path(dataset).expanduser()
    return str(folder.resolve()) if folder.is_dir() else dataset


def _json_scalar(value: Any) -> Any:
    """JSON (and Postgres jsonb) has no NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def find_image_column(features: Any, requested: str | None, dataset: str) -> str:
    """The requested column if it holds images, else the first Image feature; a clear error otherwise."""
    from datasets import Image

    if features is None:
        raise PermanentIngestError(
            f"cannot read the column types of {dataset!r}; pass image_column explicitly"
        )
    if requested is not None:
        if requested not in features:
            raise PermanentIngestError(
                f"image column {requested!r} is not in {dataset!r}; columns: {', '.join(features)}"
            )
        if not isinstance(features[requested], Image):
            raise PermanentIngestError(
                f"column {requested!r} of {dataset!r} is {features[requested]!r}, not an Image feature"
            )
        return requested
    for name, feature in features.items():
        if isinstance(feature, Image):
            return name
    raise PermanentIngestError(
        f"dataset {dataset!r} has no image column (no column with the Image feature); "
        f"columns: {', '.join(features) or 'none'}"
    )


def _is_scalar_feature(feature: Any) -> bool:
    from datasets import ClassLabel, Value

    return isinstance(feature, (Value, ClassLabel))


def open_dataset(request: DatasetRequest, hf_token: str | None = None) -> DatasetStream:
    """Open the dataset as a stream (Hub id or local folder); fails fast on anything permanent."""
    from datasets import Image, load_dataset

    iterable = load_dataset(
        request.dataset,
        request.config,
        split=request.split,
        streaming=True,
        token=hf_token,
    )
    features = iterable.features
    image_column = find_image_column(features, request.image_column, request.dataset)
    iterable = iterable.cast_column(image_column, Image(decode=False))
    if request.limit is not None:
        iterable = iterable.take(request.limit)
    scalar_columns = [
        name for name, feature in features.items() if name != image_column and _is_scalar_feature(feature)
    ]
    config_name = request.config or getattr(iterable.info, "config_name", None) or "default"
    return DatasetStream(
        request=request,
        config_name=config_name,
        image_column=image_column,
        scalar_columns=scalar_columns,
        _iterable=iterable,
    )
