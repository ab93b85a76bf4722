"""The raw limit: the same work as the flow (stream, full decode, hash, write originals, record rows:
`hf_ingest.pipeline.ingest_batch`) in a plain thread pool, with no orchestration.

Usage: python -m bench.raw DATASET [FIRST_ROW END_ROW]; prints JSON. With a row range it does one
part of the split (the machine's limit is N of these at once, one per core, each over its part)."""

from __future__ import annotations

from hf_ingest.fast_exit import exit_after_cleanup  # first, as in the CLI: both skip module teardown

import json
import sys
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from blocks.settings import get_settings
from hf_ingest import runtime
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
    return {"images": images, "bytes": stored_bytes, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    rows = [int(n) for n in sys.argv[2:4]]
    print(json.dumps(main(sys.argv[1], *rows)))
    exit_after_cleanup(0)
