"""The naive design the batching must beat: one Prefect task per image.
Usage: python -m bench.naive DATASET (against PREFECT_API_URL); prints JSON."""

from __future__ import annotations

import json
import sys
import time
import uuid

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.settings import get_settings
from hf_ingest import runtime
from hf_ingest.pipeline import ImageReader, SceneSource, ingest_batch
from hf_ingest.source import DatasetRequest, ImageRow, canonical_dataset, open_dataset


@task(cache_policy=NO_CACHE, persist_result=False)
def ingest_one(row: ImageRow, source: SceneSource, reader: ImageReader) -> int:
    outcome = ingest_batch([row], source, reader, runtime.object_store(), runtime.job_store())
    return outcome.scenes_recorded


@flow(name="hf-ingest-naive", task_runner=ThreadPoolTaskRunner(max_workers=4))
def naive(dataset: str) -> int:
    request = DatasetRequest(canonical_dataset(dataset))
    job_id = uuid.uuid4()
    runtime.job_store().create_job(job_id, request.as_params())
    stream = open_dataset(request)
    source = SceneSource.for_stream(job_id, stream)
    reader = ImageReader.for_stream(stream, get_settings().max_image_pixels, get_settings().derivative_sizes)
    futures = [ingest_one.submit(row, source, reader) for rows in stream.batches(256, 2**26) for row in rows]
    return sum(f.result() for f in futures)


if __name__ == "__main__":
    started = time.perf_counter()
    images = naive(sys.argv[1])
    print(json.dumps({"images": images, "seconds": time.perf_counter() - started}))
