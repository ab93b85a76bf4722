"""Planning a sync: which data files of the new commit must be read, which rows only moved, where the split ends.

An import of a split imported before compares the data files at the new commit with the split's layout (the
files its scenes were recorded from, `split_files`): a file whose content id is the same is not read again.
If it also starts at the same row, its scenes are already right; if a file before it grew or shrank, its
scenes move (row identity is the row's position in the split) without their images being read. Every other
file is read as a first import would read it. Rows at or after the new end of the split are gone.

The plan is plain data; the flow applies it (`JobStore.record_layout`, then reading the ranges) and records
the layout with every file done at the end, so a sync that crashes half-way is planned again from where it
got: the moves it made are in the layout it recorded first, and the files it had not finished are pending.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hf_ingest.jobstore.model import LayoutFile, RowMove, SplitLayout


@dataclass(frozen=True)
class DataFile:
    """A data file of the split at the commit being imported, in the split's order."""

    name: str  # inside the dataset (`data/train-00000-of-00004.parquet`)
    content_id: str  # `sha256:...` (Hub LFS), `git:...` (Hub blob), `local:<size>:<mtime_ns>`
    rows: int
    first_row: int
    schema: str | None = None  # the Arrow schema from its footer (serialized), recorded for the next sync

    @property
    def end_row(self) -> int:
        return self.first_row + self.rows

    def recorded(self, done: bool, revision: str | None, schema: str | None = None) -> LayoutFile:
        """This file as the split's layout records it."""
        return LayoutFile(self.name, self.content_id, self.rows, self.first_row, done, revision, schema or self.schema)


@dataclass(frozen=True)
class SyncPlan:
    """What a sync does: record `layout` (with `moves`), read `read`, then record it with every file done."""

    layout: SplitLayout  # the kept files done, the files to read pending
    moves: tuple[RowMove, ...]
    read: tuple[tuple[int, int], ...]  # row ranges [first, end) of the files to read, merged where adjacent
    end_row: int | None  # the split's rows at the new commit (scenes at or after it are removed); None: unsized
    files_read: int
    files_kept: int
    rows_unchanged: int  # rows of files kept where they were
    rows_moved: int  # rows of files kept that moved
    changes_layout: bool  # False: the split is exactly as recorded (nothing to read, move, remove or record)
    unsized: int = 0  # files read whole after the others, whose rows are known once read (the layout's last ones)

    @property
    def idle(self) -> bool:
        """The split is exactly as recorded and done: nothing to read, move, remove or record."""
        return not self.changes_layout and not self.read

    @property
    def rows_to_read(self) -> int | None:
        """Rows the sync reads; None if some are in unsized files."""
        return None if self.unsized else sum(end - first for first, end in self.read)

    def completed(self, unsized_rows: Sequence[int] = ()) -> tuple[SplitLayout, int | None]:
        """The layout once every file has been read (the unsized ones with the rows read of them): what the next
        sync compares with; and the split's end if only reading told it (scenes after it are removed then)."""
        if len(unsized_rows) != self.unsized:
            raise ValueError(f"{self.unsized} unsized files, {len(unsized_rows)} row counts")
        files = [replace(f, done=True) for f in self.layout.files]
        if not self.unsized:
            return replace(self.layout, files=tuple(files)), None
        first_row = files[-self.unsized].first_row
        for position, rows in enumerate(unsized_rows, start=len(files) - self.unsized):
            files[position] = replace(files[position], rows=rows, first_row=first_row)
            first_row += rows
        return replace(self.layout, files=tuple(files)), first_row


def plan_sync(files: Sequence[DataFile], previous: SplitLayout | None, fingerprint: str,
              revision: str | None, unsized: Sequence[DataFile] = ()) -> SyncPlan:
    """The plan for `files` (the new commit's) against `previous` (None, or another fingerprint: read all).

    `unsized` files follow `files` and are read whole, their rows unknown until then (WebDataset tars after
    the first new or changed one): the split's end is only known once they are read."""
    usable: dict[tuple[str, int], list[LayoutFile]] = {}  # by content and rows: a split may have 100,000s of files
    if previous and previous.fingerprint == fingerprint:
        for recorded in previous.files:
            if recorded.done:
                usable.setdefault((recorded.content_id, recorded.rows), []).append(recorded)
    layout: list[LayoutFile] = []
    moves: list[RowMove] = []
    read: list[tuple[int, int]] = []
    unchanged = moved = kept = 0
    for file in files:
        match = _take_match(usable, file)
        if match is None:
            layout.append(file.recorded(False, revision))
            if file.rows:
                read.append((file.first_row, file.end_row))
            continue
        kept += 1
        layout.append(file.recorded(True, match.revision, match.schema))
        shift = file.first_row - match.first_row
        if shift == 0:
            unchanged += file.rows
        elif file.rows:
            moved += file.rows
            moves.append(RowMove(match.first_row, match.end_row, shift))
    end_row = files[-1].end_row if files else 0
    layout.extend(replace(f, rows=0, first_row=end_row).recorded(False, revision) for f in unsized)
    new = SplitLayout(fingerprint, tuple(layout))
    return SyncPlan(
        layout=new, moves=tuple(_merged_moves(moves)), read=tuple(_merged_ranges(read)),
        end_row=None if unsized else end_row, unsized=len(unsized),
        files_read=len(files) - kept + len(unsized), files_kept=kept, rows_unchanged=unchanged, rows_moved=moved,
        changes_layout=previous != new or _previous_end(previous) != end_row or bool(unsized),
    )


def sized_files(files: Sequence[DataFile], previous: SplitLayout | None, fingerprint: str,
                count_rows: Callable[[list[int]], list[int]]) -> tuple[list[DataFile], list[DataFile]]:
    """For files whose rows are only known by reading them (WebDataset tars, listed with 0 rows): their rows
    and first rows up to the last file the split's record has (same content, done), counting the rows of the
    new or changed ones among them (`count_rows` of their positions reads them, without importing); and the
    files after it, all new, which a sync reads whole (`plan_sync`'s `unsized`): no count is needed for them."""
    recorded = {f.content_id: f.rows for f in previous.files if f.done} if (
        previous and previous.fingerprint == fingerprint) else {}
    last_known = max((position for position, f in enumerate(files) if f.content_id in recorded), default=-1)
    to_count = [position for position in range(last_known + 1) if files[position].content_id not in recorded]
    counted = dict(zip(to_count, count_rows(to_count), strict=True)) if to_count else {}
    sized: list[DataFile] = []
    first_row = 0
    for position, file in enumerate(files[:last_known + 1]):
        rows = counted[position] if position in counted else recorded[file.content_id]
        sized.append(replace(file, rows=rows, first_row=first_row))
        first_row += rows
    return sized, list(files[last_known + 1:])


def _take_match(usable: dict[tuple[str, int], list[LayoutFile]], file: DataFile) -> LayoutFile | None:
    """The recorded file with the same content (and rows) this one continues, taken once: the one at the same
    row if there is one, else the one of the same name, else the first (a file renamed and moved)."""
    same = usable.get((file.content_id, file.rows))
    if not same:
        return None
    best = next((f for f in same if f.first_row == file.first_row), None) or next(
        (f for f in same if f.name == file.name), same[0])
    same.remove(best)
    return best


def _previous_end(previous: SplitLayout | None) -> int | None:
    return max((f.end_row for f in previous.files), default=0) if previous else None


def _merged_moves(moves: Iterable[RowMove]) -> list[RowMove]:
    merged: list[RowMove] = []
    for move in moves:
        if merged and merged[-1].shift == move.shift and merged[-1].end_row == move.first_row:
            merged[-1] = RowMove(merged[-1].first_row, move.end_row, move.shift)
        else:
            merged.append(move)
    return merged


def _merged_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, end in ranges:
        if merged and merged[-1][1] == first:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((first, end))
    return merged


def reading_fingerprint(**what: Any) -> str:
    """A digest of everything besides the files that makes scenes what they are (storage, limits, derivative
    sizes, the columns and their features): a sync keeps files only if it is unchanged."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=repr).encode()).hexdigest()[:32]
