"""What the HTTP trigger accepts and returns; every field validated before anything is written."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hf_ingest.import_request import ImportRequest

__all__ = ["ImportRequest", "JobAccepted", "JobOut", "JobRecord", "Problem", "SupabaseWebhook"]

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
