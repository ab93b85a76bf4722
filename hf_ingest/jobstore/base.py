"""The jobs store interface: everything the flow, hooks and trigger need from the database."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from hf_ingest.jobstore.model import (
    Expected,
    Job,
    JobStatus,
    KnownFile,
    LayoutWrites,
    RowMove,
    Scene,
    SceneWrites,
    Shard,
    ShardStatus,
    SplitHashes,
    SplitKey,
    SplitLayout,
)


class JobStore(Protocol):
    """Implemented over SQLAlchemy (SQLite, PostgreSQL) and over Supabase's REST API."""

    def create_job(
        self,
        job_id: uuid.UUID,
        params: dict[str, Any],
        *,
        flow_run_id: str | None = None,
    ) -> Job:
        """Insert a `queued` job; if the id exists already, return the existing row unchanged."""
        ...

    def get_job(self, job_id: uuid.UUID) -> Job | None: ...

    def advance(
        self,
        job_id: uuid.UUID,
        status: JobStatus,
        *,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Move the job forward to `status`; False (and no change) if that would move it backwards."""
        ...

    def set_flow_run_id(self, job_id: uuid.UUID, flow_run_id: str) -> None:
        """Point the job at its flow run; a `queued` job's note (`set_error`) is cleared: it has a run now."""
        ...

    def set_error(self, job_id: uuid.UUID, error: str) -> None:
        """Note why a `queued` job is still waiting (Prefect unreachable); a job past queued is not touched."""
        ...

    def update_progress(self, job_id: uuid.UUID, progress: dict[str, Any]) -> None: ...

    def list_jobs(self, statuses: Sequence[JobStatus]) -> list[Job]:
        """Jobs in any of `statuses`, oldest first."""
        ...

    def upsert_scenes(self, scenes: Sequence[Scene]) -> SceneWrites:
        """Insert scenes; a row whose key exists is replaced only if its revision or content differs
        (re-importing the same revision writes nothing). Returns how many were new and how many replaced."""
        ...

    def count_scenes(self, *, job_id: uuid.UUID | None = None, dataset: str | None = None) -> int: ...

    def scene_hashes(self, split: SplitKey) -> SplitHashes:
        """The split's scenes that have a perceptual hash, with their current `duplicate_of`."""
        ...

    def set_duplicates(self, changes: Mapping[uuid.UUID | str, uuid.UUID | str | None]) -> None:
        """Set `duplicate_of` of the given scenes (None: not a duplicate any more)."""
        ...

    def read_layout(self, split: SplitKey) -> SplitLayout | None:
        """The data files the split's scenes were last recorded from (None: never recorded, or forgotten)."""
        ...

    def record_layout(
        self,
        split: SplitKey,
        layout: SplitLayout | None,
        moves: Sequence[RowMove],
        end_row: int | None,
        revision: str | None,
        job_id: uuid.UUID,
        expected: Expected | None = None,
    ) -> LayoutWrites:
        """In one transaction (and, given `expected`, only if the split's layout is still that one, else
        `LayoutChanged` and no change): move the scenes of `moves` (their content to the rows `shift` further on,
        without reading images; a row a move lands on whose source had no scene is marked removed), mark
        removed the live scenes at or after `end_row` (None: leave them), and make `layout` the split's
        (None: forget it). Removed scenes get `removed_at`/`removed_in`; nothing is deleted."""
        ...

    def known_files(self, dataset: str, content_ids: Sequence[str]) -> dict[str, KnownFile]:
        """The rows and schema of the dataset's data files recorded before, by content id."""
        ...

    def remove_scenes(self, split: SplitKey, rows: Sequence[tuple[str, int]], revision: str | None) -> int:
        """Mark removed the live scenes at `(image_column, row_index)` (rows whose image is no longer valid)."""
        ...

    def add_shards(self, shards: Sequence[Shard]) -> list[Shard]:
        """Record a job's planned shards (those already recorded are kept as they are); returns all of them."""
        ...

    def list_shards(self, job_id: uuid.UUID) -> list[Shard]:
        """The job's shards, in order."""
        ...

    def update_shard(
        self,
        job_id: uuid.UUID,
        shard: int,
        *,
        status: ShardStatus | None = None,
        checkpoint: int | None = None,
        counts: dict[str, Any] | None = None,
        flow_run_id: str | None = None,
        error: str | None = None,
        attempt: bool = False,
    ) -> None:
        """Change what is given (`attempt`: one more attempt started); a completed shard stays completed."""
        ...

    def claim_shard(self, job_id: uuid.UUID, shard: int, attempt: int, runner: str) -> Shard | None:
        """Take the shard's attempt `attempt` for the flow run `runner`, if it is still `pending` at that attempt:
        one of the runs that may start it (its child run, or the parent that has nothing else to do) wins.
        Returns the shard as taken (running), or None if another run has it (or it moved on)."""
        ...

    def reserve_shard_rows(self, job_id: uuid.UUID, shard: int, upto: int) -> int:
        """Reserve the shard's rows up to `upto` (never past its end) for the run importing it, before it reads
        them; returns the row it may read up to (what it reserved before, if more). Less than `upto`: the rest
        was split off to another run."""
        ...

    def split_shard(self, job_id: uuid.UUID, shard: int, at: int, end_row: int) -> Shard | None:
        """Cut a running shard at row `at`: it keeps [first_row, at), a new pending shard (the next number) gets
        [at, end_row), in one transaction, only if the shard still ends at `end_row` and has not reserved past
        `at`. Returns the new shard, or None (the shard moved on)."""
        ...
