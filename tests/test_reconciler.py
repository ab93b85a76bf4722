"""The reconciler against a real Prefect server: jobs follow their flow runs even when no hook ran."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, Running

from deployments.reconciler import ORPHAN_GRACE, reconcile_once
from hf_ingest import runtime
from hf_ingest.jobstore import JobStatus

pytestmark = pytest.mark.usefixtures("prefect_api")


@flow(name="reconciler-probe")
def probe() -> None:
    """Only its flow runs are used: created and moved through states by the test, never executed."""


async def _flow_run(*states: Any) -> str:
    async with get_client() as client:
        run = await client.create_flow_run(probe, state=Pending())
        for state in states:
            await client.set_flow_run_state(run.id, state, force=True)
        return str(run.id)


def _job(status: JobStatus, flow_run_id: str | None) -> uuid.UUID:
    store = runtime.job_store()
    job_id = uuid.uuid4()
    store.create_job(job_id, {"dataset": "owner/name"}, flow_run_id=flow_run_id)
    if status is not JobStatus.QUEUED:
        store.advance(job_id, status)
    return job_id


async def _no_start(job_id: uuid.UUID, params: dict[str, Any], source: str = "") -> str:
    raise AssertionError("no run should be started")


@pytest.mark.parametrize(
    ("job_status", "run_states", "expected", "error_part"),
    [
        (JobStatus.RUNNING, [Running(), Crashed(message="no heartbeat for 90 s")], JobStatus.FAILED, "crashed: no heartbeat"),
        (JobStatus.RUNNING, [Running(), Completed()], JobStatus.COMPLETED, None),
        (JobStatus.RUNNING, [Running(), Failed(message="boom")], JobStatus.FAILED, "boom"),
        (JobStatus.QUEUED, [Cancelled()], JobStatus.CANCELLED, None),
        (JobStatus.QUEUED, [Running()], JobStatus.RUNNING, None),
    ],
    ids=["crashed", "completed", "failed", "cancelled", "started"],
)
def test_jobs_follow_their_flow_runs_without_hooks(
    job_status: JobStatus, run_states: list, expected: JobStatus, error_part: str | None
) -> None:
    flow_run_id = asyncio.run(_flow_run(*run_states))
    job_id = _job(job_status, flow_run_id)
    repairs = asyncio.run(reconcile_once(runtime.job_store(), start_run=_no_start))
    assert [r.job_id for r in repairs] == [job_id]
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is expected
    if error_part:
        assert error_part in (job.error or "")
    assert asyncio.run(reconcile_once(runtime.job_store(), start_run=_no_start)) == []  # settled


def test_a_job_whose_flow_run_was_deleted_fails_with_that_reason() -> None:
    flow_run_id = asyncio.run(_flow_run(Running()))
    job_id = _job(JobStatus.RUNNING, flow_run_id)

    async def delete() -> None:
        async with get_client() as client:
            await client.delete_flow_run(uuid.UUID(flow_run_id))

    asyncio.run(delete())
    asyncio.run(reconcile_once(runtime.job_store(), start_run=_no_start))
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.FAILED and "no longer exists in Prefect" in (job.error or "")


def test_a_queued_job_without_a_run_is_started_after_the_grace_period() -> None:
    job_id = _job(JobStatus.QUEUED, None)
    started: list[uuid.UUID] = []

    async def start(job: uuid.UUID, params: dict[str, Any], source: str = "") -> str:
        assert source == "reconciler" and params["revision"] == "main"  # validated: defaults filled in
        started.append(job)
        return "run-started-by-reconciler"

    store = runtime.job_store()
    assert asyncio.run(reconcile_once(store, start_run=start)) == []  # still inside the grace period
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    repairs = asyncio.run(reconcile_once(store, start_run=start, now=later))
    assert started == [job_id] and len(repairs) == 1
    job = store.get_job(job_id)
    assert job and job.flow_run_id == "run-started-by-reconciler" and job.status is JobStatus.QUEUED


def test_prefect_unreachable_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    flow_run_id = asyncio.run(_flow_run(Running(), Completed()))
    job_id = _job(JobStatus.RUNNING, flow_run_id)

    async def unreachable(_: str) -> None:
        raise ConnectionError("prefect down")

    assert asyncio.run(reconcile_once(runtime.job_store(), read_run=unreachable, start_run=_no_start)) == []
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.RUNNING


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"dataset": "/etc"}, "Hub id 'owner/name'"),
        ({"dataset": "owner/name", "revision": "main/../../x"}, "revision must not contain '..'"),
        ({"dataset": "owner/name", "limit": -4}, "limit"),
        ({"split": "train"}, "dataset"),
    ],
    ids=["local-path-without-root", "revision-escape", "negative-limit", "no-dataset"],
)
def test_a_queued_row_that_fails_validation_is_failed_with_the_reason_and_never_started(
    params: dict[str, Any], reason: str
) -> None:
    """An app may insert a row the trigger would have refused: the reconciler checks it the same way."""
    store = runtime.job_store()
    job_id = uuid.uuid4()
    store.create_job(job_id, params)
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    repairs = asyncio.run(reconcile_once(store, start_run=_no_start, now=later))
    job = store.get_job(job_id)
    assert job and job.status is JobStatus.FAILED and job.flow_run_id is None
    assert (job.error or "").startswith("not started: invalid") or "LOCAL_DATASET_ROOT" in (job.error or "")
    assert reason in (job.error or "") and [r.job_id for r in repairs] == [job_id]


def test_rows_of_another_kind_are_left_alone() -> None:
    import sqlalchemy as sa

    store = runtime.job_store()
    job_id = uuid.uuid4()
    store.create_job(job_id, {"dataset": "owner/name"})
    with store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(sa.text("update jobs set kind = 'video_transcode' where id = :id"), {"id": job_id.hex})
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    assert asyncio.run(reconcile_once(store, start_run=_no_start, now=later)) == []
    job = store.get_job(job_id)
    assert job and job.status is JobStatus.QUEUED and job.error is None


@flow(name="hf-ingest-shard")
def shard_probe(job_id: str, shard: int = 0) -> None:
    """Stands for the shard flow: only its flow runs are used, never executed."""


async def _shard_run(job_id: uuid.UUID) -> str:
    async with get_client() as client:
        run = await client.create_flow_run(shard_probe, parameters={"job_id": str(job_id)}, state=Pending())
        await client.set_flow_run_state(run.id, Running(), force=True)
        return str(run.id)


async def _state_of(flow_run_id: str) -> Any:
    async with get_client() as client:
        return (await client.read_flow_run(uuid.UUID(flow_run_id))).state


def test_a_run_left_running_by_a_job_that_ended_is_crashed_after_a_grace() -> None:
    """A shard run whose process died unseen holds a `shards` slot until it is finished: the reconciler
    crashes it once its job has been over for ORPHAN_GRACE, and leaves be the runs of live or unknown jobs
    and a run started again after its job ended (Prefect's Retry button)."""
    store = runtime.job_store()
    ended, live, retried = (_job(JobStatus.RUNNING, None) for _ in range(3))
    unknown = uuid.uuid4()
    orphan, working, stray = (asyncio.run(_shard_run(job)) for job in (ended, live, unknown))
    store.advance(ended, JobStatus.FAILED, error="shard 1 failed")
    store.advance(retried, JobStatus.FAILED, error="boom")
    again = asyncio.run(_shard_run(retried))  # Running since after its job ended

    asyncio.run(reconcile_once(store, start_run=_no_start))  # within the grace: a run may still be finishing
    assert asyncio.run(_state_of(orphan)).type.value == "RUNNING"

    later = datetime.now(timezone.utc) + ORPHAN_GRACE + timedelta(seconds=5)
    asyncio.run(reconcile_once(store, start_run=_no_start, now=later))
    state = asyncio.run(_state_of(orphan))
    assert state.type.value == "CRASHED" and f"its job {ended} ended failed" in (state.message or "")
    assert [asyncio.run(_state_of(run)).type.value for run in (working, stray, again)] == ["RUNNING"] * 3
