"""What the HTTP trigger accepts and returns; every field validated before anything is written."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from hf_ingest.hub import is_hub_id
from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
REVISION_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"  # a git ref name or a commit sha


class ImportRequest(BaseModel):
    """Import one split of a dataset."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"dataset": "owner/name", "split": "train", "revision": "main", "limit": 1000}]},
    )

    dataset: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Hub id `owner/name`, or a folder inside LOCAL_DATASET_ROOT when that is configured",
    )
    config: str | None = Field(default=None, pattern=NAME_PATTERN, description="dataset configuration (subset)")
    split: str = Field(default="train", pattern=NAME_PATTERN)
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=255,
        pattern=REVISION_PATTERN,
        description="branch, tag or commit sha of the Hub dataset; the import reads the commit it names when it starts",
    )
    image_column: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="default: the first column with the Image feature",
    )
    limit: int | None = Field(default=None, ge=1, le=1_000_000_000, description="import at most this many rows")

    @field_validator("revision")
    @classmethod
    def _no_parent_steps(cls, revision: str) -> str:
        if ".." in revision:
            raise ValueError("revision must not contain '..'")
        return revision


class SupabaseWebhook(BaseModel):
    """A Supabase Database Webhook for a `jobs` row the app inserted itself."""

    model_config = ConfigDict(
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "type": "INSERT",
                    "table": "jobs",
                    "schema": "public",
                    "record": {
                        "id": "6f1c0d7e-3a55-4f39-9a1c-2a3d9b6f7e10",
                        "kind": "huggingface_import",
                        "status": "queued",
                        "params": {"dataset": "owner/name", "split": "train"},
                    },
                    "old_record": None,
                }
            ]
        },
    )

    type: Literal["INSERT", "UPDATE", "DELETE"]
    table: str = Field(max_length=128)
    schema_name: str = Field(default="public", alias="schema", max_length=128)
    record: dict[str, Any] | None = None
    old_record: dict[str, Any] | None = None


class JobRecord(BaseModel):
    """The fields of an app-inserted `jobs` row that the trigger uses."""

    model_config = ConfigDict(extra="ignore")

    id: uuid.UUID
    kind: Literal["huggingface_import"] = "huggingface_import"
    params: ImportRequest


class JobAccepted(BaseModel):
    job_id: uuid.UUID
    flow_run_id: str | None
    status: str


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    status: Literal["queued", "running", "completed", "failed", "cancelled"]
    params: dict[str, Any]
    flow_run_id: str | None
    error: str | None
    progress: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Problem(BaseModel):
    detail: str
    job_id: uuid.UUID | None = None


def resolve_dataset(dataset: str, local_root: Path | None) -> str:
    """A Hub id as given, or a local folder resolved inside `local_root`; ValueError says why not."""
    if is_hub_id(dataset):
        return dataset
    if local_root is None:
        raise ValueError(
            "dataset must be a Hub id 'owner/name' (local folders are accepted only when LOCAL_DATASET_ROOT is set)"
        )
    root = local_root.expanduser().resolve()
    candidate = Path(dataset).expanduser()
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve(strict=True)  # follows symlinks, collapses '..'
    except (OSError, RuntimeError):
        raise ValueError("dataset folder does not exist inside LOCAL_DATASET_ROOT") from None
    if not resolved.is_relative_to(root) or resolved == root:
        raise ValueError("dataset folder must lie inside LOCAL_DATASET_ROOT")
    if not resolved.is_dir():
        raise ValueError("dataset must be a folder in a Hub format (parquet with an Image column, or imagefolder)")
    return str(resolved)
