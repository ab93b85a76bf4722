"""Resuming an import that ended: a successor job, the same import again, its finished shards kept.

A job's status only moves forward, so an import that failed or was cancelled is resumed as a new job,
its successor, whose id follows from the old one (asking twice gives the same successor). The
successor starts with the old job's shards: finished ones stay finished, the others start again from
their checkpoints. `POST /jobs/{id}/retry` does this, and so does a flow run started again by hand for
a job that already ended (Prefect's Retry button).
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from hf_ingest.jobstore import Job, JobStore, ShardStatus

JOB_ID_NAMESPACE = uuid.UUID("5b0f3f1e-5d0c-4f5e-9f39-4b8a3c7f6a21")  # job ids from keys (idempotency, retries)


def successor_id(job_id: uuid.UUID) -> uuid.UUID:
    return uuid.uuid5(JOB_ID_NAMESPACE, f"retry-of-{job_id}")


def create_successor(store: JobStore, job: Job, params: dict[str, Any], flow_run_id: str | None = None) -> Job:
    """The job that resumes `job` (created once; asking again returns it), holding `job`'s shards."""
    successor = store.create_job(successor_id(job.id), params, flow_run_id=flow_run_id)
    if not store.list_shards(successor.id):
        store.add_shards([
            replace(
                shard, job_id=successor.id, flow_run_id=None, attempts=0, error=None,
                status=ShardStatus.COMPLETED if shard.status is ShardStatus.COMPLETED else ShardStatus.PENDING,
            )
            for shard in store.list_shards(job.id)
        ])
    return successor
