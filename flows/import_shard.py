"""Large imports, fanned out: the parent `hf-ingest` run plans shards and starts one `hf-ingest-shard`
child run per shard on the same work pool, so every worker of the pool, on any machine, shares one import.

The story, top to bottom:
  1. the parent plans the shards (row ranges of the split, from the parquet footers; one for itself and
     one per slot of the `shards` queue) and records them in `job_shards`; a resumed job keeps the
     shards it already finished;
  2. it starts a child run of the deployment `hf-ingest-shard/default` (work queue `shards`) for each
     unfinished shard but the first, and waits for them with Prefect's own `wait_for_flow_run`;
  3. the first it imports itself, in its own process, which has the dataset open and would otherwise
     only wait (a child run costs ~2 s before its first batch); each child opens the dataset at the
     parent's commit; both read the shard's rows from its checkpoint on, run the same `ingest-batch`
     tasks, and keep its row in `job_shards` up to date (counts, checkpoint);
  4. meanwhile the parent sums the shards into `jobs.progress` (one writer per job) and the progress
     artifact; a shard that fails (here or in a child) or whose child crashes is started again as a
     child run, and only a shard out of attempts (SHARD_ATTEMPTS) fails the job, naming the shard.
Cancelling the parent cancels its children (Prefect cancels the subflow runs of a cancelled run).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prefect import flow
from prefect.deployments import arun_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.settings import get_settings
from deployments.prefect_setup import SHARD_DEPLOYMENT
from flows.import_tasks import ProgressReporter, ingest_stream, no_secrets_in_errors, open_source, run_log
from hf_ingest import runtime
from hf_ingest.jobstore import Shard, ShardStatus
from hf_ingest.logs import install_secret_filter, redact
from hf_ingest.pipeline import ImageReader, IngestProgress, SceneSource
from hf_ingest.run_labels import run_name, run_tags
from hf_ingest.shards import aggregate_counts, plan_shards
from hf_ingest.source import DatasetRequest, DatasetStream
from hf_ingest.transient import PermanentIngestError



class ShardFailed(PermanentIngestError):
    """A shard failed every attempt; the job fails with this message, naming the shard."""


def _mirror_shard_state(flow: Any, flow_run: Any, state: Any) -> None:
    """Child state hook: a failed or crashed child marks its shard (the parent reads Prefect's state too)."""
    parameters = flow_run.parameters or {}
    if state.is_failed() or state.is_crashed():
        try:
            runtime.job_store().update_shard(
                uuid.UUID(str(parameters["job_id"])), int(parameters["shard"]), status=ShardStatus.FAILED,
                error=redact(state.message or state.type.value, get_settings().secret_values())[:2000],
            )
        except Exception:  # noqa: BLE001 - advisory: the parent acts on the run's state in Prefect
            pass


@flow(
    name="hf-ingest-shard",
    task_runner=ThreadPoolTaskRunner(max_workers=8),
    on_failure=[_mirror_shard_state],
    on_crashed=[_mirror_shard_state],
)
async def hf_ingest_shard(
    job_id: uuid.UUID,
    shard: int,
    dataset: str,
    revision: str,
    config: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Import one shard of a job's split (the rows `job_shards` gives it), from its checkpoint on."""
    with no_secrets_in_errors:
        install_secret_filter(get_settings().secret_values())
        store = runtime.job_store()
        record = next((s for s in await asyncio.to_thread(store.list_shards, job_id) if s.shard == shard), None)
        if record is None:
            raise PermanentIngestError(f"job {job_id} has no shard {shard}")
        if record.status is ShardStatus.COMPLETED:
            return record.counts
        request = DatasetRequest(dataset, config, split, revision, image_column, limit)
        return await import_shard_rows(job_id, record, await asyncio.to_thread(open_source, request))


async def import_shard_rows(job_id: uuid.UUID, record: Shard, split: DatasetStream) -> dict[str, Any]:
    """A shard's rows of the opened `split`, from its checkpoint on, in this process (a child run, or the
    parent's own shard); its `job_shards` row says how far it got."""
    settings = get_settings()
    store = runtime.job_store()
    await asyncio.to_thread(store.update_shard, job_id, record.shard, status=ShardStatus.RUNNING,
                            flow_run_id=str(current_flow_run.id))
    stream = split.rows_between(record.first_row + record.checkpoint, record.end_row)
    progress = IngestProgress(revision=stream.revision, next_row=stream.first_row)
    _restore_counts(progress, record.counts)
    reporter = ProgressReporter(_shard_progress(job_id, record), settings.progress_interval_seconds, run_log())
    source = SceneSource.for_stream(job_id, stream, settings.public_base_url)
    reader = ImageReader.for_stream(stream, settings.max_image_pixels)
    with runtime.long_lived_objects_frozen():
        await asyncio.to_thread(ingest_stream, stream, source, reader, reporter, progress)
    counts = progress.as_dict()
    await asyncio.to_thread(store.update_shard, job_id, record.shard, status=ShardStatus.COMPLETED, counts=counts,
                            checkpoint=record.rows)
    return counts


def _shard_progress(job_id: uuid.UUID, record: Shard) -> Any:
    def write(progress: IngestProgress) -> None:
        runtime.job_store().update_shard(
            job_id, record.shard, counts=progress.as_dict(), checkpoint=max(0, progress.next_row - record.first_row)
        )

    return write


def _restore_counts(progress: IngestProgress, counts: dict[str, Any]) -> None:
    """A shard resumed from its checkpoint goes on counting from what its earlier attempts counted."""
    for name in ("rows_seen", "stored", "already_present", "scenes_recorded", "scenes_updated", "bytes_stored"):
        setattr(progress, name, int(counts.get(name) or 0))
    progress.invalid.update(counts.get("invalid") or {})


async def import_in_shards(
    job_id: uuid.UUID, request: DatasetRequest, stream: DatasetStream, reporter: ProgressReporter, count: int
) -> IngestProgress:
    """The parent's part: plan `count` shards, start a child run per unfinished one but the first, import
    that one here, wait for the others, sum the counts."""
    settings = get_settings()
    store = runtime.job_store()
    log = run_log()
    shards = await asyncio.to_thread(store.list_shards, job_id)
    if not shards:  # a resumed job already has its shards (kept as they were planned)
        rows = stream.rows_to_read or 0
        shards = await asyncio.to_thread(
            store.add_shards, plan_shards(job_id, rows, count)
        )
    log.info("plan", "import sharded", shards=len(shards), rows=shards[-1].end_row,
             done=sum(1 for s in shards if s.status is ShardStatus.COMPLETED))
    params = {"dataset": request.dataset, "revision": stream.revision or request.revision, "config": request.config,
              "split": request.split, "image_column": request.image_column, "limit": request.limit}
    name = run_name(request.dataset, request.split, stream.revision)  # as the parent is named (a folder: no "@main")
    unfinished = [shard for shard in shards if shard.status is not ShardStatus.COMPLETED]
    runs = [_run_shard(job_id, shard, params, name, settings.shard_attempts, here=stream if n == 0 else None)
            for n, shard in enumerate(unfinished)]
    summing = asyncio.create_task(_sum_shards(job_id, reporter))
    try:
        # a shard out of attempts does not stop the others: when the job says failed, nothing of it is still
        # running, and every other shard is finished (a retry runs only what failed)
        outcomes = await asyncio.gather(*runs, return_exceptions=True)
    finally:
        summing.cancel()
    progress = _progress_of(await asyncio.to_thread(store.list_shards, job_id))
    reporter.report_now(progress)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if len(failures) > 1 and isinstance(failures[0], ShardFailed):
        raise ShardFailed(f"{failures[0]} (and {len(failures) - 1} more shards failed)"[:2000]) from failures[0]
    if failures:
        raise failures[0]
    return progress


async def _run_shard(job_id: uuid.UUID, shard: Shard, params: dict[str, Any], name: str, attempts: int,
                     here: DatasetStream | None = None) -> None:
    """One shard's attempts, up to `attempts` in all: the first in this process if `here` (the opened split)
    is given, the others (or all) as child runs, started again while they fail."""
    store = runtime.job_store()
    error = "not started"
    first = shard.attempts
    if here is not None:
        await asyncio.to_thread(store.update_shard, job_id, shard.shard, attempt=True)
        try:
            await import_shard_rows(job_id, shard, here)
            return
        except Exception as exc:  # noqa: BLE001 - the shard goes on in a child run, from its checkpoint
            error = redact(f"{type(exc).__name__}: {exc}", get_settings().secret_values())
            run_log().warning("plan", "shard did not complete here; starting it as a child run", shard=shard.shard,
                              error=error[:500])
            first += 1
    for attempt in range(first, shard.attempts + attempts):
        child = await arun_deployment(
            SHARD_DEPLOYMENT,
            parameters={**{k: v for k, v in params.items() if v is not None}, "job_id": str(job_id), "shard": shard.shard},
            flow_run_name=f"{name} #{shard.shard}",
            tags=[*run_tags(params["dataset"], "shard"), f"job:{job_id}"],
            idempotency_key=f"hf-ingest-{job_id}-shard-{shard.shard}-attempt-{attempt}",
            timeout=0,
        )
        await asyncio.to_thread(store.update_shard, job_id, shard.shard, flow_run_id=str(child.id), attempt=True)
        finished = await wait_for_flow_run(child.id, timeout=7 * 24 * 3600, log_states=False)  # events, not polls
        if finished.state is not None and finished.state.is_completed():
            await asyncio.to_thread(store.update_shard, job_id, shard.shard, status=ShardStatus.COMPLETED)
            return
        error = (finished.state.message if finished.state else None) or "ended without a state"
        if finished.state is not None and finished.state.is_cancelled():
            break  # cancelled (with its parent): not a failure to retry
        run_log().warning("plan", "shard run did not complete; starting it again", shard=shard.shard,
                          attempt=attempt + 1, state=finished.state.type.value if finished.state else "-")
    await asyncio.to_thread(store.update_shard, job_id, shard.shard, status=ShardStatus.FAILED, error=error[:2000])
    raise ShardFailed(f"{shard.describe()} failed after {attempts} attempts: {error}"[:2000])


async def _sum_shards(job_id: uuid.UUID, reporter: ProgressReporter) -> None:
    """The parent is the job's one writer: it sums the shards' counts into `jobs.progress` as they move."""
    store = runtime.job_store()
    while True:
        await asyncio.sleep(max(1.0, reporter.interval))
        try:
            shards = await asyncio.to_thread(store.list_shards, job_id)
            await asyncio.to_thread(reporter.report_now, _progress_of(shards))
        except Exception:  # noqa: BLE001 - progress is advisory; the final counts are written at the end
            continue


def _progress_of(shards: list[Shard]) -> IngestProgress:
    counts = aggregate_counts(shards)
    progress = IngestProgress(revision=counts.get("revision"))  # type: ignore[arg-type]
    _restore_counts(progress, counts)
    progress.failed = int(counts.get("failed") or 0)  # type: ignore[call-overload]
    progress.shards = (int(counts["shards_done"]), int(counts["shards_total"]))  # type: ignore[call-overload]
    return progress

