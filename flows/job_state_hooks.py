"""Flow state hooks that mirror a Prefect run into its `jobs` row.

queued → running → completed | failed (with the error) | cancelled. Crashed runs are
`failed` with a message that says so; cancelling runs are already `cancelled` (the
`on_cancellation` hook sees CANCELLING, and a killed process runs no later hook).
Hooks run in the flow's process and are not guaranteed to run at all, so every write
here is idempotent, retried with backoff, and repeated by the reconciler if lost.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from blocks.settings import get_settings
from hf_ingest import runtime
from hf_ingest.backoff import call_with_backoff
from hf_ingest.jobstore import JobStatus, JobStore
from hf_ingest.logs import StageLogger, redact

logger = logging.getLogger("hf_ingest.hooks")

_PARAM_NAMES = ("dataset", "config", "split", "revision", "image_column", "limit")


def job_id_for(flow_run: Any) -> uuid.UUID:
    """The run's job: the `job_id` parameter, or (runs from the UI / CLI) the flow run's own id."""
    given = (flow_run.parameters or {}).get("job_id")
    return uuid.UUID(str(given)) if given else uuid.UUID(str(flow_run.id))


def current_job_of(store: JobStore, flow_run: Any) -> uuid.UUID:
    """The job a run works for: its own, or (run again after that job ended) the successor it resumes."""
    from hf_ingest.resume import successor_id

    job_id = job_id_for(flow_run)
    job = store.get_job(job_id)
    if job is not None and job.status.is_terminal:
        successor = store.get_job(successor_id(job_id))
        if successor is not None and successor.flow_run_id == str(flow_run.id):
            return successor.id
    return job_id


def job_params_for(flow_run: Any) -> dict[str, Any]:
    parameters = flow_run.parameters or {}
    return {name: parameters.get(name) for name in _PARAM_NAMES if name in parameters}


def job_status_for(state: Any) -> tuple[JobStatus, str | None] | None:
    """The job status (and error text) a Prefect state maps to; None for states the job does not show."""
    if state.is_running():
        return JobStatus.RUNNING, None
    if state.is_completed():
        return JobStatus.COMPLETED, None
    if state.is_cancelling() or state.is_cancelled():
        return JobStatus.CANCELLED, state.message or "cancelled"
    if state.is_crashed():
        return JobStatus.FAILED, f"crashed: {state.message or 'the flow run process ended unexpectedly'}"
    if state.is_failed():
        return JobStatus.FAILED, state.message or "failed"
    return None


def ensure_job(store: JobStore, job_id: uuid.UUID, params: dict[str, Any], flow_run_id: str) -> None:
    """Create the job if the run started without one; make sure it points at this flow run."""
    job = store.create_job(job_id, params, flow_run_id=flow_run_id)
    if job.flow_run_id != flow_run_id:
        store.set_flow_run_id(job_id, flow_run_id)


def mirror_state(
    store: JobStore, flow_run: Any, state: Any, job_id: uuid.UUID | None = None
) -> JobStatus | None:
    """Write `state` into the run's job (plain function: the hook below and the reconciler call it).

    Returns the status the job moved to, or None if it was already there or past it."""
    mapped = job_status_for(state)
    if mapped is None:
        return None
    status, error = mapped
    job_id = job_id or call_with_backoff(lambda: current_job_of(store, flow_run))  # reads: the same backoff
    secrets = get_settings().secret_values()
    if error is not None:
        error = redact(error, secrets)
    call_with_backoff(lambda: ensure_job(store, job_id, job_params_for(flow_run), str(flow_run.id)))
    moved = call_with_backoff(lambda: store.advance(job_id, status, error=error))
    StageLogger(logger, job_id=job_id, flow_run_id=flow_run.id, secrets=secrets).info(
        "state",
        "job status mirrored" if moved else "job status unchanged (already at or past it)",
        prefect_state=state.type.value,
        job_status=status.value,
        at=state.timestamp.isoformat() if state.timestamp else "",
        error=error or "",
    )
    return status if moved else None


def mirror_job_state(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect flow state hook: mirror the run's new state into `jobs`."""
    try:
        mirror_state(runtime.job_store(), flow_run, state)
    except Exception as exc:  # a hook must never turn a good run bad; the reconciler repairs the row
        job = (flow_run.parameters or {}).get("job_id") or flow_run.id  # raw: job_id_for may be what failed
        StageLogger(logger, job_id=job, flow_run_id=flow_run.id).error(
            "state",
            "job status not written",
            error=redact(f"{type(exc).__name__}: {exc}", get_settings().secret_values()),
        )
