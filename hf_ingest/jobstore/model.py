"""The job and scene records, and the one rule about job status: it only moves forward."""

from __future__ import annotations

import uuid
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
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written as UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


@dataclass(frozen=True)
class Scene:
    """One stored image; unique on (dataset, config, split, row_index)."""

    job_id: uuid.UUID
    dataset: str
    config: str
    split: str
    row_index: int
    object_key: str
    url: str
    sha256: str
    content_type: str
    width: int
    height: int
    bytes: int
    metadata: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid.uuid4)
