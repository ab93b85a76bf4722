"""Planning shards, recording them (SQLite, PostgreSQL, and the Supabase REST client at the HTTP layer),
summing their counts, and resuming a job as its successor with its finished shards kept."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from hf_ingest.jobstore import JobStatus, Shard, ShardStatus
from hf_ingest.jobstore.sql import SqlJobStore
from hf_ingest.resume import create_successor, successor_id
from hf_ingest.shards import aggregate_counts, plan_shards, shard_count
from tests.test_jobstore_sql import _fresh_database


@pytest.mark.parametrize(("rows", "count", "expected"), [
    (0, 1, [(0, 0)]), (10, 1, [(0, 10)]), (1001, 2, [(0, 501), (501, 1001)]),
    (4000, 4, [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000)]),
])
def test_shards_are_contiguous_row_ranges_covering_every_row_once(
    rows: int, count: int, expected: list[tuple[int, int]]
) -> None:
    shards = plan_shards(uuid.uuid4(), [(0, rows)], count)
    assert [(s.first_row, s.end_row) for s in shards] == expected
    assert [s.shard for s in shards] == list(range(len(shards)))


@pytest.mark.parametrize(("rows", "slots", "expected"), [
    (4_000, 8, 4),  # every shard holds at least SHARD_ROWS: 4, though 8 could run at once
    (4_000, 3, 3),  # one per slot, so every shard starts at once (no second round paying the start-up again)
    (1_999, 8, 1),  # not two shards' worth: one process
    (10_000_000, 100, 50),  # never more than MAX_SHARDS
])
def test_one_shard_per_slot_each_of_at_least_shard_rows(rows: int, slots: int, expected: int) -> None:
    count = shard_count(rows, 0, shard_rows=1000, shard_bytes=2**30, max_shards=50, slots=slots)
    assert count == expected
    shards = plan_shards(uuid.uuid4(), [(0, rows)], count)
    assert len(shards) == expected and shards[-1].end_row == rows
    assert all(b.first_row == a.end_row for a, b in zip(shards, shards[1:]))


@pytest.mark.parametrize(("rows", "data_bytes", "slots", "expected"), [
    (2_000, 400 * 2**20, 8, 6),  # 2,000 photos of 200 KB: cut by their bytes (at least 64 MiB a shard), not rows
    (2_000, 400 * 2**20, 4, 4),  # ...one per slot
    (2_000, 1 * 2**20, 8, 1),  # small images: the rows decide
    (3, 10 * 2**30, 8, 3),  # never more shards than rows
])
def test_large_images_are_sharded_by_their_bytes(rows: int, data_bytes: int, slots: int, expected: int) -> None:
    count = shard_count(rows, data_bytes, shard_rows=50_000, shard_bytes=64 * 2**20, max_shards=64, slots=slots)
    assert count == expected
    shards = plan_shards(uuid.uuid4(), [(0, rows)], count)
    assert len(shards) == expected and shards[-1].end_row == rows


def test_counts_are_summed_with_shards_done_and_total() -> None:
    job = uuid.uuid4()
    shards = [
        Shard(job, 0, 0, 10, ShardStatus.COMPLETED, 10, {"rows_seen": 10, "stored": 7, "invalid": {"corrupt": 3},
                                                        "revision": "c" * 40, "bytes_stored": 700}),
        Shard(job, 1, 10, 20, ShardStatus.RUNNING, 4, {"rows_seen": 4, "stored": 4, "invalid": {"corrupt": 1, "empty": 2}}),
        Shard(job, 2, 20, 30),
    ]
    progress = aggregate_counts(shards)
    assert progress["rows_seen"] == 14 and progress["stored"] == 11 and progress["bytes_stored"] == 700
    assert progress["invalid"] == {"corrupt": 4, "empty": 2} and progress["invalid_total"] == 6
    assert (progress["shards_done"], progress["shards_total"]) == (1, 3) and progress["revision"] == "c" * 40


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlJobStore]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite" else _fresh_database(
        request.getfixturevalue("postgres_url"))
    store = SqlJobStore.from_url(url)
    yield store
    store.engine.dispose()


def test_shards_are_recorded_once_and_a_completed_shard_stays_completed(store: SqlJobStore) -> None:
    job = uuid.uuid4()
    store.create_job(job, {"dataset": "o/n"})
    planned = plan_shards(job, [(0, 3000)], 3)
    assert [s.status for s in store.add_shards(planned)] == [ShardStatus.PENDING] * 3
    store.update_shard(job, 1, status=ShardStatus.RUNNING, flow_run_id="run-1", attempt=True, checkpoint=400,
                       counts={"rows_seen": 400})
    store.update_shard(job, 0, status=ShardStatus.COMPLETED, checkpoint=1000)
    store.update_shard(job, 0, status=ShardStatus.FAILED, error="late hook")  # too late: it completed
    again = store.add_shards(plan_shards(job, [(0, 3000)], 3))  # planning again changes nothing
    assert [(s.status, s.checkpoint, s.attempts) for s in again] == [
        (ShardStatus.COMPLETED, 1000, 0), (ShardStatus.RUNNING, 400, 1), (ShardStatus.PENDING, 0, 0)]
    assert again[1].counts == {"rows_seen": 400} and again[1].flow_run_id == "run-1" and again[0].error is None


def test_a_successor_job_keeps_finished_shards_and_resumes_the_rest_from_their_checkpoints(store: SqlJobStore) -> None:
    job = uuid.uuid4()
    store.create_job(job, {"dataset": "o/n"})
    store.add_shards(plan_shards(job, [(0, 3000)], 3))
    store.update_shard(job, 0, status=ShardStatus.COMPLETED, checkpoint=1000, counts={"rows_seen": 1000})
    store.update_shard(job, 1, status=ShardStatus.FAILED, checkpoint=250, counts={"rows_seen": 250}, attempt=True)
    store.advance(job, JobStatus.FAILED, error="shard 1 failed")
    old = store.get_job(job)
    assert old is not None

    successor = create_successor(store, old, old.params)
    assert successor.id == successor_id(job) and create_successor(store, old, old.params).id == successor.id
    assert successor.status is JobStatus.QUEUED and store.get_job(job).status is JobStatus.FAILED  # type: ignore[union-attr]
    shards = store.list_shards(successor.id)
    assert [(s.status, s.checkpoint, s.counts.get("rows_seen"), s.attempts) for s in shards] == [
        (ShardStatus.COMPLETED, 1000, 1000, 0), (ShardStatus.PENDING, 250, 250, 0), (ShardStatus.PENDING, 0, None, 0)]


def test_the_supabase_store_sends_shards_as_postgrest_requests() -> None:
    from hf_ingest.jobstore.supabase import SupabaseJobStore

    job = uuid.uuid4()
    row = {"job_id": str(job), "shard": 0, "first_row": 0, "end_row": 10, "status": "pending", "checkpoint": 0,
           "counts": {}, "attempts": 0, "flow_run_id": None, "error": None}
    store = SupabaseJobStore.from_credentials("https://ref.supabase.co", "service-role-key-0123456789")
    with respx.mock(base_url="https://ref.supabase.co/rest/v1") as api:
        insert = api.post("/job_shards").mock(return_value=httpx.Response(201))
        listed = api.get("/job_shards").mock(return_value=httpx.Response(200, json=[row]))
        update = api.patch("/job_shards").mock(return_value=httpx.Response(204))
        assert store.add_shards(plan_shards(job, [(0, 10)], 1))[0].end_row == 10
        store.update_shard(job, 0, status=ShardStatus.RUNNING, checkpoint=5, attempt=True)
    sent = json.loads(insert.calls.last.request.content)
    assert sent[0]["job_id"] == str(job) and insert.calls.last.request.url.params["on_conflict"] == "job_id,shard"
    assert listed.calls.last.request.url.params["job_id"] == f"eq.{job}"
    patch = update.calls.last.request
    assert json.loads(patch.content) == {**json.loads(patch.content), "status": "running", "checkpoint": 5, "attempts": 1}
    assert patch.url.params["status"] == "neq.completed" and patch.url.params["shard"] == "eq.0"


@pytest.fixture(scope="module")
def three_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 rows in 3 parquet files of small row groups: shards cross both file and row-group boundaries."""
    from hf_ingest.hub_formats import encode_image, write_parquet_dataset

    rows = [{"image": encode_image((8 + i % 5, 8), "PNG", color=(i, 0, 0)), "i": i} for i in range(70)]
    return write_parquet_dataset(tmp_path_factory.mktemp("three-files"), rows, shards=3, row_group_size=9)


def _read(stream: object) -> list[tuple[int, int]]:
    return [(row.row_index, row.metadata["i"]) for batch in stream.batches(16, 2**20) for row in batch]  # type: ignore[attr-defined]


def test_a_shard_reads_exactly_its_rows_with_the_identity_they_have_unsharded(three_files: Path) -> None:
    from hf_ingest.source import DatasetRequest, open_dataset

    stream = open_dataset(DatasetRequest(str(three_files)))
    assert stream.shardable and stream.total_rows == 70 and stream.bytes_of(stream.rows_to_read) > 0
    whole = _read(stream)
    assert whole == [(i, i) for i in range(70)]
    shards = plan_shards(uuid.uuid4(), [(0, 70)], 4)
    pieces = [_read(open_dataset(DatasetRequest(str(three_files))).rows_between(s.first_row, s.end_row)) for s in shards]
    assert [row for piece in pieces for row in piece] == whole  # every row once, same row_index
    resumed = _read(open_dataset(DatasetRequest(str(three_files))).rows_between(23 + 11, 47))  # from a checkpoint
    assert resumed == [(i, i) for i in range(34, 47)]


def test_bytes_to_read_follows_the_limit(three_files: Path) -> None:
    from hf_ingest.source import DatasetRequest, open_dataset

    whole = open_dataset(DatasetRequest(str(three_files)))
    half = open_dataset(DatasetRequest(str(three_files), limit=35))
    assert half.rows_to_read == 35 and half.bytes_of(half.rows_to_read) == whole.bytes_of(whole.rows_to_read) // 2


def test_hf_ingest_run_outside_a_deployment_never_shards(three_files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hf-ingest run` is one process: with no pool behind it, even a split far over SHARD_ROWS stays whole."""
    from blocks.settings import get_settings
    from flows.import_dataset import planned_shards
    from hf_ingest.source import DatasetRequest, open_dataset

    monkeypatch.setenv("SHARD_ROWS", "10")
    get_settings.cache_clear()
    try:
        stream = open_dataset(DatasetRequest(str(three_files)))
        assert asyncio.run(planned_shards(stream, stream.rows_to_read)) == 1
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_one_run_claims_a_shard_attempt_and_the_others_let_it_go(store: SqlJobStore) -> None:
    """A shard's attempt may be started by its child run or by the parent that has nothing else to do: the
    first to claim it in `job_shards` gets it (running, its run recorded); a claim of another attempt, or of a
    shard not pending, gets nothing."""
    job = uuid.uuid4()
    store.create_job(job, {"dataset": "o/n"})
    store.add_shards(plan_shards(job, [(0, 3000)], 3))
    store.update_shard(job, 1, status=ShardStatus.PENDING, attempt=True, checkpoint=120)
    assert store.claim_shard(job, 1, 2, "child-run") is None  # not that attempt
    claimed = store.claim_shard(job, 1, 1, "parent-run")
    assert claimed is not None and claimed.status is ShardStatus.RUNNING and claimed.flow_run_id == "parent-run"
    assert claimed.checkpoint == 120 and claimed.first_row == 1000  # as it stands: where the import resumes
    assert store.claim_shard(job, 1, 1, "child-run") is None  # taken
    assert store.list_shards(job)[1].flow_run_id == "parent-run"
    store.update_shard(job, 2, status=ShardStatus.COMPLETED)
    assert store.claim_shard(job, 2, 0, "child-run") is None  # finished shards are never claimed


def test_the_supabase_store_claims_with_one_filtered_patch() -> None:
    from hf_ingest.jobstore.supabase import SupabaseJobStore

    job = uuid.uuid4()
    row = {"job_id": str(job), "shard": 1, "first_row": 10, "end_row": 20, "status": "running", "checkpoint": 3,
           "counts": {}, "attempts": 2, "flow_run_id": "run-x", "error": None}
    store = SupabaseJobStore.from_credentials("https://ref.supabase.co", "service-role-key-0123456789")
    with respx.mock(base_url="https://ref.supabase.co/rest/v1") as api:
        update = api.patch("/job_shards").mock(side_effect=[httpx.Response(200, json=[row]), httpx.Response(200, json=[])])
        claimed = store.claim_shard(job, 1, 2, "run-x")
        assert claimed is not None and claimed.flow_run_id == "run-x" and claimed.checkpoint == 3
        assert store.claim_shard(job, 1, 2, "run-y") is None
    params = update.calls[0].request.url.params
    assert (params["job_id"], params["shard"], params["status"], params["attempts"]) == (
        f"eq.{job}", "eq.1", "eq.pending", "eq.2")
    assert json.loads(update.calls[0].request.content)["status"] == "running"


@pytest.mark.parametrize(("limit", "online", "per_worker", "sized", "expected"), [
    (4, 1, 2, False, 1),  # make up on 2 cores: the parent and one child, not 4 shards in two rounds
    (4, 2, 2, False, 3),  # a second machine joins: 3 children beside the parent
    (4, 3, 8, False, 4),  # the queue's limit caps it
    (4, 1, 1, False, 0),  # one core: the parent imports it all
    (4, 1, 2, True, 4),  # SHARD_CONCURRENCY set by the operator: as they sized it
    (4, 0, 2, False, 4),  # Prefect could not say which workers are online: the queue's limit
])
def test_child_runs_are_planned_for_the_workers_online(limit: int, online: int, per_worker: int, sized: bool,
                                                        expected: int) -> None:
    from hf_ingest.shards import child_slots

    assert child_slots(limit, online, per_worker, sized) == expected
