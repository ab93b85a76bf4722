"""The tasks and loops every hf-ingest flow shares: open the dataset, ingest batches, report progress.

`hf-ingest` (flows/import_dataset.py) runs them over a whole split, or over a shard in `hf-ingest-shard`
(flows/import_shard.py); the work itself is plain code in `hf_ingest.pipeline`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run as current_flow_run
from prefect.utilities.annotations import quote

from blocks.settings import get_settings
from deployments.prefect_setup import WRITE_LIMITS
from flows.retries import TRANSIENT_RETRIES
from flows.run_artifacts import ProgressArtifact
from flows.run_context import is_deployment_run
from flows.write_slots import WriteSlots
from hf_ingest import runtime
from hf_ingest.logs import StageLogger, scrub_secrets
from hf_ingest.pipeline import BatchOutcome, ImageReader, IngestProgress, SceneSource, ingest_batch
from hf_ingest.source import DatasetRequest, DatasetStream, ImageRow, open_dataset

# Batch tasks carry image bytes: never hash them for caching, never persist their results.
BATCH_TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False, **TRANSIENT_RETRIES}
# The hooks' and reconciler's INFO lines (status mirrored, job repaired) must show under a worker too.
logging.getLogger("hf_ingest").setLevel(logging.INFO)
# No configured secret may reach Prefect inside an exception message (state messages, the UI, jobs.error).
no_secrets_in_errors = scrub_secrets(lambda: get_settings().secret_values())


def run_log() -> StageLogger:
    return StageLogger(
        get_run_logger(),
        job_id=current_flow_run.parameters.get("job_id") or current_flow_run.id,
        flow_run_id=current_flow_run.id,
        secrets=get_settings().secret_values(),
    )


@task(name="open-dataset", **BATCH_TASK_OPTIONS)
@no_secrets_in_errors
def open_source(request: DatasetRequest) -> DatasetStream:
    """Resolve the commit, the split and the image column; a missing dataset, revision or column fails here, fast."""
    settings = get_settings()
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    known = lambda content_ids: runtime.job_store().known_files(request.dataset, content_ids)  # noqa: E731
    stream = open_dataset(request, token, settings.max_image_bytes, known)
    run_log().info(
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
def ingest_rows(rows: list[ImageRow], source: SceneSource, reader: ImageReader, shared_writes: bool) -> BatchOutcome:
    """Decode every image, skip and count the bad ones, write the good ones' original bytes, upsert
    their scenes. A retry repeats all of it cheaply: stored objects are found, recorded scenes kept."""
    started = time.perf_counter()
    outcome = ingest_batch(rows, source, reader, runtime.object_store(), runtime.job_store(), _write_gate(shared_writes),
                           get_settings().outage_seconds)
    run_log().info(
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


def _write_gate(shared_writes: bool) -> Any:
    """Deployment runs hold a slot of each of Prefect's global write limits while a batch writes its objects
    and scenes (`hf-ingest setup-prefect` creates them); an in-process `hf-ingest run` has nothing to share
    them with."""
    return _WRITE_SLOTS.held if shared_writes else nullcontext


_WRITE_SLOTS = WriteSlots(list(WRITE_LIMITS))  # one per process: its renewal thread serves every batch


_SLOTS: dict[int, threading.Semaphore] = {}
_SLOTS_LOCK = threading.Lock()


def _batches_in_flight(limit: int) -> threading.Semaphore:
    """The process's MAX_IN_FLIGHT_BATCHES, shared by the streams it imports at once (a shard's last batches
    finishing while the next shard's first are read): memory stays that of one stream."""
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(limit, threading.Semaphore(limit))


def ingest_stream(
    stream: DatasetStream, source: SceneSource, reader: ImageReader, reporter: ProgressReporter,
    progress: IngestProgress, read: Callable[[], None] = lambda: None,
) -> IngestProgress:
    """Read the stream into `ingest-batch` tasks, at most MAX_IN_FLIGHT_BATCHES at once in this process (memory
    stays flat), and count each batch into `progress` as it finishes, oldest first. A batch out of retries
    fails the run, its rows counted. `read` is called once the stream is read through, before its last
    batches finish (the parent of a sharded import then starts on more).

    A deployment run's writes take slots of the global limits. The task threads share this thread's
    Prefect client: each task run would otherwise build its own, with TLS contexts (~70 ms of CPU per
    batch, measured)."""
    from prefect.context import SyncClientContext

    settings = get_settings()
    shared_writes = is_deployment_run()
    in_flight: deque[tuple[PrefectFuture[BatchOutcome], int, int]] = deque()
    slots = _batches_in_flight(settings.max_in_flight_batches)

    def count_oldest() -> None:
        future, rows_in_batch, last_row = in_flight.popleft()
        try:
            progress.add(future.result())
        except Exception:  # retries exhausted: count the batch as failed, keep the counts, fail the run
            progress.failed += rows_in_batch
            reporter.report_now(progress)
            raise
        finally:
            slots.release()
        # Everything before the batch's last row is done (its last row may continue in the next batch).
        progress.next_row = last_row
        reporter.maybe_report(progress)

    held = False  # a slot taken for the next batch, not yet used

    def take_slot() -> None:
        """A slot for the next batch: the oldest batches finish until one is free (with none of this stream's
        in flight, it waits for another stream's of this process)."""
        nonlocal held
        while not slots.acquire(blocking=not in_flight):
            count_oldest()
        held = True

    def release_held() -> None:
        nonlocal held
        if held:
            held = False
            slots.release()

    def finish_in_flight() -> None:
        """The stream failed: the batches already read still finish and count, so the checkpoint keeps them."""
        while in_flight:
            try:
                count_oldest()
            except Exception:  # noqa: BLE001 - counted as failed; the stream's own error is the one raised
                continue
        reporter.report_now(progress)

    with SyncClientContext.get_or_create():  # task threads copy this context, client included
        try:
            try:
                take_slot()
                for rows in stream.batches(settings.batch_size, settings.batch_max_bytes):
                    in_flight.append(
                        (ingest_rows.submit(quote(rows), source, reader, shared_writes), len(rows), rows[-1].row_index)
                    )
                    held = False  # the batch has its slot
                    take_slot()  # before the next batch is read
            except Exception:
                release_held()
                finish_in_flight()
                raise
            release_held()
            read()
            while in_flight:
                count_oldest()
        finally:  # stopped (cancelled, interrupted): what it held goes back, or the process's next stream waits
            release_held()
            for _ in range(len(in_flight)):
                slots.release()
    progress.next_row = stream.end_row if stream.end_row is not None else progress.next_row
    return progress


class ProgressReporter:
    """Mirrors the running counts (`write`: into `jobs.progress`, or a shard's row) and the run's progress
    artifact, at most once per interval (never per image)."""

    def __init__(
        self,
        write: Callable[[IngestProgress], None],
        interval_seconds: float,
        log: StageLogger,
        artifact: ProgressArtifact | None = None,
    ) -> None:
        self.write = write
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
            self.write(progress)
        except Exception as exc:  # progress is advisory; the final counts are written again at the end
            self.log.warning("record", "progress not written", error=type(exc).__name__)
            return
        self.log.info("record", "progress", **counts)

    def finish(self, progress: IngestProgress) -> None:
        if self.artifact is not None:
            self.artifact.finish(progress.rows_seen)
