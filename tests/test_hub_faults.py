"""The Hub failing while a dataset streams: transient errors are retried and the stream resumes where it
was (not from row 0); refusals fail the import at once, naming the dataset.

Faults are injected between the client and the Hub server by the fault proxy. `huggingface_hub`
retries a failed request itself (5 times, waiting up to 23 s); these tests let it try only once, as
if the outage outlasted its retries, so that what they see is hf-ingest's own resume.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.hub_formats import encode_image, write_parquet_dataset, write_webdataset
from hf_ingest.jobstore import JobStatus
from tests.fault_proxy import Fault
from tests.hub_server import HubServer

pytestmark = pytest.mark.usefixtures("prefect_api")
ROWS = 60


@pytest.fixture(autouse=True)
def hub_client_retries_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.hf_file_system as hffs
    from huggingface_hub.utils import _http

    quick = functools.partial(_http.http_backoff, max_retries=1, base_wait_time=0.05, max_wait_time=0.1)
    monkeypatch.setattr(hffs, "http_backoff", quick)


def _images() -> list[bytes]:
    return [encode_image((30 + i % 17, 20 + i // 17), "JPEG", color=(i * 4, 100, 3)) for i in range(ROWS)]


def _data_requests(
    match: str, script: list[str | None], opening_reads: Callable[[str], int] = lambda path: 0
) -> Callable[[str, str], Fault]:
    """Fault plan: GETs of data files whose path contains `match` get the faults of `script` in order
    (None: pass), except each file's first `opening_reads(path)` GETs (its footer, read while opening)."""
    remaining = list(script)
    seen: dict[str, int] = {}

    def plan(method: str, path: str) -> Fault:
        if method != "GET" or match not in path:
            return None
        seen[path] = seen.get(path, 0) + 1
        if seen[path] <= opening_reads(path) or not remaining:
            return None
        return remaining.pop(0)

    return plan


def _scene_shas() -> dict[int, str]:
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        return {row.row_index: row.sha256 for row in conn.execute(sa.text("select row_index, sha256 from scenes"))}


def test_a_parquet_stream_resumes_after_resets_cut_bodies_5xx_and_429(
    hub: HubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = _images()
    folder = write_parquet_dataset(
        tmp_path / "repo", [{"image": data, "n": i} for i, data in enumerate(images)], shards=6, row_group_size=4
    )
    repo = f"tester/flaky-{uuid.uuid4().hex[:8]}"
    hub.publish(repo, folder)
    # Opening reads every file's footer (row counts; the first file's schema too): the faults hit the
    # stream, after that.
    hub.proxy.plan = _data_requests(
        ".parquet", [None, "cut", "cut", None, "reset", "reset", None, "500", "500", None, "429", "429"],
        opening_reads=lambda path: 2 if "00000-of" in path else 1,
    )
    job_id = uuid.uuid4()

    with caplog.at_level(logging.WARNING, logger="hf_ingest.source"):
        state = asyncio.run(hf_ingest(dataset=repo, job_id=job_id, return_state=True))

    job = runtime.job_store().get_job(job_id)
    assert job and state.is_completed() and job.status is JobStatus.COMPLETED, job and job.error
    assert {fault for _, _, fault in hub.proxy.faults} == {"cut", "reset", "500", "429"}
    resumed = [r for r in caplog.records if "resuming" in r.getMessage()]
    assert len(resumed) >= 4, [r.getMessage() for r in resumed]
    assert job.progress["rows_seen"] == ROWS  # every row once: the stream went on where it was
    assert _scene_shas() == {i: hashlib.sha256(data).hexdigest() for i, data in enumerate(images)}


def test_a_webdataset_stream_resumes_from_its_state_after_a_cut(
    hub: HubServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = _images()
    samples = [{"__key__": f"s{i:04d}", "jpg": data, "json": {"i": i}} for i, data in enumerate(images)]
    repo = f"tester/flaky-wds-{uuid.uuid4().hex[:8]}"
    hub.publish(repo, write_webdataset(tmp_path / "repo", samples, shards=3))
    hub.proxy.plan = _data_requests(".tar", [None, "cut", "cut", "cut"])
    job_id = uuid.uuid4()

    with caplog.at_level(logging.WARNING, logger="hf_ingest.source"):
        state = asyncio.run(hf_ingest(dataset=repo, job_id=job_id, return_state=True))

    job = runtime.job_store().get_job(job_id)
    assert job and state.is_completed(), job and job.error
    assert hub.proxy.faults
    assert job.progress["rows_seen"] == ROWS
    assert _scene_shas() == {i: hashlib.sha256(data).hexdigest() for i, data in enumerate(images)}


def test_a_refusal_while_streaming_fails_fast_naming_the_dataset(hub: HubServer, tmp_path: Path) -> None:
    folder = write_parquet_dataset(tmp_path / "repo", [{"image": d, "n": i} for i, d in enumerate(_images())], shards=3)
    repo = f"tester/revoked-{uuid.uuid4().hex[:8]}"
    hub.publish(repo, folder)
    hub.proxy.plan = lambda method, path: "403" if method == "GET" and "00002-of" in path else None
    job_id = uuid.uuid4()
    started = time.monotonic()

    state = asyncio.run(hf_ingest(dataset=repo, job_id=job_id, return_state=True))

    job = runtime.job_store().get_job(job_id)
    assert job and state.is_failed() and job.status is JobStatus.FAILED
    assert repo in (job.error or "") and "gated" in (job.error or "")
    assert time.monotonic() - started < 30  # no backoff on a refusal
