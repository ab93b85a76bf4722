"""Where a dataset's rows come from, in Arrow chunks of bounded size, resumable after a network error.

`ParquetRows` reads parquet data files with pyarrow's own streaming reader: `datasets` materialises
a whole row group at a time (about 2.5x its size in memory: a 79 MB row group cost 240 MB, and a
one-file dataset can be a single row group), where `ParquetFile.iter_batches` with `pre_buffer=False`
and a buffered stream holds only the rows being read. Chunks are sized by bytes, not rows.

`DatasetsRows` reads every other format (`imagefolder`, WebDataset, ...) through `datasets`' own
streaming iterator, with decoding off (the first corrupt image would end a decoding stream).

Both remember the position after the last chunk they handed out (`(file, row)` for parquet,
`IterableDataset.state_dict()` otherwise), so `chunks()` called again after a failure goes on from
there instead of from row 0.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

CHUNK_TARGET_BYTES = 8 * 2**20  # Arrow data read at a time: small next to BATCH_MAX_BYTES
MAX_CHUNK_ROWS = 1024
PARQUET_BUFFER_BYTES = 2**20
DATASETS_CHUNK_ROWS = 32  # `datasets` cannot size its chunks by bytes: few rows, as rows may be large
LISTING_CHUNK_ROWS = 1024  # rows that only name their files (imagefolder, listed for a sync) are small


class RowSource(Protocol):
    def chunks(self) -> Iterator[pa.Table]:
        """Arrow chunks of the split's rows (only the needed columns), from the current position on."""
        ...

    def position(self) -> str:
        """Where reading is, for an error message: the data file and its row, where the format tells."""
        ...


class ParquetRows:
    """The rows of parquet data files, in order, read `iter_batches` at a time with bounded memory."""

    def __init__(
        self, files: Sequence[str], columns: list[str], open_file: Any, row_counts: Sequence[int] | None = None
    ) -> None:
        self.files = list(files)
        self.columns = columns
        self.open_file = open_file  # path -> a binary file object, or the path itself for local files
        self.row_counts = list(row_counts) if row_counts is not None else None  # from the footers
        self.file_index = 0
        self.row_in_file = 0

    def seek(self, row: int) -> None:
        """Start at the split's `row` (a shard's first row): the file holding it, at the row within it."""
        if self.row_counts is None:
            raise ValueError("seeking needs the files' row counts")
        self.file_index, self.row_in_file = len(self.files), 0
        for index, count in enumerate(self.row_counts):
            if row < count:
                self.file_index, self.row_in_file = index, row
                return
            row -= count

    def position(self) -> str:
        if self.file_index >= len(self.files):
            return "the end of the data files"
        return f"{self.files[self.file_index]}, row {self.row_in_file} of that file"

    def chunks(self) -> Iterator[pa.Table]:
        while self.file_index < len(self.files):
            yield from self._file_chunks(self.files[self.file_index], self.row_in_file)
            self.file_index += 1
            self.row_in_file = 0

    def _file_chunks(self, path: str, skip_rows: int) -> Iterator[pa.Table]:
        source = self.open_file(path)
        try:
            parquet = pq.ParquetFile(source, pre_buffer=False, buffer_size=PARQUET_BUFFER_BYTES)
            groups, skip_in_group = _row_groups_from(parquet.metadata, skip_rows)
            if not groups:
                return
            rows = _rows_per_chunk(parquet.metadata, self.columns)
            for batch in parquet.iter_batches(batch_size=rows, row_groups=groups, columns=self.columns, use_threads=False):
                if skip_in_group:
                    dropped = min(skip_in_group, batch.num_rows)
                    batch, skip_in_group = batch.slice(dropped), skip_in_group - dropped
                    if batch.num_rows == 0:
                        continue
                table = pa.Table.from_batches([batch])
                self.row_in_file += table.num_rows
                yield table
        finally:
            if hasattr(source, "close"):
                source.close()


@dataclass(frozen=True)
class Footer:
    """What a parquet file's footer says without its data being read."""

    rows: int
    data_bytes: int  # uncompressed
    schema: str  # the Arrow schema, serialized (base64): the columns' types, kept for the next sync


def parquet_footers(files: Sequence[str], open_footer: Any, threads: int = 8) -> list[Footer]:
    """Each parquet file's footer (a few kilobytes, read a few files at a time): rows and sizes for planning
    shards, the schema for the column types, without reading the data."""
    from concurrent.futures import ThreadPoolExecutor

    def footer(path: str) -> Footer:
        source = open_footer(path)
        try:
            metadata = pq.read_metadata(source)
            data = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
            schema = base64.b64encode(metadata.schema.to_arrow_schema().serialize().to_pybytes()).decode()
            return Footer(int(metadata.num_rows), int(data), schema)
        finally:
            if hasattr(source, "close"):
                source.close()

    with ThreadPoolExecutor(min(threads, max(1, len(files))), thread_name_prefix="footer") as pool:
        return list(pool.map(footer, files))


def parquet_features(serialized_schema: str) -> dict[str, Any]:
    """The columns' `datasets` features from a parquet file's Arrow schema (as `parquet_footers` gives it): as
    `datasets` wrote them (schema metadata) or inferred per column; None for a type `datasets` has no feature
    for (an Arrow map, say), which still reaches the scenes' metadata as JSON."""
    from datasets import Features

    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(serialized_schema)))
    if schema.metadata and b"huggingface" in schema.metadata:
        try:
            return dict(Features.from_arrow_schema(schema))
        except (ValueError, TypeError, NotImplementedError):
            pass
    features: dict[str, Any] = {}
    for column in schema:
        try:
            features[column.name] = Features.from_arrow_schema(pa.schema([column]))[column.name]
        except (ValueError, TypeError, NotImplementedError):
            features[column.name] = None
    return features


def _row_groups_from(metadata: pq.FileMetaData, skip_rows: int) -> tuple[list[int], int]:
    """The row groups still to read after `skip_rows` rows, and how many rows of the first one to drop."""
    groups: list[int] = []
    for index in range(metadata.num_row_groups):
        rows = metadata.row_group(index).num_rows
        if skip_rows >= rows and not groups:
            skip_rows -= rows
            continue
        groups.append(index)
    return groups, skip_rows


def _rows_per_chunk(metadata: pq.FileMetaData, columns: list[str]) -> int:
    """Rows per Arrow chunk so that a chunk holds about CHUNK_TARGET_BYTES, from the footer's sizes."""
    total_rows = metadata.num_rows
    if not total_rows:
        return MAX_CHUNK_ROWS
    wanted = set(columns)
    size = 0
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for column in range(group.num_columns):
            chunk = group.column(column)
            if chunk.path_in_schema.split(".")[0] in wanted:
                size += chunk.total_uncompressed_size
    per_row = max(1, size // total_rows)
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_TARGET_BYTES // per_row))


class DatasetsRows:
    """The rows of a `datasets` streaming split (any format), decoding off, as Arrow chunks."""

    def __init__(self, iterable: Any, columns: list[str], chunk_rows: int = DATASETS_CHUNK_ROWS) -> None:
        self.iterable = iterable.select_columns(columns).with_format("arrow")
        self.columns = columns
        self.chunk_rows = chunk_rows
        self.state: dict[str, Any] | None = None

    def position(self) -> str:
        return "the split's data files"  # `datasets` does not say which file its stream is in

    def chunks(self) -> Iterator[pa.Table]:
        if self.state is not None:
            self.iterable.load_state_dict(self.state)
        for table in self.iterable.iter(batch_size=self.chunk_rows):
            self.state = self.iterable.state_dict()
            yield table


class DatasetsShardRows:
    """Some shards of a `datasets` stream (WebDataset: one per tar file), in order, each one's rows counted into
    `counts`: how a sync reads the files of a split whose rows are only known by reading them."""

    def __init__(self, rows: DatasetsRows, shards: Sequence[int], counts: list[int]) -> None:
        total = rows.iterable.num_shards
        self.shards = list(shards)
        self.parts = [DatasetsRows(rows.iterable.shard(num_shards=total, index=shard, contiguous=True), rows.columns,
                                   rows.chunk_rows) for shard in self.shards]
        self.counts = counts  # one per shard, owned by the caller
        self.index = 0

    def position(self) -> str:
        return f"data file {self.shards[self.index] + 1}" if self.index < len(self.shards) else "the end of the data files"

    def chunks(self) -> Iterator[pa.Table]:
        while self.index < len(self.parts):
            for table in self.parts[self.index].chunks():  # after a failure, each part resumes where it was
                self.counts[self.index] += table.num_rows
                yield table
            self.index += 1
