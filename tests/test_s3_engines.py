"""Both S3 upload engines against a real, fast S3 server (SeaweedFS): the same objects and counts, and
obstore's conditional creates (no HEAD per object), with a fallback for a store that ignores them."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.hub_formats import encode_image, write_parquet_dataset
from hf_ingest.jobstore import JobStatus
from hf_ingest.storage import PutOutcome, PutRequest, object_key
from tests.fault_proxy import FaultProxy
from tests.seaweed_server import SeaweedServer

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def seaweed_proxy(seaweed: SeaweedServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(seaweed.s3_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def _point_at(seaweed: SeaweedServer, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, engine: str) -> str:
    bucket = f"engines-{uuid.uuid4().hex[:10]}"
    seaweed.create_bucket(bucket)
    for name, value in seaweed.env(bucket).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("S3_CLIENT", engine)
    runtime.reset()
    return bucket


def _images(count: int) -> list[bytes]:
    return [encode_image((30 + i % 13, 20 + i // 13), "JPEG", color=(i, 7, 7)) for i in range(count)]


@pytest.mark.parametrize("engine", ["obstore", "s3fs"])
def test_both_engines_store_the_same_objects_and_count_honestly_on_a_rerun(
    isolated_settings: Path, seaweed: SeaweedServer, seaweed_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch,
    engine: str,
) -> None:
    images = _images(60)
    dataset = write_parquet_dataset(isolated_settings / "ds", [{"image": d, "i": i} for i, d in enumerate(images)])
    _point_at(seaweed, seaweed_proxy, monkeypatch, engine)

    first, again = uuid.uuid4(), uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=first))
    seaweed_proxy.requests.clear()
    copy = shutil.copytree(dataset, isolated_settings / "same-images")  # another dataset: read, its objects found
    asyncio.run(hf_ingest(dataset=str(copy), job_id=again))
    methods = [method for method, path in seaweed_proxy.requests if "/images/" in path]

    store = runtime.job_store()
    done, repeat = store.get_job(first), store.get_job(again)
    assert done and repeat and done.status is repeat.status is JobStatus.COMPLETED
    assert (done.progress["stored"], done.progress["already_present"]) == (60, 0)
    assert (repeat.progress["stored"], repeat.progress["already_present"]) == (0, 60)
    objects = runtime.object_store()
    for data in images:
        assert objects.read(object_key(hashlib.sha256(data).hexdigest(), "jpg")) == data
    if engine == "obstore":  # conditional creates: one PUT per object, never a HEAD
        assert methods.count("PUT") == 60 and "HEAD" not in methods
    else:
        assert methods.count("HEAD") == 60 and "PUT" not in methods


def test_a_store_that_ignores_conditional_writes_is_detected_and_counts_stay_honest(
    isolated_settings: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy that answers a refused `If-None-Match` create with 200, as a store that ignores the
    condition would: the probe finds that out, and the uploads check each object first (HEAD), so
    `already_present` stays true."""
    proxy = FaultProxy(seaweed.s3_port, ignore_conditional_writes=True).start()
    try:
        _point_at(seaweed, proxy, monkeypatch, "obstore")
        objects = runtime.object_store()
        requests = [PutRequest(f"images/t/{i}.jpg", data, "image/jpeg") for i, data in enumerate(_images(5))]
        assert set(objects.put_many(requests).values()) == {PutOutcome.STORED}
        assert set(objects.put_many(requests).values()) == {PutOutcome.ALREADY_PRESENT}
        assert objects.uploader._honours_create is False  # noqa: SLF001 - the fallback was chosen
        heads = [p for m, p in proxy.requests if m == "HEAD" and "/images/t/" in p]
        assert len(heads) == 10
    finally:
        proxy.stop()


def test_the_obstore_engine_survives_resets_and_5xx_with_every_object_intact(
    isolated_settings: Path, seaweed: SeaweedServer, seaweed_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fault_proxy import every_nth

    images = _images(40)
    dataset = write_parquet_dataset(isolated_settings / "ds", [{"image": d, "i": i} for i, d in enumerate(images)])
    _point_at(seaweed, seaweed_proxy, monkeypatch, "obstore")
    monkeypatch.setenv("BATCH_SIZE", "8")
    runtime.reset()
    seaweed_proxy.plan = every_nth(4, ["500", "503", "reset"])
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id))
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED, job and job.error
    assert {fault for _, _, fault in seaweed_proxy.faults} == {"500", "503", "reset"}
    assert job.progress["stored"] + job.progress["already_present"] == 40
    objects = runtime.object_store()
    for data in images:
        assert objects.read(object_key(hashlib.sha256(data).hexdigest(), "jpg")) == data
