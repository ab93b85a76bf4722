"""hf-ingest: a HuggingFace image dataset → object storage, one `scenes` row per image, one `jobs` row per run.

The story, top to bottom:
  1. a run started from a deployment (the UI, `prefect deployment run`) is checked as the trigger
     checks a request; the job row is made sure of and marked running (hooks do it too; they are
     not guaranteed); a job that already ended is never reopened;
  2. the dataset is opened as a stream at one commit (never downloaded whole), and the run is named
     after it (`owner/name:train@1a2b3c4`) and tagged with the dataset and where it came from;
  3. rows go in batches to the `ingest-batch` task, which validates, stores and records them as scenes,
     a few batches in flight at once, so memory stays flat and one thread only reads the stream;
  4. progress is mirrored into the job and a progress artifact every few seconds, the final counts at
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
import logging
import time
import uuid
from collections import deque
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import deployment as current_deployment
from prefect.runtime import flow_run as current_flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from blocks.settings import get_settings
from flows.job_state_hooks import ensure_job, mirror_job_state
from flows.retries import TRANSIENT_RETRIES
from flows.run_artifacts import ProgressArtifact, label_run, publish_summary
from hf_ingest import runtime
from hf_ingest.backoff import call_with_backoff
from hf_ingest.import_request import InvalidImport, validate_import
from hf_ingest.jobstore import JobStatus
from hf_ingest.logs import StageLogger, install_secret_filter, redact, scrub_secrets
from hf_ingest.pipeline import BatchOutcome, ImageReader, IngestProgress, SceneSource, ingest_batch
from hf_ingest.source import DatasetRequest, DatasetStream, ImageRow, canonical_dataset, open_dataset
from hf_ingest.summary import ImportReport
from hf_ingest.transient import PermanentIngestError

# Batch tasks carry image bytes: never hash them for caching, never persist their results.
BATCH_TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False, **TRANSIENT_RETRIES}
# The hooks' and reconciler's INFO lines (status mirrored, job repaired) must show under a worker too.
logging.getLogger("hf_ingest").setLevel(logging.INFO)
# No configured secret may reach Prefect inside an exception message (state messages, the UI, jobs.error).
no_secrets_in_errors = scrub_secrets(lambda: get_settings().secret_values())


def _log() -> StageLogger:
    return StageLogger(
        get_run_logger(),
        job_id=current_flow_run.parameters.get("job_id") or current_flow_run.id,
        flow_run_id=current_flow_run.id,
        secrets=get_settings().secret_values(),
    )


@task(name="start-job", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def start_job(job_id: uuid.UUID, params: dict[str, Any], flow_run_id: str) -> None:
    """Create the job if needed and mark it running (idempotent: the on_running hook may have done it).

    A job that already ended is never reopened (status only moves forward): a run started again for it
    by hand fails here, saying how to resume instead."""
    store = runtime.job_store()
    ensure_job(store, job_id, params, flow_run_id)
    store.advance(job_id, JobStatus.RUNNING)
    job = store.get_job(job_id)
    if job is not None and job.status.is_terminal:
        raise PermanentIngestError(
            f"job {job_id} already ended ({job.status.value}) and is never reopened; to resume it, "
            f"POST /jobs/{job_id}/retry or start the same import again"
        )


@task(name="open-dataset", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def open_source(request: DatasetRequest) -> DatasetStream:
    """Resolve the commit, the split and the image column; a missing dataset, revision or column fails here, fast."""
    settings = get_settings()
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    stream = open_dataset(request, token, settings.max_image_bytes)
    _log().info(
        "load",
        "dataset opened",
        dataset=request.dataset,
        config=stream.config_name,
        split=request.split,
        revision=stream.revision or "local",
        image_column=stream.image_column + ("[*]" if stream.slot.is_list else ""),
        metadata_columns=",".join(stream.metadata.columns) or "-",
        limit=request.limit if request.limit is not None else "none",
    )
    return stream


@task(name="ingest-batch", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def ingest_rows(rows: list[ImageRow], source: SceneSource, reader: ImageReader) -> BatchOutcome:
    """Decode every image, skip and count the bad ones, write the good ones' original bytes, upsert
    their scenes. A retry repeats all of it cheaply: stored objects are found, recorded scenes kept."""
    started = time.perf_counter()
    outcome = ingest_batch(rows, source, reader, runtime.object_store(), runtime.job_store())
    _log().info(
        "store",
        "batch stored",
        first_row=rows[0].row_index if rows else -1,
        rows=outcome.rows,
        stored=outcome.stored,
        already_present=outcome.already_present,
        invalid=sum(outcome.invalid.values()),
        recorded=outcome.scenes_recorded,
        updated=outcome.scenes_updated,
        bytes=outcome.bytes_stored,
        seconds=round(time.perf_counter() - started, 3),
    )
    return outcome


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
        if current_deployment.id is not None:  # the UI, `prefect deployment run`, the trigger
            request = checked_like_the_trigger(request)
        log = _log()
        started = time.monotonic()
        progress = IngestProgress()
        stream: DatasetStream | None = None
        try:
            await asyncio.to_thread(start_job, job_id, request.as_params(), run_id)
            stream = await asyncio.to_thread(open_source, request)
            progress.revision = stream.revision
            await label_run(request, stream.revision)
            source = SceneSource.for_stream(job_id, stream, settings.public_base_url)
            reader = ImageReader.for_stream(stream, settings.max_image_pixels)
            artifact = await asyncio.to_thread(ProgressArtifact, stream)
            reporter = ProgressReporter(job_id, settings.progress_interval_seconds, log, artifact)
            with runtime.long_lived_objects_frozen():  # what is alive now outlives the batches: out of GC scans
                await asyncio.to_thread(ingest_stream, stream, source, reader, reporter, progress)
            await asyncio.to_thread(reporter.finish, progress)
        except BaseException as exc:
            error = redact(f"{type(exc).__name__}: {exc}", settings.secret_values())
            await asyncio.to_thread(publish_summary, _report(job_id, request, stream, progress, started, error))
            raise

        final_counts = progress.as_dict()
        await asyncio.to_thread(call_with_backoff, lambda: runtime.job_store().update_progress(job_id, final_counts))
        await asyncio.to_thread(publish_summary, _report(job_id, request, stream, progress, started))
        log.info("record", "import finished", **final_counts)
        return {"job_id": str(job_id), **final_counts}


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
        error=error,
    )


def ingest_stream(
    stream: DatasetStream, source: SceneSource, reader: ImageReader, reporter: ProgressReporter,
    progress: IngestProgress,
) -> IngestProgress:
    """Read the stream into `ingest-batch` tasks, at most MAX_IN_FLIGHT_BATCHES at once (memory stays flat),
    and count each batch into `progress` as it finishes, oldest first. A batch out of retries fails the
    run, its rows counted."""
    settings = get_settings()
    in_flight: deque[tuple[PrefectFuture[BatchOutcome], int]] = deque()

    def count_oldest() -> None:
        future, rows_in_batch = in_flight.popleft()
        try:
            progress.add(future.result())
        except Exception:  # retries exhausted: count the batch as failed, keep the counts, fail the run
            progress.failed += rows_in_batch
            reporter.report_now(progress)
            raise
        reporter.maybe_report(progress)

    for rows in stream.batches(settings.batch_size, settings.batch_max_bytes):
        in_flight.append((ingest_rows.submit(quote(rows), source, reader), len(rows)))
        if len(in_flight) >= settings.max_in_flight_batches:
            count_oldest()
    while in_flight:
        count_oldest()
    return progress


class ProgressReporter:
    """Mirrors the running counts into `jobs.progress` and the run's progress artifact, at most once per
    interval (never per image)."""

    def __init__(
        self, job_id: uuid.UUID, interval_seconds: float, log: StageLogger, artifact: ProgressArtifact | None = None
    ) -> None:
        self.job_id = job_id
        self.interval = interval_seconds
        self.log = log
        self.artifact = artifact
        self.last = 0.0

    def maybe_report(self, progress: IngestProgress) -> None:
        if time.monotonic() - self.last >= self.interval:
            self.report_now(progress)

    def report_now(self, progress: IngestProgress) -> None:
        self.last = time.monotonic()
        counts = progress.as_dict()
        if self.artifact is not None:
            self.artifact.update(progress.rows_seen)
        try:
            runtime.job_store().update_progress(self.job_id, counts)
        except Exception as exc:  # progress is advisory; the final counts are written again at the end
            self.log.warning("record", "progress not written", error=type(exc).__name__)
            return
        self.log.info("record", "progress", **counts)

    def finish(self, progress: IngestProgress) -> None:
        if self.artifact is not None:
            self.artifact.finish(progress.rows_seen)
