"""Keeping a split current: the tasks that plan a sync before the rows are read and record it after.

Thin over `hf_ingest.sync_plan` (which files to read, which rows moved) and the jobs store's
`record_layout` (moves, removals and the split's file list, in one transaction). An import without a limit
is always planned: the first one reads everything and records the files; a later one reads only what
changed. Parquet files, and imagefolder rows (each a "file" of one row), are compared one by one; so are
WebDataset tars, whose rows are only known by reading them: a changed tar before a kept one is counted
first (read without importing), and new tars after the last kept one are read whole, their rows counted
as they are imported (the split's end known at the end). Other formats, and imports with a
limit, read what they read as before and forget the split's file list first (the rows it describes are
about to be rewritten); a full read still marks the rows after its end removed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from prefect import task

from blocks.settings import get_settings
from flows.import_tasks import BATCH_TASK_OPTIONS, no_secrets_in_errors, run_log
from hf_ingest import runtime
from hf_ingest.jobstore.model import Expected, LayoutChanged, LayoutWrites
from hf_ingest.source import DatasetStream
from hf_ingest.sync_plan import DataFile, SyncPlan, plan_sync, reading_fingerprint, sized_files


PLAN_ATTEMPTS = 5


@dataclass(frozen=True)
class SyncStart:
    """The plan, and what recording it did before any row was read (moves, rows removed at the end)."""

    plan: SyncPlan | None  # None: a full read (a limit)
    writes: LayoutWrites
    sized: tuple[DataFile, ...] = ()  # WebDataset: the leading tars, with their rows from the record

    @property
    def ranges(self) -> list[tuple[int, int]] | None:
        """The row ranges to read (and then the unsized files); None: the whole stream."""
        return list(self.plan.read) if self.plan is not None else None

    def parts(self, stream: DatasetStream) -> list[DatasetStream]:
        """What to read of `stream`: all of it, or the plan's ranges and unsized files."""
        return [stream] if self.plan is None else stream.parts(self.plan.read, self.sized)

    def rows_to_read(self, stream: DatasetStream) -> int | None:
        return stream.rows_to_read if self.plan is None else self.plan.rows_to_read

    @property
    def changes_scenes(self) -> bool:
        """False for a sync that finds the split exactly as recorded: nothing is read, moved or removed."""
        return self.plan is None or not self.plan.idle

    def counts(self) -> dict[str, int] | None:
        if self.plan is None:
            return None
        return {"files_read": self.plan.files_read, "files_kept": self.plan.files_kept,
                "scenes_unchanged": self.plan.rows_unchanged, "scenes_moved": self.writes.moved}


def fingerprint_of(stream: DatasetStream) -> str:
    """What besides the files makes the scenes: where they are stored and how, and the columns read."""
    settings = get_settings()
    return reading_fingerprint(
        storage=runtime.object_store().url("images/", None), public_base_url=settings.public_base_url,
        max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels,
        derivatives=settings.derivative_sizes, columns=stream.columns_id, list_column=stream.slot.is_list,
    )


@task(name="plan-sync", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def start_sync(job_id: uuid.UUID, stream: DatasetStream) -> SyncStart:
    """Compare the commit's data files with the split's recorded ones; move the rows that only moved, mark
    the rows past the new end removed, and record the plan (the files to read pending): all before reading."""
    store = runtime.job_store()
    split = stream.split
    if (stream.data_files is None and not stream.unsized_files) or stream.request.limit is not None:
        return SyncStart(None, store.record_layout(split, None, [], None, stream.revision, job_id))
    fingerprint = fingerprint_of(stream)
    counted: dict[tuple[int, ...], list[int]] = {}  # tars counted once, if another import makes this plan again

    def count_rows(tars: list[int]) -> list[int]:
        if tuple(tars) not in counted:
            counted[tuple(tars)] = stream.count_rows(tars)
        return counted[tuple(tars)]

    for attempt in range(PLAN_ATTEMPTS):
        previous = store.read_layout(split)
        files, unsized = ((list(stream.data_files), []) if stream.data_files is not None
                          else sized_files(stream.unsized_files, previous, fingerprint, count_rows))
        plan = plan_sync(files, previous, fingerprint, stream.revision, unsized)
        writes = LayoutWrites()
        if not plan.changes_layout:
            break
        try:
            writes = store.record_layout(split, plan.layout, plan.moves, plan.end_row, stream.revision, job_id,
                                         Expected(previous))
            break
        except LayoutChanged:  # another import of the split recorded meanwhile: plan from what it recorded
            if attempt == PLAN_ATTEMPTS - 1:
                raise
            run_log().info("plan", "the split's files were recorded by another import meanwhile; planning again")
    run_log().info("plan", "sync planned", files_read=plan.files_read, files_kept=plan.files_kept,
                   rows_to_read=plan.rows_to_read, rows_unchanged=plan.rows_unchanged, scenes_moved=writes.moved,
                   scenes_removed=writes.removed)
    return SyncStart(plan, writes, tuple(files) if stream.data_files is None else ())


@task(name="record-sync", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def finish_sync(job_id: uuid.UUID, stream: DatasetStream, start: SyncStart) -> int:
    """Every file read: record the split's files as done (what the next sync compares with). Where only reading
    told the split's end (WebDataset tars read whole), or a full read with nothing recorded, the scenes after
    it are marked removed. Returns the scenes removed here."""
    store = runtime.job_store()
    plan = start.plan
    if plan is None:
        end_row = stream.rows_read if stream.request.limit is None else None
        return store.record_layout(stream.split, None, [], end_row, stream.revision, job_id).removed
    if plan.idle:
        return 0
    layout, end_row = plan.completed(stream.unsized_rows)  # the end, if only reading the unsized files told it
    try:
        return store.record_layout(stream.split, layout, [], end_row, stream.revision, job_id,
                                   Expected(plan.layout)).removed
    except LayoutChanged:  # a newer import of the split recorded its own files: they are the split's now
        run_log().info("record", "the split's files were recorded by a newer import; left as they are")
        return 0
