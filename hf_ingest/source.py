"""A dataset split as a stream of image rows, from the Hub (at one commit) or a local folder in the Hub's formats.

Opening resolves everything that can fail for good before any image is read: the commit a revision
names, the configuration, the split, the image column. Reading never downloads the whole dataset;
batches close at `batch_size` images or `max_bytes` of image bytes, whichever comes first, so memory
is bounded by bytes whatever the image sizes or the file layout. A network error while reading is
retried with backoff and the stream goes on where it stopped; a refusal fails at once, naming the
dataset.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from hf_ingest.backoff import backoff_delay
from hf_ingest.data_file_ids import data_files, file_identities
from hf_ingest.dataset_files import DatasetFiles, FileRef, HubDatasetFiles, LocalDatasetFiles
from hf_ingest.images import InvalidImage
from hf_ingest.jobstore.model import KnownFile, SplitKey
from hf_ingest.metadata import MetadataColumns
from hf_ingest.row_sources import (
    LISTING_CHUNK_ROWS,
    DatasetsRows,
    DatasetsShardRows,
    Footer,
    ParquetRows,
    RowSource,
    parquet_features,
    parquet_footers,
)
from hf_ingest.sync_plan import DataFile
from hf_ingest.transient import PermanentIngestError, is_transient

logger = logging.getLogger("hf_ingest.source")

STREAM_READ_ATTEMPTS = 8  # consecutive failures of the Hub while streaming, before the import fails
TAIL_BATCH_MIN_ROWS = 256  # a batch is a Prefect task (~80 ms of CPU): a shard's last ones stay this big


@dataclass(frozen=True)
class DatasetRequest:
    """What to import; the flow's parameters, minus the job."""

    dataset: str
    config: str | None = None
    split: str = "train"
    revision: str = "main"
    image_column: str | None = None
    limit: int | None = None

    def as_params(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "config": self.config,
            "split": self.split,
            "revision": self.revision,
            "image_column": self.image_column,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class ImageRow:
    """One image of the stream: its bytes (parquet, WebDataset) or the dataset file holding it (imagefolder).

    `problem` is what the reader already knows is wrong (a path outside the dataset, a missing file):
    the row is counted under that reason without being read."""

    row_index: int
    image_column: str  # `image`, or `images[2]` for the third image of a list column
    data: bytes | None
    file: FileRef | None = None
    problem: InvalidImage | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else (self.file.size if self.file else 0)


@dataclass(frozen=True)
class ImageSlot:
    """Where a row keeps its image(s): one `Image` column, or a list of images (one scene each)."""

    column: str
    is_list: bool = False

    def images(self, value: Any) -> Iterator[tuple[str, Any]]:
        if not self.is_list:
            yield self.column, value
            return
        for position, item in enumerate(value or ()):
            yield f"{self.column}[{position}]", item


@dataclass
class DatasetStream:
    """An opened dataset split at one commit, read as batches of `ImageRow`."""

    request: DatasetRequest
    config_name: str
    revision: str | None  # the commit sha read; None for a local folder
    slot: ImageSlot
    metadata: MetadataColumns
    files: DatasetFiles
    rows: RowSource
    max_image_bytes: int
    total_rows: int | None = None  # the split's rows (before `limit`), where the format says it up front
    total_bytes: int | None = None  # the split's data bytes, where the format says it (parquet)
    data_files: tuple[DataFile, ...] | None = None  # parquet: the files; imagefolder: the rows (what syncs compare)
    columns_id: str = ""  # the image and metadata columns with their features: scenes are made from these
    rows_read: int = 0  # rows the stream has gone past (after reading: the split's rows, for any format)
    first_row: int = 0  # a shard reads the split's rows [first_row, end_row)
    end_row: int | None = None
    only: tuple[tuple[int, int], ...] | None = None  # rows to read where the format cannot seek; others unread
    unsized_files: tuple[DataFile, ...] = ()  # WebDataset: the tars (rows unknown until read), one stream shard each
    unsized_rows: list[int] = field(default_factory=list)  # the rows read of the tars `parts` read whole
    hf_token: str | None = field(default=None, repr=False)
    sleep: Callable[[float], None] = time.sleep
    # a shard's run reads no row before it holds it: lease(n) reserves up to row n, returns how far it may read
    lease: Callable[[int], int] | None = field(default=None, repr=False)

    @property
    def image_column(self) -> str:
        return self.slot.column

    @property
    def split(self) -> SplitKey:
        """Whose scenes these are: the dataset, config, split and image column."""
        return SplitKey(self.request.dataset, self.config_name, self.request.split, self.image_column)

    @property
    def rows_to_read(self) -> int | None:
        """How many rows the import will read, if known: the split's rows, or the limit if smaller."""
        limits = [n for n in (self.total_rows, self.request.limit, self.end_row) if n is not None]
        return min(limits) - self.first_row if limits else None

    def bytes_of(self, rows: int | None) -> int:
        """About how many bytes of data `rows` rows of the split hold (0 if unknown): the split's, pro rata."""
        if not self.total_bytes or not self.total_rows or rows is None:
            return 0
        return self.total_bytes * rows // self.total_rows

    @property
    def shardable(self) -> bool:
        """Whether the split can be read from any row on (parquet, with its footers' row counts)."""
        return isinstance(self.rows, ParquetRows) and self.rows.row_counts is not None

    def rows_between(self, first_row: int, end_row: int, lease: Callable[[int], int] | None = None) -> DatasetStream:
        """This stream restricted to the split's rows [first_row, end_row) (a shard, or what is left of one);
        with a `lease`, only as far as it grants (see the field)."""
        if not isinstance(self.rows, ParquetRows):
            raise ValueError("only parquet datasets can be read from a given row")
        rows = ParquetRows(self.rows.files, self.rows.columns, self.rows.open_file, self.rows.row_counts)
        rows.seek(first_row)
        return replace(self, rows=rows, first_row=first_row, end_row=end_row, lease=lease)

    def parts(self, ranges: Sequence[tuple[int, int]], sized: Sequence[DataFile] = ()) -> list[DatasetStream]:
        """Streams that read only the split's row `ranges` (what a sync must read): one per range, seeking to it,
        where the format allows (parquet); for WebDataset, the tars of each range (`sized`: the leading tars
        with their rows, from the record) and then every tar after them, whole, counting their rows into
        `unsized_rows`; else one pass that skips the other rows, whose files it never opens (imagefolder rows
        only name their files)."""
        if self.shardable:
            return [self.rows_between(first, end) for first, end in ranges]
        if not self.unsized_files or not isinstance(self.rows, DatasetsRows):
            return [replace(self, only=tuple(ranges))]
        parts: list[DatasetStream] = []
        for first, end in ranges:
            tars = [index for index, tar in enumerate(sized) if first <= tar.first_row and tar.end_row <= end]
            parts.append(replace(self, rows=DatasetsShardRows(self.rows, tars, [0] * len(tars)), first_row=first,
                                 end_row=end))
        tail = list(range(len(sized), len(self.unsized_files)))
        self.unsized_rows = [0] * len(tail)
        if tail:
            parts.append(replace(self, rows=DatasetsShardRows(self.rows, tail, self.unsized_rows),
                                 first_row=sized[-1].end_row if sized else 0))
        return parts

    def count_rows(self, tars: list[int]) -> list[int]:
        """The rows of these tars (positions in `unsized_files`), read through without importing anything."""
        if not isinstance(self.rows, DatasetsRows):
            raise ValueError("only a WebDataset stream counts the rows of its tars")
        counts = [0] * len(tars)
        for _ in self._chunks_resumed(DatasetsShardRows(self.rows, tars, counts)):
            pass
        return counts

    def batches(self, batch_size: int, max_bytes: int) -> Iterator[list[ImageRow]]:
        """Images in order, at most `batch_size` of them and about `max_bytes` of image bytes per batch."""
        row_index = self.first_row
        batch: list[ImageRow] = []
        size = 0
        limits = [n for n in (self.request.limit, self.end_row) if n is not None]
        if self.only is not None:
            limits.append(self.only[-1][1] if self.only else 0)
        limit = min(limits) if limits else None
        if limit is not None and row_index >= limit:
            return
        rows_per_batch = batch_size
        try:
            for table in self._chunks_resumed():
                if self.lease is not None:  # another run may have taken the shard's rest
                    granted = self.lease(row_index + table.num_rows)
                    if granted < row_index + table.num_rows:  # it has: the shard ends there now
                        self.end_row = limit = granted if limit is None else min(limit, granted)
                        if row_index >= limit:
                            break
                if limit is not None and row_index + table.num_rows > limit:
                    table = table.slice(0, max(0, limit - row_index))
                if self.lease is not None and limit is not None:
                    rows_per_batch = tail_batch_rows(batch_size, limit - row_index)
                for row in self._image_rows(table, row_index):
                    if self.only is not None and not _within(self.only, row.row_index):
                        continue
                    batch.append(row)
                    size += min(row.size, self.max_image_bytes)
                    if len(batch) >= rows_per_batch or size >= max_bytes:
                        yield batch
                        batch, size = [], 0
                row_index += table.num_rows
                self.rows_read = row_index
                if limit is not None and row_index >= limit:
                    break
        except Exception:
            if batch:  # the rows read before the failure are still imported (and checkpointed)
                yield batch
            raise
        if batch:
            yield batch

    def rows_as_files(self, rows: RowSource) -> tuple[DataFile, ...]:
        """Each row of a split whose rows name their image files (imagefolder) as a data file of one row, for
        a sync to compare: its content id covers its image files' content ids (from the listing) and its
        metadata. `rows` is a second reader of the split: this reads its rows, not one image."""
        listed: list[DataFile] = []
        row_index = self.first_row
        for table in self._chunks_resumed(rows):
            identities: dict[int, list[Any]] = {row_index + offset: [] for offset in range(table.num_rows)}
            names: dict[int, list[str]] = {index: [] for index in identities}
            for image in self._image_rows(table, row_index):
                identities[image.row_index].append([image.image_column, _image_identity(image), image.metadata])
                if image.file is not None:
                    names[image.row_index].append(image.file.location.removeprefix(self.files.root).lstrip("/"))
            for index, identity in identities.items():
                digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
                listed.append(DataFile(",".join(names[index])[:1000], f"row:{digest[:40]}", 1, index))
            row_index += table.num_rows
        return tuple(listed)

    def _image_rows(self, table: Any, first_row: int) -> Iterator[ImageRow]:
        """The images of an Arrow chunk whose first row is the split's `first_row`, each with its row's metadata."""
        images = table.column(self.slot.column).to_pylist()
        columns = {name: table.column(name).to_pylist() for name in self.metadata.columns}
        for offset, value in enumerate(images):
            metadata = self.metadata.row({name: values[offset] for name, values in columns.items()})
            for column, image in self.slot.images(value):
                yield self._image_row(first_row + offset, column, image, metadata)

    def _image_row(self, row_index: int, column: str, image: Any, metadata: dict[str, Any]) -> ImageRow:
        image = image or {}
        data, path = image.get("bytes"), image.get("path")
        if data is not None or not path:
            return ImageRow(row_index, column, data, metadata=metadata)
        try:
            return ImageRow(row_index, column, None, file=self.files.locate(path), metadata=metadata)
        except InvalidImage as problem:
            return ImageRow(row_index, column, None, problem=problem, metadata=metadata)

    def _chunks_resumed(self, rows: RowSource | None = None) -> Iterator[Any]:
        """The row source's chunks; a transient failure is retried with backoff and resumes after the last chunk."""
        rows = rows or self.rows
        failures = 0
        while True:
            try:
                for table in rows.chunks():
                    failures = 0
                    yield table
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise _permanent(exc, self.request, self.hf_token, position=rows.position()) from exc
                failures += 1
                if failures >= STREAM_READ_ATTEMPTS:
                    raise
                delay = backoff_delay(failures - 1, exc, base_delay=1.0, max_delay=30.0)
                logger.warning(
                    "reading %s failed (%s: %s); resuming in %.1f s, attempt %d of %d",
                    self.request.dataset, type(exc).__name__, str(exc)[:200], delay, failures + 1, STREAM_READ_ATTEMPTS,
                )
                self.sleep(delay)


def tail_batch_rows(batch_size: int, rows_left: int) -> int:
    """A shard's batch size with `rows_left` rows of it to read: its last rows go in smaller batches (down to an
    eighth, never under TAIL_BATCH_MIN_ROWS), so that its last batches in flight are little of it and the rows
    after them can still be split off to a run that has finished (flows/import_shard.py)."""
    return max(min(batch_size, TAIL_BATCH_MIN_ROWS), batch_size // 8, min(batch_size, rows_left // 4))


def _within(ranges: Sequence[tuple[int, int]], row: int) -> bool:
    """Whether `row` lies in one of the sorted, disjoint `ranges` [first, end)."""
    position = bisect.bisect_right(ranges, (row, math.inf)) - 1
    return position >= 0 and ranges[position][0] <= row < ranges[position][1]


def _image_identity(image: ImageRow) -> str:
    """What says a row's image is the same as before without reading it: its file's content id, or the digest
    of its bytes when the row holds them; a file without an id never matches (it is read)."""
    if image.file is not None:
        return image.file.content_id or f"unknown:{uuid.uuid4()}"
    if image.data is not None:
        return "sha256:" + hashlib.sha256(image.data).hexdigest()
    return f"problem:{image.problem.reason.value}" if image.problem is not None else "none"


def _permanent(
    exc: Exception, request: DatasetRequest, token: str | None, opening: bool = False, position: str | None = None
) -> Exception:
    """A refusal from the Hub as a message naming the dataset; while opening, any other error too; while
    reading, an error of the data itself (a corrupt parquet page) naming the file and row it is at."""
    from hf_ingest.hub import describe_refusal

    refusal = describe_refusal(exc, request.dataset, request.revision, token)
    if refusal:
        return PermanentIngestError(refusal)
    if opening:
        return PermanentIngestError(
            f"cannot open {request.dataset!r} (config {request.config or 'default'!r}, split {request.split!r}): "
            f"{type(exc).__name__}: {str(exc)[:500]}"
        )
    if position is not None and isinstance(exc, (OSError, pa.ArrowException)):
        detail = " ".join(str(exc).split())[:500]
        return PermanentIngestError(f"cannot read {request.dataset!r} at {position}: {type(exc).__name__}: {detail}")
    return exc


def canonical_dataset(dataset: str) -> str:
    """A local folder by its absolute path (so scenes stay unique whatever the working directory); Hub ids as given."""
    folder = Path(dataset).expanduser()
    return str(folder.resolve()) if folder.is_dir() else dataset


def find_image_slot(features: Any, requested: str | None, dataset: str) -> ImageSlot:
    """The requested column if it holds images, else the first image column; a clear error otherwise.

    An `Image` column gives one scene per row; a list of images gives one scene per image, each with
    its position (`images[0]`, `images[1]`, ...). Images inside a struct are refused, naming the column."""
    if features is None:
        raise PermanentIngestError(f"cannot read the column types of {dataset!r}; pass image_column explicitly")
    columns = ", ".join(f"{name} ({_describe(feature)})" for name, feature in features.items()) or "none"
    if requested is not None:
        if requested not in features:
            raise PermanentIngestError(f"image column {requested!r} is not in {dataset!r}; columns: {columns}")
        slot = _slot(requested, features[requested])
        if slot is None:
            raise PermanentIngestError(_not_importable(requested, features[requested], dataset))
        return slot
    slots = [slot for name, feature in features.items() if (slot := _slot(name, feature)) is not None]
    singles = [slot for slot in slots if not slot.is_list]
    if singles or slots:
        return (singles or slots)[0]
    nested = [name for name, feature in features.items() if _contains_image(feature)]
    if nested:
        raise PermanentIngestError(_not_importable(nested[0], features[nested[0]], dataset))
    raise PermanentIngestError(
        f"dataset {dataset!r} has no image column (no column with the Image feature); columns: {columns}"
    )


def _slot(name: str, feature: Any) -> ImageSlot | None:
    from datasets import Image, LargeList, List

    if isinstance(feature, Image) or _is_image_storage(feature):
        return ImageSlot(name)
    if isinstance(feature, (List, LargeList)) and (isinstance(feature.feature, Image) or _is_image_storage(feature.feature)):
        return ImageSlot(name, is_list=True)
    return None


def _is_image_storage(feature: Any) -> bool:
    """`{bytes: binary, path: string}`: how an Image column is stored, in a parquet file written
    without `datasets`' schema metadata (pandas, polars, Spark)."""
    return isinstance(feature, dict) and set(feature) == {"bytes", "path"}


def _contains(feature: Any, kinds: tuple[type, ...]) -> bool:
    """Whether `feature` is, or holds somewhere inside (structs, lists), a feature of one of `kinds`."""
    if isinstance(feature, kinds):
        return True
    if isinstance(feature, dict):
        return any(_contains(inner, kinds) for inner in feature.values())
    inner = getattr(feature, "feature", None)
    return inner is not None and _contains(inner, kinds)


def _contains_image(feature: Any) -> bool:
    from datasets import Image

    return _contains(feature, (Image,))


def _is_media(feature: Any) -> bool:
    """Images, audio and video are not metadata (they are media, possibly large)."""
    from datasets import Audio, Image, Video

    return _contains(feature, (Image, Audio, Video))


def _describe(feature: Any) -> str:
    text = repr(feature)
    return text if len(text) <= 80 else text[:77] + "..."


def _not_importable(name: str, feature: Any, dataset: str) -> str:
    return (
        f"column {name!r} of {dataset!r} is {_describe(feature)}: hf-ingest imports an Image column or a "
        "list of images; images inside a struct are not imported"
    )


KnownFiles = Callable[[list[str]], dict[str, KnownFile]]  # content ids -> what was read of those files before


def open_dataset(request: DatasetRequest, hf_token: str | None = None, max_image_bytes: int = 100 * 2**20,
                 known_files: KnownFiles | None = None) -> DatasetStream:
    """Open the split (Hub id at its resolved commit, or local folder); fails fast on anything permanent.

    `known_files` gives the rows and schema of data files imported before, by content id: their footers are
    not read again (a sync of a dataset of thousands of files would otherwise read every footer to find the
    few that changed)."""
    from hf_ingest.hub import hub_filesystem, resolve_commit

    local = Path(request.dataset)
    if local.is_dir():
        files: DatasetFiles = LocalDatasetFiles(local)
        commit, filesystem = None, None
    else:
        commit = resolve_commit(request.dataset, request.revision, hf_token)
        filesystem = hub_filesystem(hf_token)
        files = HubDatasetFiles(request.dataset, commit, filesystem)
    builder = _builder(request, commit, hf_token)
    parquet_files = _parquet_files(builder, request.split)
    total_rows: int | None = None
    total_bytes: int | None = None
    row_counts: list[int] | None = None
    listed: tuple[DataFile, ...] | None = None
    if parquet_files is not None:  # read with pyarrow: memory bounded by bytes, not by row groups
        open_file = (lambda path: filesystem.open(path, "rb")) if filesystem is not None else (lambda path: path)
        open_footer = (lambda path: filesystem.open(path, "rb", block_size=2**16)) if filesystem is not None else open_file
        identities = file_identities(parquet_files, files.root, filesystem)
        known = known_files([i.content_id for i in identities]) if known_files else {}
        unread = [i.path for i in identities if i.content_id not in known or not known[i.content_id].schema]
        footers = dict(zip(unread, parquet_footers(unread, open_footer), strict=True)) if unread else {}
        described = [footers.get(i.path) or Footer(known[i.content_id].rows, i.size, known[i.content_id].schema)
                     for i in identities]
        row_counts = [footer.rows for footer in described]
        total_rows, total_bytes = sum(row_counts), sum(footer.data_bytes for footer in described)
        listed = data_files(identities, described)
        declared = dict(builder.info.features or {})  # from the README's dataset_info, with ClassLabel names
        features = {**parquet_features(described[0].schema), **declared}
    else:
        iterable = _streaming_split(builder, request, hf_token)
        features = dict(iterable.features or {})
    slot = find_image_slot(features, request.image_column, request.dataset)
    metadata_columns = [name for name, feature in features.items() if name != slot.column and not _is_media(feature)]
    columns = [slot.column, *metadata_columns]
    rows: RowSource = (
        ParquetRows(parquet_files, columns, open_file, row_counts)
        if parquet_files is not None
        else DatasetsRows(iterable.decode(False), columns)
    )
    stream = DatasetStream(
        request=request,
        config_name=builder.config.name or "default",
        revision=commit,
        slot=slot,
        metadata=MetadataColumns(features, metadata_columns),
        files=files,
        rows=rows,
        max_image_bytes=max_image_bytes,
        total_rows=total_rows,
        total_bytes=total_bytes,
        data_files=listed,
        columns_id=repr([(name, repr(features.get(name))) for name in columns]),
        hf_token=hf_token,
    )
    if request.limit is not None:  # a part of the split: never compared with its record (no sync to plan)
        return stream
    if builder.name == "imagefolder":  # rows name their files: listing them reads no image, and a sync compares them
        listed = stream.rows_as_files(DatasetsRows(iterable.decode(False), columns, LISTING_CHUNK_ROWS))
        stream = replace(stream, data_files=listed, total_rows=len(listed))
    elif builder.name == "webdataset":  # one stream shard per tar, in order: a sync compares them (rows unknown)
        tars = _split_files(builder, request.split)
        if iterable.num_shards == len(tars):
            identities = file_identities(tars, files.root, filesystem)
            stream = replace(stream, unsized_files=tuple(DataFile(i.name, i.content_id, 0, 0) for i in identities))
    return stream


def _builder(request: DatasetRequest, commit: str | None, token: str | None) -> Any:
    """The dataset's builder at the commit: its configs, data files and declared features.

    Transient errors propagate (the open-dataset task retries them); anything else is for good:
    a refusal of the Hub, a config that does not exist, a folder in no known format."""
    from datasets import load_dataset_builder

    try:
        return load_dataset_builder(request.dataset, request.config, revision=commit, token=token or False)
    except Exception as exc:
        if is_transient(exc):
            raise
        raise _permanent(exc, request, token, opening=True) from exc


def _streaming_split(builder: Any, request: DatasetRequest, token: str | None) -> Any:
    """The split as `datasets`' streaming `IterableDataset` (features resolved), for formats other than parquet."""
    try:
        return builder.as_streaming_dataset(split=request.split)
    except Exception as exc:
        if is_transient(exc):
            raise
        raise _permanent(exc, request, token, opening=True) from exc


def _parquet_files(builder: Any, split: str) -> list[str] | None:
    """The split's parquet files, when the builder reads plain parquet (no column subset or filter)."""
    config = builder.config
    if builder.name != "parquet" or getattr(config, "filters", None) or getattr(config, "columns", None):
        return None
    return _split_files(builder, split)


def _split_files(builder: Any, split: str) -> list[str]:
    """The data files of `split`; a split the dataset does not have fails, naming the ones it has."""
    config = builder.config
    splits = {str(name): [str(f) for f in files] for name, files in (config.data_files or {}).items()}
    if split not in splits or not splits[split]:
        raise PermanentIngestError(
            f"split {split!r} is not in {getattr(builder, 'repo_id', None) or 'the dataset'!r} (config {config.name!r}); "
            f"splits: {', '.join(sorted(splits)) or 'none'}"
        )
    return splits[split]
