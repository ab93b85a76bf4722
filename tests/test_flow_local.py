"""The hf-ingest flow end to end on the embedded defaults: real Prefect server, SQLite, local folder."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelled, Cancelling, Completed, Crashed, Failed, Running

from flows.import_dataset import hf_ingest
from flows.job_state_hooks import mirror_state
from hf_ingest import runtime
from hf_ingest.hub_formats import write_imagefolder, write_parquet_dataset
from hf_ingest.jobstore import JobStatus
from hf_ingest.storage import object_key
from tests.image_cases import cases, corrupt_first_data_page, expected_invalid, valid_cases

pytestmark = pytest.mark.usefixtures("prefect_api")


def _parquet_dataset(root: Path) -> Path:
    rows = [
        {"image": c.data, "name": c.name, "index": i, "weight": i / 2, "keep": c.invalid_reason is None}
        for i, c in enumerate(cases())
    ]
    return write_parquet_dataset(root / "messy-parquet", rows, shards=2)


def _imagefolder_dataset(root: Path) -> Path:
    files = [(f"{c.name}/{c.name}.{c.extension}", c.data, {"name": c.name}) for c in cases()]
    return write_imagefolder(root / "messy-imagefolder", files)


def _scene_rows(job_id: uuid.UUID) -> list[dict]:
    store = runtime.job_store()
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        result = conn.execute(sa.text("select * from scenes where job_id = :j order by row_index"), {"j": job_id.hex})
        return [dict(r._mapping) for r in result]


def _assert_exactly_valid_images_stored(job_id: uuid.UUID, objects_root: Path) -> None:
    store = runtime.object_store()
    scenes = _scene_rows(job_id)
    assert len(scenes) == len(valid_cases())
    expected = {hashlib.sha256(c.data).hexdigest(): c for c in valid_cases()}
    assert {s["sha256"] for s in scenes} == set(expected)
    for scene in scenes:
        case = expected[scene["sha256"]]
        assert scene["object_key"] == object_key(scene["sha256"], case.extension)
        assert store.read(scene["object_key"]) == case.data  # byte for byte, never re-encoded
        assert scene["bytes"] == len(case.data)
        assert scene["content_type"].startswith("image/")
        assert scene["url"] == (objects_root / scene["object_key"]).resolve().as_uri()
    assert store.count_objects() == len(valid_cases())


@pytest.mark.parametrize("layout", ["parquet", "imagefolder"])
def test_import_stores_exactly_the_valid_images_and_counts_the_rest(
    layout: str, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCH_SIZE", "4")  # several batches, several in flight
    runtime.reset()
    dataset = _parquet_dataset(isolated_settings) if layout == "parquet" else _imagefolder_dataset(isolated_settings)
    job_id = uuid.uuid4()

    result = asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id))

    job = runtime.job_store().get_job(job_id)
    assert job is not None and job.status is JobStatus.COMPLETED, job
    assert job.started_at and job.finished_at and job.started_at <= job.finished_at
    assert job.error is None
    assert job.progress["rows_seen"] == len(cases())
    assert job.progress["invalid"] == expected_invalid()
    assert job.progress["stored"] == len(valid_cases())
    assert job.progress["scenes_recorded"] == len(valid_cases())
    assert job.progress["bytes_stored"] == sum(len(c.data) for c in valid_cases())
    assert result["stored"] == len(valid_cases())
    _assert_exactly_valid_images_stored(job_id, isolated_settings / "objects")
    if layout == "parquet":
        first = _scene_rows(job_id)[0]
        assert json.loads(first["metadata"]) == {"name": "jpeg", "index": 0, "weight": 0.0, "keep": True}
        assert first["dataset"] == str(dataset.resolve()) and first["config"] == "default"


def test_a_database_blip_while_a_batch_records_retries_the_batch_and_loses_nothing(
    isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest-batch task records its scenes; a dropped connection there is waited out (the database
    restarting) and the scenes are recorded again: every object stored once, every scene recorded once."""
    from sqlalchemy.exc import OperationalError

    monkeypatch.setenv("BATCH_SIZE", "4")
    runtime.reset()
    store = runtime.job_store()
    real_upsert = store.upsert_scenes
    failures: list[int] = []

    def upsert_dropping_the_second_batch(rows: list) -> int:  # the real upsert, once the "database" is back
        if rows and rows[0].row_index == 4 and not failures:
            failures.append(len(rows))
            raise OperationalError("INSERT INTO scenes ...", {}, ConnectionError("server closed the connection"))
        return real_upsert(rows)

    monkeypatch.setattr(store, "upsert_scenes", upsert_dropping_the_second_batch)
    job_id = uuid.uuid4()

    asyncio.run(hf_ingest(dataset=str(_parquet_dataset(isolated_settings)), job_id=job_id))

    job = store.get_job(job_id)
    assert failures, "the fault was injected"
    assert job is not None and job.status is JobStatus.COMPLETED, job
    assert job.progress["scenes_recorded"] == len(valid_cases())
    assert job.progress["stored"] == len(valid_cases()) and job.progress["already_present"] == 0  # written once
    assert job.progress["failed"] == 0
    _assert_exactly_valid_images_stored(job_id, isolated_settings / "objects")


def test_running_the_same_import_again_adds_nothing(isolated_settings: Path) -> None:
    dataset = _parquet_dataset(isolated_settings)
    first, second = uuid.uuid4(), uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=first))
    objects = runtime.object_store().count_objects()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=second))

    job = runtime.job_store().get_job(second)
    assert job and job.status is JobStatus.COMPLETED
    assert job.progress["stored"] == 0 and job.progress["rows_seen"] == 0  # its file is as recorded: not read
    assert job.progress["files_kept"] == 2 and job.progress["scenes_recorded"] == 0
    assert runtime.object_store().count_objects() == objects
    assert runtime.job_store().count_scenes() == len(valid_cases())


def test_limit_and_explicit_image_column(isolated_settings: Path) -> None:
    dataset = _parquet_dataset(isolated_settings)
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), image_column="image", limit=3, job_id=job_id))
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED and job.progress["rows_seen"] == 3
    assert job.params["limit"] == 3


def test_dataset_without_an_image_column_fails_with_a_readable_error(isolated_settings: Path) -> None:
    dataset = write_parquet_dataset(isolated_settings / "no-images", [{"text": "a", "n": 1}, {"text": "b", "n": 2}])
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id, return_state=True))
    assert state.is_failed()
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.FAILED and job.finished_at
    assert "has no image column" in (job.error or "") and "columns: text (Value('string')), n (Value('int64'))" in (job.error or "")
    assert runtime.job_store().count_scenes() == 0


def test_unknown_image_column_and_missing_dataset_fail_fast(isolated_settings: Path) -> None:
    dataset = _parquet_dataset(isolated_settings)
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=str(dataset), image_column="photo", job_id=job_id, return_state=True))
    assert state.is_failed()
    job = runtime.job_store().get_job(job_id)
    assert job and "image column 'photo' is not in" in (job.error or "")

    missing = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=str(isolated_settings / "nowhere"), job_id=missing, return_state=True))
    job = runtime.job_store().get_job(missing)
    assert job and job.status is JobStatus.FAILED and "is neither a local dataset folder nor a Hub dataset id" in (job.error or "")


def test_a_corrupt_data_file_fails_the_job_naming_it_and_keeps_the_rows_read_before(isolated_settings: Path) -> None:
    """A damaged parquet file (footer intact) is not a bad image to skip: the job fails with the file and row
    it stopped at, and every row of the files before it is stored and counted (a retry resumes after them)."""
    from hf_ingest.hub_formats import encode_image

    rows = [{"image": encode_image((20 + i % 7, 20), "PNG", color=(i, 0, 0)), "i": i} for i in range(90)]
    dataset = write_parquet_dataset(isolated_settings / "damaged", rows, shards=3)
    damaged = sorted(dataset.rglob("*.parquet"))[2]
    corrupt_first_data_page(damaged)
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id, return_state=True))
    assert state.is_failed()
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.FAILED
    assert f"at {damaged}, row 0 of that file: OSError: Couldn't deserialize thrift" in (job.error or ""), job.error
    assert job.progress["stored"] == job.progress["rows_seen"] == 60
    assert [s["row_index"] for s in _scene_rows(job_id)] == list(range(60))


def test_a_run_without_job_id_creates_its_own_job(isolated_settings: Path) -> None:
    dataset = _parquet_dataset(isolated_settings)
    state = asyncio.run(hf_ingest(dataset=str(dataset), limit=2, return_state=True))
    result = state.result()
    job = runtime.job_store().get_job(uuid.UUID(result["job_id"]))
    assert job and job.status is JobStatus.COMPLETED
    assert job.flow_run_id == result["job_id"]  # the run's own id is the job's id
    assert job.params["dataset"] == str(dataset.resolve())
    assert "source:cli" in asyncio.run(_read_flow_run(result["job_id"])).tags  # in process, not a deployment run


async def _read_flow_run(flow_run_id: str) -> FlowRun:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_flow_run(uuid.UUID(flow_run_id))


class Boom(BaseException):
    """Not an Exception: Prefect treats it as the flow run process dying (Crashed)."""


def test_a_crashed_run_ends_failed_with_crashed_in_the_error(
    isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.import_tasks as module

    def crash(*_: object, **__: object) -> None:
        raise Boom("worker vanished")

    monkeypatch.setattr(module, "open_dataset", crash)
    job_id = uuid.uuid4()
    with pytest.raises(Boom):
        asyncio.run(hf_ingest(dataset=str(_parquet_dataset(isolated_settings)), job_id=job_id))
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.FAILED and job.finished_at
    assert (job.error or "").startswith("crashed:")


@pytest.mark.parametrize(
    ("states", "expected", "error"),
    [
        ([Running(), Completed()], JobStatus.COMPLETED, None),
        ([Running(), Failed(message="Flow run encountered an exception: OSError: store down")], JobStatus.FAILED,
         "Flow run encountered an exception: OSError: store down"),
        ([Running(), Crashed(message="Execution was interrupted by a SIGKILL")], JobStatus.FAILED,
         "crashed: Execution was interrupted by a SIGKILL"),
        ([Running(), Cancelling(message="cancelled by user")], JobStatus.CANCELLED, "cancelled by user"),
        ([Cancelled()], JobStatus.CANCELLED, "cancelled"),
        ([Running(), Completed(), Failed(message="late")], JobStatus.COMPLETED, None),
        ([Running(), Cancelling(), Cancelled(), Running()], JobStatus.CANCELLED, "cancelled"),
    ],
    ids=["completed", "failed", "crashed", "cancelling", "cancelled-from-queued", "terminal-sticks", "no-revival"],
)
def test_hook_mirrors_prefect_states_forward_only(states: list, expected: JobStatus, error: str | None) -> None:
    store = runtime.job_store()
    job_id = uuid.uuid4()
    store.create_job(job_id, {"dataset": "a/b"})
    flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="x", parameters={"dataset": "a/b", "job_id": str(job_id)})
    for state in states:
        mirror_state(store, flow_run, state)
    job = store.get_job(job_id)
    assert job and job.status is expected and job.error == error
    assert job.flow_run_id == str(flow_run.id)
    assert job.finished_at is not None
    if any(s.is_running() for s in states):
        assert job.started_at is not None and job.started_at <= job.finished_at


def test_hostile_rows_are_skipped_and_counted_never_read(isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Path-only rows are read only inside the dataset folder: a path anywhere else (absolute, `..`,
    a symlink out, /dev/zero, a URL) is `outside_dataset` and never opened; null images, missing files,
    folders, FIFOs, a header claiming 4 billion pixels and a file over MAX_IMAGE_BYTES are counted too."""
    import os

    from hf_ingest.hub_formats import encode_image
    from tests.image_cases import png_claiming

    dataset = isolated_settings / "hostile"
    (dataset / "images").mkdir(parents=True)
    (dataset / "data").mkdir()
    real = encode_image((50, 40), "PNG")
    (dataset / "images" / "real.png").write_bytes(real)
    (dataset / "images" / "big.png").write_bytes(encode_image((300, 300), "PNG", color=(3, 4, 5)))
    secret = isolated_settings / "secret.png"  # a valid image, but not the dataset's
    secret.write_bytes(encode_image((9, 9), "PNG", color=(66, 66, 66)))
    (dataset / "images" / "escape.png").symlink_to(secret)
    os.mkfifo(dataset / "images" / "pipe.png")
    paths = {
        "images/real.png": "stored",
        str(dataset / "images" / "real.png"): "stored",
        "images/../images/real.png": "stored",
        "images/missing.jpg": "missing_file",
        "images": "not_an_image",
        "images/pipe.png": "not_an_image",
        "images/big.png": "too_large",
        str(secret): "outside_dataset",
        "../secret.png": "outside_dataset",
        "images/escape.png": "outside_dataset",
        "/dev/zero": "outside_dataset",
        "/etc/passwd": "outside_dataset",
        f"file://{dataset / 'images' / 'real.png'}": "outside_dataset",
        "http://169.254.169.254/latest/meta-data/": "outside_dataset",
        "s3://another-bucket/image.png": "outside_dataset",
        "hf://datasets/someone/else@main/image.png": "outside_dataset",
    }
    images = [{"bytes": None, "path": path} for path in paths]
    images += [None, {"bytes": png_claiming(65_535, 65_535), "path": None}, {"bytes": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "path": None}]
    _write_raw_parquet(dataset, images)

    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(real) + 10))
    runtime.reset()
    job_id = uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=job_id))
    job = runtime.job_store().get_job(job_id)
    assert job and job.status is JobStatus.COMPLETED, job
    expected: dict[str, int] = {}
    for fate in paths.values():
        if fate != "stored":
            expected[fate] = expected.get(fate, 0) + 1
    expected["empty"] = 1
    expected["too_large"] += 1
    expected["not_an_image"] += 1
    assert job.progress["invalid"] == expected
    assert job.progress["scenes_recorded"] == 3 and job.progress["stored"] == 1  # three rows, one object
    assert runtime.object_store().read(object_key(hashlib.sha256(real).hexdigest(), "png")) == real


def _write_raw_parquet(dataset: Path, images: list) -> None:
    """Image rows written as they are (to_parquet would try to embed the files the paths name)."""
    import pyarrow.parquet as pq
    from datasets import Dataset, Features, Image, Value

    table = Dataset.from_dict(
        {"image": images, "n": list(range(len(images)))}, features=Features({"image": Image(), "n": Value("int64")})
    ).data.table
    pq.write_table(table, dataset / "data" / "train-00000-of-00001.parquet")
