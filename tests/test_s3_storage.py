"""The s3:// path (as used for Cloudflare R2) against a real S3-compatible server, with injected faults."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.hub_formats import write_parquet_dataset
from hf_ingest.jobstore import JobStatus
from tests.image_cases import cases, valid_cases
from tests.fault_proxy import every_nth

pytestmark = pytest.mark.usefixtures("prefect_api")


def _dataset(root: Path, copies: int = 3) -> Path:
    """The messy cases, plus more valid JPEGs so there are enough PUTs for fault bursts."""
    from hf_ingest.hub_formats import encode_image

    rows = [{"image": c.data, "name": c.name} for c in cases()]
    rows += [{"image": encode_image((20 + i, 20), "JPEG", color=(i, 2 * i, 3)), "name": f"extra{i}"} for i in range(copies * 10)]
    return write_parquet_dataset(root / "s3-dataset", rows)


def _stored_objects(client: object, bucket: str, under: str = "") -> dict[str, bytes]:
    """The bucket's objects under `r2-prefix/` + `under` (`images/`: the originals; `derived/`: their derivatives)."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix="r2-prefix/" + under)  # type: ignore[attr-defined]
    return {
        o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()  # type: ignore[attr-defined]
        for o in listed.get("Contents", [])
    }


def test_import_to_s3_stores_objects_and_public_urls(
    isolated_settings: Path, s3_settings: str, s3_bucket: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://images.example.com/")
    runtime.reset()
    dataset = _dataset(isolated_settings, copies=1)
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id))

    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED
    everything = _stored_objects(s3_bucket[1], s3_settings)
    objects = {k: v for k, v in everything.items() if k.startswith("r2-prefix/images/")}
    derived = {k: v for k, v in everything.items() if k.startswith("r2-prefix/derived/")}
    assert len(objects) == len(valid_cases()) + 10 and len(everything) == len(objects) + len(derived)
    for key, data in objects.items():
        assert hashlib.sha256(data).hexdigest() in key
    assert derived and all(key.endswith(".webp") and data[8:12] == b"WEBP" for key, data in derived.items())
    webp = s3_bucket[1].head_object(Bucket=s3_settings, Key=next(iter(derived)))
    assert webp["ContentType"] == "image/webp"
    for case in valid_cases():
        digest = hashlib.sha256(case.data).hexdigest()
        assert objects[f"r2-prefix/images/{digest[:2]}/{digest}.{case.extension}"] == case.data
    head = s3_bucket[1].head_object(Bucket=s3_settings, Key=next(iter(objects)))
    assert head["ContentType"].startswith("image/")
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.exec_driver_sql("select url, thumbnail_url, preview_url from scenes").all()
    assert rows and all(r.url.startswith("https://images.example.com/images/") for r in rows)
    shown = {r.thumbnail_url for r in rows} | {r.preview_url for r in rows}
    assert all(u.startswith("https://images.example.com/") for u in shown)
    assert {u.removeprefix("https://images.example.com/") for u in shown if "/derived/" in u} == {
        k.removeprefix("r2-prefix/") for k in derived}


def test_transient_store_failures_are_absorbed_by_retries(
    isolated_settings: Path, s3_settings: str, s3_bucket: tuple, fault_proxy: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_SIZE", "8")
    runtime.reset()
    dataset = _dataset(isolated_settings)
    fault_proxy.plan = every_nth(3, ["500", "503", "reset"])  # type: ignore[attr-defined]
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id))

    injected = {f for _, _, f in fault_proxy.faults}  # type: ignore[attr-defined]
    assert injected == {"500", "503", "reset"}
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED, job and job.error
    objects = _stored_objects(s3_bucket[1], s3_settings, "images/")
    expected = len(valid_cases()) + 30
    assert len(objects) == expected == runtime.job_store().count_scenes(job_id=job_id)
    for key, data in objects.items():  # every object intact
        assert hashlib.sha256(data).hexdigest() in key
    derived = _stored_objects(s3_bucket[1], s3_settings, "derived/")
    assert derived
    for data in derived.values():  # every derivative intact
        Image.open(io.BytesIO(data)).load()


def test_a_store_that_never_recovers_fails_the_job_in_bounded_time(
    isolated_settings: Path, s3_settings: str, fault_proxy: object
) -> None:
    dataset = _dataset(isolated_settings, copies=1)
    fault_proxy.plan = lambda method, path: "503" if method == "PUT" else None  # type: ignore[attr-defined]
    job_id = uuid.uuid4()
    started = time.monotonic()
    state = asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id, return_state=True))
    elapsed = time.monotonic() - started

    assert state.is_failed()
    assert elapsed < 120, f"took {elapsed:.0f}s"
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.FAILED
    assert "reduce your request rate" in (job.error or "") or "SlowDown" in (job.error or ""), job.error
    assert len(fault_proxy.faults) > 4  # type: ignore[attr-defined]  (it was retried, with backoff)
    assert job.progress["failed"] > 0  # the rows of the batch that could not be stored


def test_a_missing_bucket_fails_fast_and_names_the_store(
    isolated_settings: Path, s3_settings: str, s3_bucket: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_URL", "s3://no-such-bucket-here/x")
    runtime.reset()
    job_id = uuid.uuid4()
    started = time.monotonic()
    state = asyncio.run(hf_ingest(dataset=str(_dataset(isolated_settings, copies=0)), job_id=job_id, return_state=True))
    assert state.is_failed()
    assert time.monotonic() - started < 30
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.FAILED
    assert "cannot write to s3://no-such-bucket-here/x" in (job.error or "") and "bucket does not exist" in (job.error or "")


def test_an_r2_block_on_the_prefect_server_replaces_the_environment(
    isolated_settings: Path, s3_bucket: tuple, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment can keep the bucket settings in a Prefect Block instead of environment variables."""
    from blocks.prefect_blocks import R2Bucket
    from tests.conftest import S3_KEY_ID, S3_SECRET

    bucket, client = s3_bucket
    name = f"r2-{uuid.uuid4().hex[:8]}"
    R2Bucket(
        storage_url=f"s3://{bucket}/r2-prefix",
        endpoint_url=moto_endpoint,
        access_key_id=S3_KEY_ID,
        secret_access_key=S3_SECRET,
        public_base_url="https://cdn.example.com",
    ).save(name)
    monkeypatch.setenv("STORAGE_BLOCK", name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    runtime.reset()
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(_dataset(isolated_settings, copies=0)), job_id=job_id))

    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED
    assert len(_stored_objects(client, bucket, "images/")) == len(valid_cases())
    assert not (isolated_settings / "objects").exists()  # nothing went to the default local folder
