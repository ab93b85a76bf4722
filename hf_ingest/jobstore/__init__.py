"""Where jobs and scenes live: one interface, a SQL and a Supabase implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_ingest.jobstore.base import JobStore
from hf_ingest.jobstore.model import (
    JOB_KIND,
    TERMINAL_STATUSES,
    Job,
    JobStatus,
    Scene,
    SceneWrites,
    Shard,
    ShardStatus,
    SplitHashes,
    SplitKey,
    as_utc,
)

if TYPE_CHECKING:
    from blocks.settings import Settings

__all__ = [
    "JOB_KIND",
    "TERMINAL_STATUSES",
    "Job",
    "JobStatus",
    "JobStore",
    "Scene",
    "SceneWrites",
    "Shard",
    "ShardStatus",
    "SplitHashes",
    "SplitKey",
    "as_utc",
    "open_job_store",
]


def open_job_store(settings: Settings) -> JobStore:
    """The store the settings ask for: Supabase REST when both its URL and key are set, else SQL."""
    if settings.uses_supabase:
        from hf_ingest.jobstore.supabase import SupabaseJobStore

        assert settings.supabase_url and settings.supabase_service_role_key
        return SupabaseJobStore.from_credentials(
            settings.supabase_url, settings.supabase_service_role_key.get_secret_value()
        )
    from hf_ingest.jobstore.sql import SqlJobStore

    return SqlJobStore.from_url(settings.database_url.get_secret_value())
