"""hf-ingest: a HuggingFace image dataset → object storage, one `scenes` row per image, one `jobs` row per run.

The story, top to bottom:
  1. a run started from a deployment (the UI, `prefect deployment run`) is checked as the trigger
     checks a request; the job row is made sure of and marked running (hooks do it too; they are
     not guaranteed); a job that already ended is never reopened;
  2. the dataset is opened as a stream at one commit (never downloaded whole), and the run is named
     after it (`owner/name:train@1a2b3c4`) and tagged with the dataset and where it came from;
  3. the split's data files are compared with those its scenes were recorded from (a sync): unchanged files
     are not read, rows that only moved are renumbered, rows past the new end are marked removed;
  4. rows go in batches to the `ingest-batch` task, which validates, stores and records them as scenes,
     a few batches in flight at once, so memory stays flat and one thread only reads the stream;
  5. progress is mirrored into the job and a progress artifact every few seconds, the final counts at
     the end, and a summary artifact says how it went (and, for a failure, how to resume).
Every task retries transient failures (network, 5xx, throttling) with exponential backoff and
jitter, and fails fast on anything else. State hooks mirror the run's state into `jobs`.

The flow is `async` only for how it ends: Prefect's sync engine joins its heartbeat thread, which
sleeps in 1 s steps (0-1 s more per run); the async engine does not wait for it. The body hands
the work that blocks to threads (`asyncio.to_thread`), as Prefect advises for async flows; the
sync state hooks run on the loop's thread, where nothing else is waiting.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from prefect import flow, task
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.settings import get_settings
from deployments.prefect_setup import shard_slots
from flows.import_shard import import_in_shards
from flows.import_tasks import (
    BATCH_TASK_OPTIONS,
    ProgressReporter,
    ingest_stream,
    no_secrets_in_errors,
    open_source,
    run_log,
)
from flows.job_state_hooks import ensure_job, mirror_job_state
from flows.platform import from_jobs_db
from flows.run_artifacts import ProgressArtifact, label_run, publish_summary
from flows.run_context import is_deployment_run
from flows.sync_tasks import finish_sync, start_sync
from hf_ingest import runtime
from hf_ingest.backoff import Unreachable
from hf_ingest.import_request import InvalidImport, validate_import
from hf_ingest.jobstore import JobStatus, SplitKey
from hf_ingest.logs import install_secret_filter, redact
from hf_ingest.near_duplicates import regroup
from hf_ingest.pipeline import ImageReader, IngestProgress, SceneSource
from hf_ingest.resume import create_successor
from hf_ingest.shards import shard_count
from hf_ingest.source import DatasetRequest, DatasetStream, canonical_dataset
from hf_ingest.summary import ImportReport
from hf_ingest.transient import PermanentIngestError

FAILURE_RECORD_SECONDS = 300.0  # why an import failed is worth waiting for: the database may be what was down


@task(name="start-job", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def start_job(job_id: uuid.UUID, params: dict[str, Any], flow_run_id: str) -> uuid.UUID:
    """Create the job if needed and mark it running (idempotent: the on_running hook may have done it);
    returns the job this run works for.

    A job that already ended is never reopened (status only moves forward): a run started again for it
    by hand (Prefect's Retry) resumes the import as the job's successor, the same job
    `POST /jobs/{id}/retry` makes, keeping the shards that were finished."""
    store = runtime.job_store()
    ensure_job(store, job_id, params, flow_run_id)
    store.advance(job_id, JobStatus.RUNNING)
    job = store.get_job(job_id)
    if job is None or not job.status.is_terminal:
        return job_id
    successor = create_successor(store, job, job.params or params, flow_run_id=flow_run_id)
    ensure_job(store, successor.id, successor.params, flow_run_id)
    store.advance(successor.id, JobStatus.RUNNING)
    run_log().warning("state", "job had ended; resuming it as its successor", ended=job.status.value,
                      successor=str(successor.id))
    return successor.id


@task(name="group-near-duplicates", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def group_near_duplicates(split: SplitKey, max_distance: int) -> int:
    """Once every shard is in: the split's near-duplicate groups (`scenes.duplicate_of`), how many there are."""
    return regroup(runtime.job_store(), split, max_distance)


@flow(
    name="hf-ingest",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=8),
    on_running=[mirror_job_state],
    on_completion=[mirror_job_state],
    on_failure=[mirror_job_state],
    on_crashed=[mirror_job_state],
    on_cancellation=[mirror_job_state],
)
async def hf_ingest(
    dataset: str,
    config: str | None = None,
    split: str = "train",
    revision: str = "main",
    image_column: str | None = None,
    limit: int | None = None,
    job_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Import the image column of a HuggingFace dataset (Hub id or local folder in the Hub's formats)."""
    with no_secrets_in_errors:
        settings = get_settings()
        install_secret_filter(settings.secret_values())
        run_id = str(current_flow_run.id)
        job_id = job_id or uuid.UUID(run_id)
        request = DatasetRequest(canonical_dataset(dataset), config, split, revision, image_column, limit)
        if is_deployment_run():  # the UI, `prefect deployment run`, the trigger
            request = checked_like_the_trigger(request)
        log = run_log()
        started = time.monotonic()
        progress = IngestProgress()
        stream: DatasetStream | None = None
        try:
            job_id = await asyncio.to_thread(start_job, job_id, request.as_params(), run_id)
            stream = await asyncio.to_thread(open_source, request)
            progress.revision = stream.revision
            await label_run(request, stream.revision)
            sync = await asyncio.to_thread(start_sync, job_id, stream)  # what changed since the last import
            ranges, rows_to_read = sync.ranges, sync.rows_to_read(stream)
            artifact = await asyncio.to_thread(ProgressArtifact, stream, rows_to_read)
            reporter = ProgressReporter(_job_progress(job_id), settings.progress_interval_seconds, log, artifact)
            shards = await planned_shards(stream, rows_to_read)
            if shards > 1:  # large: this process and child runs of `hf-ingest-shard` on the pool's workers
                progress = await import_in_shards(job_id, request, stream, reporter, shards, ranges)
            else:  # the common case: what is to be read, in this process, no added latency
                source = SceneSource.for_stream(job_id, stream, settings.public_base_url)
                reader = ImageReader.for_stream(stream, settings.max_image_pixels, settings.derivative_sizes)
                parts = sync.parts(stream)
                with runtime.long_lived_objects_frozen():  # what is alive now outlives the batches: out of GC scans
                    for part in parts:
                        await asyncio.to_thread(ingest_stream, part, source, reader, reporter, progress)
            progress.sync = sync.counts()
            progress.scenes_removed += sync.writes.removed + await asyncio.to_thread(finish_sync, job_id, stream, sync)
            if settings.derivatives and sync.changes_scenes:  # a split as recorded keeps its groups
                progress.near_duplicates = await asyncio.to_thread(group_near_duplicates, stream.split,
                                                                   settings.near_duplicate_distance)
            await asyncio.to_thread(reporter.finish, progress)
        except BaseException as exc:
            error = redact(f"{type(exc).__name__}: {exc}", settings.secret_values())
            if isinstance(exc, Unreachable):  # the state hooks follow Prefect, which may be what is unreachable
                await from_jobs_db(lambda: runtime.job_store().advance(job_id, JobStatus.FAILED, error=error),
                                   FAILURE_RECORD_SECONDS)
            await asyncio.to_thread(publish_summary, _report(job_id, request, stream, progress, started, error))
            raise

        final_counts = progress.as_dict()
        await from_jobs_db(lambda: runtime.job_store().update_progress(job_id, final_counts))
        await asyncio.to_thread(publish_summary, _report(job_id, request, stream, progress, started))
        log.info("record", "import finished", **final_counts)
        return {"job_id": str(job_id), **final_counts}


async def planned_shards(stream: DatasetStream, rows: int | None) -> int:
    """How many shards this run cuts the `rows` it reads into: 1 (all of it here) unless they are many, parquet,
    and a deployment run, whose pool has workers for the children (`hf-ingest run` stays one process); then
    one for this process and one per slot of the `shards` queue, so they all run at once."""
    settings = get_settings()
    if not stream.shardable or rows is None or not is_deployment_run():
        return 1
    slots = 1 + await shard_slots()
    return shard_count(rows, stream.bytes_of(rows), settings.shard_rows, settings.shard_bytes, settings.max_shards, slots)


def _job_progress(job_id: uuid.UUID) -> Callable[[IngestProgress], None]:
    return lambda progress: runtime.job_store().update_progress(job_id, progress.as_dict())


def checked_like_the_trigger(request: DatasetRequest) -> DatasetRequest:
    """A deployment run's parameters pass the trigger's validation, or the run fails at once with the reason
    (a run from the UI could otherwise name any local path, or a revision with '..')."""
    try:
        params = validate_import(request.as_params(), get_settings().local_dataset_root)
    except InvalidImport as exc:
        raise PermanentIngestError(str(exc)) from None
    return DatasetRequest(**params)


def _report(
    job_id: uuid.UUID, request: DatasetRequest, stream: DatasetStream | None, progress: IngestProgress,
    started: float, error: str | None = None,
) -> ImportReport:
    return ImportReport(
        job_id=str(job_id),
        dataset=request.dataset,
        config=stream.config_name if stream else (request.config or "default"),
        split=request.split,
        revision=progress.revision,
        storage=runtime.object_store().url("images/", None),
        seconds=time.monotonic() - started,
        progress=progress.as_dict(),
        sample_urls=progress.sample_urls,
        sample_thumbnails=progress.sample_thumbnails,
        error=error,
    )


