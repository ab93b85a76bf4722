"""The raw limit: the same work as the flow (stream, full decode, hash, write originals, record rows:
`hf_ingest.pipeline.ingest_batch`) in a plain thread pool, then the split's near-duplicate grouping (as the
flow's end does, with DERIVATIVES on), with no orchestration.

Usage: python -m bench.raw DATASET [FIRST_ROW END_ROW]; prints JSON. With a row range it does one
part of the split (the machine's limit is N of these at once, one per core, each over its part); the part
that starts at row 0 groups the split once every part has recorded its rows (as a sharded import's parent
does): each part leaves a file in BENCH_RAW_PARTS_DIR when its rows are in, and the grouping waits for
BENCH_RAW_PARTS of them."""

from __future__ import annotations

from hf_ingest.fast_exit import exit_after_cleanup  # first, as in the CLI: both skip module teardown

import json
import os
import sys
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from blocks.settings import get_settings
from hf_ingest import runtime
from hf_ingest.near_duplicates import regroup
from hf_ingest.pipeline import BatchOutcome, ImageReader, SceneSource, ingest_batch
from hf_ingest.source import DatasetRequest, ImageRow, canonical_dataset, open_dataset


def main(dataset: str, first_row: int | None = None, end_row: int | None = None) -> dict[str, float]:
    started = time.perf_counter()
    settings = get_settings()
    store, objects = runtime.job_store(), runtime.object_store()
    job_id = uuid.uuid4()
    request = DatasetRequest(canonical_dataset(dataset))
    store.create_job(job_id, request.as_params())
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    stream = open_dataset(request, token, settings.max_image_bytes)
    if first_row is not None and end_row is not None:
        stream = stream.rows_between(first_row, end_row)
    source = SceneSource.for_stream(job_id, stream)
    reader = ImageReader.for_stream(stream, settings.max_image_pixels, settings.derivative_sizes)

    def work(rows: list[ImageRow]) -> BatchOutcome:
        return ingest_batch(rows, source, reader, objects, store)

    images = stored_bytes = 0
    with runtime.long_lived_objects_frozen(), ThreadPoolExecutor(max_workers=settings.max_in_flight_batches) as pool:
        pending: deque[Future[BatchOutcome]] = deque()

        def count_oldest() -> None:
            nonlocal images, stored_bytes
            batch = pending.popleft().result()
            images, stored_bytes = images + batch.scenes_recorded, stored_bytes + batch.bytes_stored

        for rows in stream.batches(settings.batch_size, settings.batch_max_bytes):
            pending.append(pool.submit(work, rows))
            if len(pending) >= settings.max_in_flight_batches:
                count_oldest()
        while pending:
            count_oldest()
    grouping = 0.0
    if settings.derivatives and not first_row:  # the whole split, or the part that starts it: group it
        wait_for_other_parts()
        grouping = time.perf_counter()
        regroup(store, stream.split, settings.near_duplicate_distance)
        grouping = time.perf_counter() - grouping
    return {"images": images, "bytes": stored_bytes, "seconds": time.perf_counter() - started,
            "group_seconds": grouping}


def part_done(first_row: int) -> None:
    """This part is over (its rows recorded, or it failed): the part that groups the split may go on."""
    if folder := os.environ.get("BENCH_RAW_PARTS_DIR"):
        (Path(folder) / f"{first_row}.done").touch()


def wait_for_other_parts() -> None:
    """Until every other part of the split has recorded its rows (none when the split is read whole)."""
    folder, parts = os.environ.get("BENCH_RAW_PARTS_DIR"), int(os.environ.get("BENCH_RAW_PARTS", 1))
    while folder and len(list(Path(folder).glob("*.done"))) < parts - 1:
        time.sleep(0.02)


if __name__ == "__main__":
    rows = [int(n) for n in sys.argv[2:4]]
    try:
        print(json.dumps(main(sys.argv[1], *rows)))
    finally:
        if rows and rows[0] > 0:
            part_done(rows[0])
    exit_after_cleanup(0)
