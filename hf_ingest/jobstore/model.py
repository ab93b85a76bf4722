"""The job and scene records, and the one rule about job status: it only moves forward."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

JOB_KIND = "huggingface_import"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def predecessors(status: JobStatus) -> frozenset[JobStatus]:
    """The statuses a job may move to `status` from: forward only, never out of a terminal status."""
    if status is JobStatus.RUNNING:
        return frozenset({JobStatus.QUEUED})
    if status.is_terminal:
        return frozenset({JobStatus.QUEUED, JobStatus.RUNNING})
    return frozenset()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime: SQLite hands back naive ones; they were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    kind: str
    status: JobStatus
    params: dict[str, Any]
    flow_run_id: str | None
    error: str | None
    progress: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as the API and the CLI print it."""
        return {
            "id": str(self.id),
            "kind": self.kind,
            "status": self.status.value,
            "params": self.params,
            "flow_run_id": self.flow_run_id,
            "error": self.error,
            "progress": self.progress,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).isoformat()


SCENE_KEY = ("dataset", "config", "split", "image_column", "row_index")


@dataclass(frozen=True)
class Scene:
    """One stored image; unique on SCENE_KEY: a row keeps its identity however it is imported or sharded."""

    job_id: uuid.UUID
    dataset: str
    config: str
    split: str
    image_column: str
    row_index: int
    object_key: str
    url: str
    sha256: str
    content_type: str
    width: int
    height: int
    bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None  # the commit the image was read at (None: a local folder)
    thumbnail_url: str | None = None  # WebP, longest side THUMBNAIL_SIZE (None: DERIVATIVES=false)
    preview_url: str | None = None  # WebP, longest side PREVIEW_SIZE
    placeholder: str | None = None  # ThumbHash, base64
    phash: str | None = None  # 64-bit perceptual hash, 16 hex digits
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def key(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in SCENE_KEY)

    def row(self) -> dict[str, Any]:
        """The scene as a `scenes` row (without created_at)."""
        return {
            "id": self.id,
            "job_id": self.job_id,
            "dataset": self.dataset,
            "config": self.config,
            "split": self.split,
            "image_column": self.image_column,
            "row_index": self.row_index,
            "object_key": self.object_key,
            "url": self.url,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "metadata": self.metadata,
            "revision": self.revision,
            "thumbnail_url": self.thumbnail_url,
            "preview_url": self.preview_url,
            "placeholder": self.placeholder,
            "phash": self.phash,
        }


@dataclass(frozen=True)
class SceneWrites:
    """What an upsert did: rows new to the table, rows that a different revision or content replaced, and
    rows recorded before derivatives existed that got theirs (`backfilled`, counted among `updated`)."""

    inserted: int
    updated: int = 0
    backfilled: int = 0


@dataclass(frozen=True)
class SplitKey:
    """One imported split's scenes: what near-duplicates are grouped within."""

    dataset: str
    config: str
    split: str
    image_column: str


@dataclass(frozen=True)
class SplitHashes:
    """What grouping reads of a split's scenes that have a pHash, as columns, one entry per scene: building an
    object per scene cost more than grouping them (200,000 scenes on PostgreSQL: 0.75 s read, 0.3 s as columns).
    Ids are in the form the store holds them (a str where turning every id into a UUID costs more than grouping);
    `duplicate_of` in the same form, None where the scene is not a duplicate."""

    ids: list[uuid.UUID | str]
    row_index: list[int]
    phash: list[str]
    duplicate_of: list[uuid.UUID | str | None]

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> SplitHashes:
        """From (id, row_index, phash, duplicate_of) rows."""
        columns = [list(column) for column in zip(*rows, strict=True)]
        return cls(*columns) if columns else cls([], [], [], [])

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class LayoutFile:
    """One data file of an imported split, where its rows sit in the split: what the next sync compares with.

    `content_id` says the bytes are the same without reading them (the Hub's LFS sha256 or git blob id; for a
    local file its size and modification time). `done`: its scenes are all recorded at these rows."""

    name: str
    content_id: str
    rows: int
    first_row: int
    done: bool = False
    revision: str | None = None  # the commit it was read at (None: a local folder)
    schema: str | None = field(default=None, compare=False)  # its Arrow schema: the next sync needs no footer

    @property
    def end_row(self) -> int:
        return self.first_row + self.rows


@dataclass(frozen=True)
class SplitLayout:
    """The data files a split's scenes were recorded from, and the settings they were made with
    (`fingerprint`: storage, size limits, derivatives, columns; another fingerprint reads everything again)."""

    fingerprint: str
    files: tuple[LayoutFile, ...]


def layout_of(rows: Sequence[Mapping[str, Any]]) -> SplitLayout | None:
    """A split's layout from its `split_files` rows in order (as SQL or PostgREST returns them)."""
    if not rows:
        return None
    files = tuple(LayoutFile(r["name"], r["content_id"], int(r["rows"]), int(r["first_row"]), bool(r["done"]),
                             r.get("revision"), r.get("arrow_schema")) for r in rows)
    return SplitLayout(rows[0]["fingerprint"], files)


def known_files_of(rows: Iterable[Mapping[str, Any]]) -> dict[str, KnownFile]:
    """Rows and schema by content id from `split_files` rows (one with a schema wins over one without)."""
    found: dict[str, KnownFile] = {}
    for row in rows:
        if row.get("arrow_schema") or row["content_id"] not in found:
            found[row["content_id"]] = KnownFile(int(row["rows"]), row.get("arrow_schema"))
    return found


@dataclass(frozen=True)
class RowMove:
    """The scenes of rows [first_row, end_row) belong `shift` rows further on at the new commit (a file
    before them grew or shrank): they move without their images being read."""

    first_row: int
    end_row: int
    shift: int


@dataclass(frozen=True)
class LayoutWrites:
    """What recording a layout did to the scenes: rows moved, scenes marked removed."""

    moved: int = 0
    removed: int = 0


@dataclass(frozen=True)
class KnownFile:
    """What was read of a data file before (by its content id): the same bytes have the same rows and schema."""

    rows: int
    schema: str | None


class LayoutChanged(RuntimeError):
    """The split's recorded layout is not the one a sync planned from: another import of the split recorded
    its own meanwhile (a schedule's run beside a POST). Moving again would move twice: plan again."""


@dataclass(frozen=True)
class Expected:
    """`record_layout(..., expected=Expected(layout))`: record only if the split's layout is still `layout`."""

    layout: SplitLayout | None


def latest_per_key(scenes: Sequence[Scene]) -> list[Scene]:
    """One scene per key (the last): a database cannot insert-or-update one row twice in one statement."""
    return list({scene.key(): scene for scene in scenes}.values())


class ShardStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Shard:
    """One piece of a sharded import: the split's rows [first_row, end_row), imported by one child run.

    `checkpoint` counts the rows from `first_row` that are done (stored and recorded, in order): a
    resumed shard starts there. `counts` are the shard's `progress` counts, summed into the job's.
    `reserved_row`: the run importing it may read up to there (it reserves a step ahead of reading); the
    rows after it may still be split off to another run (`split_shard`). None: nothing reserved yet."""

    job_id: uuid.UUID
    shard: int
    first_row: int
    end_row: int
    status: ShardStatus = ShardStatus.PENDING
    checkpoint: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    flow_run_id: str | None = None
    error: str | None = None
    reserved_row: int | None = None

    @property
    def rows(self) -> int:
        return self.end_row - self.first_row

    def describe(self) -> str:
        return f"shard {self.shard} (rows {self.first_row}-{self.end_row - 1})"

    def row(self) -> dict[str, Any]:
        """The shard as a `job_shards` row (without updated_at)."""
        return {"job_id": self.job_id, "shard": self.shard, "first_row": self.first_row, "end_row": self.end_row,
                "status": self.status.value, "checkpoint": self.checkpoint, "counts": self.counts,
                "attempts": self.attempts}


def shard_changes(
    status: ShardStatus | None, checkpoint: int | None, counts: dict[str, Any] | None, flow_run_id: str | None,
    error: str | None,
) -> dict[str, Any]:
    """The `job_shards` columns an `update_shard` call sets: those it was given."""
    given = {"status": status.value if status else None, "checkpoint": checkpoint, "counts": counts,
             "flow_run_id": flow_run_id, "error": error}
    return {name: value for name, value in given.items() if value is not None}
