"""The reconciler: brings every unfinished job in line with the real state of its flow run.

State hooks run inside the flow's own process and are not guaranteed: a worker killed by
SIGKILL or the OOM killer runs none, and a hook cannot write while the jobs database is down.
This loop needs no hook. Every few seconds (in the trigger process, or `hf-ingest reconcile`):
- a job whose flow run reached a state the job does not show yet is moved forward to it
  (the zombie automation turns a run whose heartbeats stopped into Crashed, so a dead worker
  ends as `failed` with "crashed: ...");
- a job whose flow run was deleted from Prefect is `failed` with that reason;
- a `queued` job that has no flow run after a grace period (the trigger died between the
  two steps, Prefect was down when it was posted, or a Supabase webhook never arrived) gets its
  run started now, after the same validation as the trigger's: a row that fails it (an app
  inserted it with bad params) becomes `failed` with the reason, and is never started.
Only rows of this project's kind (`huggingface_import`) are touched.

It also crashes the flow runs left behind by jobs that ended: an `hf-ingest` or `hf-ingest-shard` run
still in the `Pending`/`Running` state it was in when its job finished, ORPHAN_GRACE later. Such a run (its process died while
the Prefect database could not record its heartbeats, so the zombie automation never armed) would
hold a slot of its work queue for good: measured, one held a `shards` slot through a whole bench.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi.concurrency import run_in_threadpool

from blocks.settings import get_settings
from deployments import flow_runs
from flows.job_state_hooks import job_status_for, mirror_state
from hf_ingest.import_request import InvalidImport, validate_import
from hf_ingest.jobstore import JOB_KIND, Job, JobStatus, JobStore, as_utc
from hf_ingest.logs import StageLogger

logger = logging.getLogger("hf_ingest.reconciler")

ReadFlowRun = Callable[[str], Awaitable[Any | None]]  # flow run id -> FlowRun, or None if deleted
StartFlowRun = Callable[..., Awaitable[str]]  # (job id, params, source=...) -> flow run id


@dataclass(frozen=True)
class Repair:
    job_id: uuid.UUID
    before: JobStatus
    after: JobStatus | None
    reason: str


async def read_flow_run(flow_run_id: str) -> Any | None:
    """The flow run from the Prefect API, or None if Prefect no longer has it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            return await client.read_flow_run(uuid.UUID(flow_run_id))
        except ObjectNotFound:
            return None


async def reconcile_once(
    store: JobStore,
    *,
    read_run: ReadFlowRun = read_flow_run,
    start_run: StartFlowRun = flow_runs.start_flow_run,
    queued_grace: timedelta | None = None,
    now: datetime | None = None,
) -> list[Repair]:
    """One pass over the unfinished jobs; returns what it changed."""
    now = now or datetime.now(timezone.utc)
    queued_grace = queued_grace if queued_grace is not None else _queued_grace()
    repairs: list[Repair] = []
    jobs = await run_in_threadpool(store.list_jobs, [JobStatus.QUEUED, JobStatus.RUNNING])
    for job in (job for job in jobs if job.kind == JOB_KIND):
        log = StageLogger(logger, job_id=job.id, flow_run_id=job.flow_run_id or "-")
        try:
            repair = await _reconcile_job(store, job, read_run, start_run, queued_grace, now)
        except Exception as exc:  # one bad job (or Prefect down) must not stop the pass
            log.warning("reconcile", "job not reconciled", error=type(exc).__name__)
            continue
        if repair is not None:
            repairs.append(repair)
            log.info(
                "reconcile", "job repaired", before=repair.before.value,
                after=repair.after.value if repair.after else "-", reason=repair.reason,
            )
    try:
        await crash_orphaned_runs(store, now)
    except Exception as exc:  # Prefect down: the next pass tries again
        StageLogger(logger, job_id="-", flow_run_id="-").warning(
            "reconcile", "orphaned runs not checked", error=type(exc).__name__)
    return repairs


# Long enough for the child runs of a parent that died to finish their shards (they still run on other
# workers and their checkpoints serve the job's successor); an orphan's slot comes back after it.
ORPHAN_GRACE = timedelta(minutes=15)
IMPORT_FLOWS = ("hf-ingest", "hf-ingest-shard")


async def crash_orphaned_runs(store: JobStore, now: datetime | None = None) -> list[str]:
    """Crash the unfinished flow runs of the import flows whose job ended over ORPHAN_GRACE ago while they
    were in that state already; returns their ids. A run whose job is not terminal or unknown to the store,
    or that entered its state after the job ended (Prefect's Retry button on a finished import's run,
    which then works for the job's successor), is left alone."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, \
        FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    now = now or datetime.now(timezone.utc)
    crashed: list[str] = []
    jobs: dict[uuid.UUID, Job | None] = {}  # a parent and its child runs share one job: read it once a pass
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(IMPORT_FLOWS))),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING]))),
        )
        for run in runs:
            try:
                job_id = uuid.UUID(str(run.parameters.get("job_id")))
            except ValueError:
                continue
            if job_id not in jobs:
                jobs[job_id] = await run_in_threadpool(store.get_job, job_id)
            job = jobs[job_id]
            if job is None or not job.status.is_terminal or job.finished_at is None:
                continue
            ended = as_utc(job.finished_at)
            if now - ended < ORPHAN_GRACE or run.state is None or run.state.timestamp >= ended:
                continue  # entered its state after the job ended: started again by hand (Retry), not orphaned
            message = f"orphaned: its job {job_id} ended {job.status.value} and this run never finished"
            await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            StageLogger(logger, job_id=job_id, flow_run_id=str(run.id)).info(
                "reconcile", "orphaned run crashed", job_status=job.status.value)
            crashed.append(str(run.id))
    return crashed


async def _reconcile_job(
    store: JobStore, job: Job, read_run: ReadFlowRun, start_run: StartFlowRun, grace: timedelta, now: datetime
) -> Repair | None:
    if job.flow_run_id is None:
        if job.status is not JobStatus.QUEUED or now - as_utc(job.created_at) < grace:
            return None
        try:
            params = validate_import(job.params, get_settings().local_dataset_root)
        except InvalidImport as exc:
            reason = f"not started: {exc}"
            moved = await run_in_threadpool(store.advance, job.id, JobStatus.FAILED, error=reason)
            return Repair(job.id, job.status, JobStatus.FAILED, reason) if moved else None
        flow_run_id = await start_run(job.id, params, source="reconciler")
        await run_in_threadpool(store.set_flow_run_id, job.id, flow_run_id)
        return Repair(job.id, job.status, None, f"queued without a flow run; started {flow_run_id}")

    run = await read_run(job.flow_run_id)
    if run is None:
        reason = f"flow run {job.flow_run_id} no longer exists in Prefect"
        moved = await run_in_threadpool(store.advance, job.id, JobStatus.FAILED, error=reason)
        return Repair(job.id, job.status, JobStatus.FAILED, reason) if moved else None
    if run.state is None:
        return None
    mapped = job_status_for(run.state)
    if mapped is None or mapped[0] is job.status:
        return None
    status = await run_in_threadpool(mirror_state, store, run, run.state, job.id)
    if status is None:
        return None
    return Repair(job.id, job.status, status, f"flow run is {run.state.type.value}")


async def reconcile_job(store: JobStore, job: Job) -> Repair | None:
    """Bring one job in line with its flow run now (the trigger does, after Prefect refused a cancel)."""
    return await _reconcile_job(store, job, read_flow_run, flow_runs.start_flow_run, _queued_grace(),
                                datetime.now(timezone.utc))


def _queued_grace() -> timedelta:
    """How long a queued job without a run is left to the trigger before the reconciler starts it."""
    return timedelta(seconds=get_settings().reconcile_queued_grace_seconds)


async def reconcile_forever(store_factory: Callable[[], JobStore], interval_seconds: float) -> None:
    """The trigger's background loop; cancelled when the app shuts down."""
    while True:
        try:
            await reconcile_once(store_factory())
        except Exception as exc:  # the jobs database or Prefect may be down: try again next time
            StageLogger(logger, job_id="-", flow_run_id="-").warning("reconcile", "pass failed", error=type(exc).__name__)
        await asyncio.sleep(interval_seconds)


def run_cli() -> int:
    """`hf-ingest reconcile`: one pass, for cron or a one-off repair."""
    from hf_ingest import runtime

    get_settings()
    repairs = asyncio.run(reconcile_once(runtime.job_store()))
    for repair in repairs:
        after = repair.after.value if repair.after else repair.before.value
        print(f"{repair.job_id}: {repair.before.value} -> {after} ({repair.reason})")
    print(f"{len(repairs)} job(s) repaired")
    return 0
