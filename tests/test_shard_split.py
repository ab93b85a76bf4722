"""Splitting a running shard (work stealing): a run reserves its rows a step ahead of reading them, another
cuts the shard after what it reserved and takes the rest. On SQLite, PostgreSQL and the Supabase migration's
functions, with the reading run and the cutting run in two threads at once: every row is read exactly once."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import respx

from hf_ingest.jobstore import Shard, ShardStatus
from hf_ingest.jobstore.sql import SqlJobStore
from hf_ingest.jobstore.supabase import RESERVE_SHARD_ROWS_FUNCTION, SPLIT_SHARD_FUNCTION
from hf_ingest.shards import RowLease, lease_step, plan_shards, rows_left, split_point
from tests.test_sync_layout import store  # noqa: F401 (fixture: SQLite, PostgreSQL, the Supabase functions)


def _running_shard(store: SqlJobStore, rows: int = 1000) -> uuid.UUID:
    job = uuid.uuid4()
    store.create_job(job, {"dataset": "o/n"})
    store.add_shards(plan_shards(job, [(0, rows)], 1))
    store.update_shard(job, 0, status=ShardStatus.PENDING, attempt=True)
    assert store.claim_shard(job, 0, 1, "child-run") is not None
    return job


def test_a_cut_goes_after_what_the_run_reserved_and_the_run_then_reads_only_to_it(store: SqlJobStore) -> None:
    job = _running_shard(store)
    assert store.reserve_shard_rows(job, 0, 100) == 100
    assert store.reserve_shard_rows(job, 0, 60) == 100  # never less than it holds
    assert store.split_shard(job, 0, 80, 1000) is None  # inside what the run holds: refused
    assert store.split_shard(job, 0, 500, 999) is None  # the shard does not end there (moved on): refused
    piece = store.split_shard(job, 0, 500, 1000)
    assert piece is not None and (piece.shard, piece.first_row, piece.end_row, piece.status) == (
        1, 500, 1000, ShardStatus.PENDING)
    assert store.reserve_shard_rows(job, 0, 800) == 500  # the rest went to the piece
    shards = store.list_shards(job)
    assert [(s.shard, s.first_row, s.end_row, s.reserved_row) for s in shards] == [(0, 0, 500, 500), (1, 500, 1000, None)]
    assert store.split_shard(job, 1, 700, 1000) is None  # a pending piece is nobody's yet: not cut
    store.update_shard(job, 0, status=ShardStatus.COMPLETED)
    assert store.split_shard(job, 0, 400, 500) is None  # nor a finished one


def test_a_run_reading_while_another_cuts_its_shard_reads_every_row_once(store: SqlJobStore) -> None:
    """The reading run leases its rows in steps of 7 in one thread; the other thread cuts the shard again and
    again, as a parent with nothing left to do does. The rows read and the pieces cover the split exactly."""
    rows = 3000
    job = _running_shard(store, rows)
    lease = RowLease(lambda upto: store.reserve_shard_rows(job, 0, upto), 0, rows, step=7)
    read: list[int] = []
    done = threading.Event()

    def reader() -> None:
        row = 0
        while row < lease(row + 1):
            read.append(row)
            row += 1
        done.set()

    thread = threading.Thread(target=reader)
    thread.start()
    pieces: list[Shard] = []
    while not done.is_set():
        current = store.list_shards(job)[0]
        at = split_point(current, 1)
        if at is not None and (piece := store.split_shard(job, 0, at, current.end_row)) is not None:
            pieces.append(piece)
    thread.join()
    assert pieces, "no cut was made while the run read"
    final = store.list_shards(job)
    assert read == list(range(final[0].end_row)) and lease.end_row == final[0].end_row
    covered = sorted([(0, final[0].end_row)] + [(p.first_row, p.end_row) for p in pieces])
    assert covered[0][0] == 0 and covered[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))  # contiguous, no overlap


def test_a_lease_asks_a_step_ahead_and_stops_at_a_cut() -> None:
    asked: list[int] = []
    end = {"row": 100}

    def reserve(upto: int) -> int:
        asked.append(upto)
        return min(upto, end["row"])

    lease = RowLease(reserve, 10, 100, step=25)
    assert lease(12) == 35 and lease(30) == 35 and asked == [35]  # one call per step, not per read
    end["row"] = 50  # another run took rows 50-99
    assert lease(40) == 50 and lease.end_row == 50
    assert lease(60) == 50 and asked == [35, 60]  # cut: never asks again


@pytest.mark.parametrize(("shard", "min_rows", "expected"), [
    (Shard(uuid.uuid4(), 0, 0, 1000, ShardStatus.RUNNING, checkpoint=200, reserved_row=300), 10, 650),  # half of the 700 not reserved
    (Shard(uuid.uuid4(), 0, 0, 1000, ShardStatus.RUNNING, checkpoint=200, reserved_row=800), 10, 900),
    (Shard(uuid.uuid4(), 0, 0, 1000, ShardStatus.RUNNING, checkpoint=200, reserved_row=995), 10, None),
    (Shard(uuid.uuid4(), 0, 100, 200, ShardStatus.RUNNING), 10, 150),  # nothing read yet: half of it
    (Shard(uuid.uuid4(), 0, 0, 1000, ShardStatus.RUNNING, checkpoint=900, reserved_row=950), 64, None),
])
def test_the_cut_halves_what_is_left_after_what_is_reserved(shard: Shard, min_rows: int, expected: int | None) -> None:
    assert split_point(shard, min_rows) == expected


def test_the_rows_left_are_those_not_reserved() -> None:
    """Rows reserved past the checkpoint are in flight (the checkpoint lags them): not counted as left."""
    assert rows_left(Shard(uuid.uuid4(), 0, 0, 1000, ShardStatus.RUNNING, checkpoint=200, reserved_row=600)) == 400
    assert rows_left(Shard(uuid.uuid4(), 0, 100, 1000, ShardStatus.RUNNING)) == 900  # nothing reserved yet
    assert rows_left(Shard(uuid.uuid4(), 0, 0, 1000, ShardStatus.RUNNING, checkpoint=1000, reserved_row=1000)) == 0


def test_a_run_with_rows_of_its_own_left_takes_less() -> None:
    """What the cutting run has left of its own counts, so that both end with as much left."""
    shard = Shard(uuid.uuid4(), 1, 0, 1000, ShardStatus.RUNNING, checkpoint=200, reserved_row=300)
    at = split_point(shard, 10, backlog=200)
    assert at == 750 and (1000 - at) + 200 == rows_left(shard) - (1000 - at) == 450  # the parent: 250 + its 200
    assert split_point(shard, 10, backlog=800) is None  # the parent has more left than the child


def test_the_lease_step_is_a_quarter_of_a_batch() -> None:
    assert lease_step(8192, 64 * 2**20, 1500) == 2048  # small images: of the batch's rows
    assert lease_step(8192, 64 * 2**20, 2 * 2**20) == 8  # 2 MB photos: of what fits in a batch's bytes
    assert lease_step(8192, 64 * 2**20, 0) == 2048  # unknown size


def test_the_supabase_store_reserves_and_cuts_through_the_migrations_functions() -> None:
    from hf_ingest.jobstore.supabase import SupabaseJobStore

    job = uuid.uuid4()
    piece = {"job_id": str(job), "shard": 3, "first_row": 500, "end_row": 1000, "status": "pending", "checkpoint": 0,
             "counts": {}, "attempts": 0, "flow_run_id": None, "error": None, "reserved_row": None}
    store = SupabaseJobStore.from_credentials("https://ref.supabase.co", "service-role-key-0123456789")
    with respx.mock(base_url="https://ref.supabase.co/rest/v1") as api:
        reserve = api.post(f"/rpc/{RESERVE_SHARD_ROWS_FUNCTION}").mock(return_value=httpx.Response(200, json=420))
        split = api.post(f"/rpc/{SPLIT_SHARD_FUNCTION}").mock(
            side_effect=[httpx.Response(200, json=[piece]), httpx.Response(200, json=[])])
        assert store.reserve_shard_rows(job, 1, 400) == 420
        cut = store.split_shard(job, 1, 500, 1000)
        assert cut is not None and (cut.shard, cut.first_row, cut.end_row, cut.status) == (3, 500, 1000, ShardStatus.PENDING)
        assert store.split_shard(job, 1, 500, 1000) is None
    assert json.loads(reserve.calls.last.request.content) == {"p_job_id": str(job), "p_shard": 1, "p_upto": 400}
    assert json.loads(split.calls[0].request.content) == {"p_job_id": str(job), "p_shard": 1, "p_at": 500, "p_end_row": 1000}


def test_a_stream_with_a_lease_reads_to_the_cut_and_ends_there(tmp_path: Path) -> None:
    """The stream asks the lease before each chunk it reads: a cut made while it reads ends it at the cut, its
    `end_row` says so (the shard's checkpoint when it completes), and the piece reads the rest."""
    from hf_ingest.hub_formats import encode_image, write_parquet_dataset
    from hf_ingest.source import DatasetRequest, open_dataset

    rows = [{"image": encode_image((8, 8), "PNG", color=(i, 0, 0)), "i": i} for i in range(90)]
    folder = write_parquet_dataset(tmp_path / "ds", rows, shards=2, row_group_size=10)
    shard = {"end": 90, "reserved": 0}

    def reserve(upto: int) -> int:  # as the stores do it
        shard["reserved"] = max(shard["reserved"], min(upto, shard["end"]))
        return shard["reserved"]

    stream = open_dataset(DatasetRequest(str(folder))).rows_between(0, 90, RowLease(reserve, 0, 90, step=10))
    read: list[int] = []
    for batch in stream.batches(10, 2**20):
        read += [row.row_index for row in batch]
        if len(read) == 20:
            assert shard["reserved"] <= 57  # a cut goes after what is reserved
            shard["end"] = 57  # the parent takes rows 57-89
    assert read == list(range(57)) and stream.end_row == 57
    rest = open_dataset(DatasetRequest(str(folder))).rows_between(57, 90)
    assert [row.row_index for batch in rest.batches(10, 2**20) for row in batch] == list(range(57, 90))


def test_a_shards_last_rows_go_in_smaller_batches(tmp_path: Path) -> None:
    """So that its last batches in flight are little of it: what is after them can still be split off."""
    from hf_ingest.hub_formats import encode_image, write_parquet_dataset
    from hf_ingest.source import DatasetRequest, open_dataset, tail_batch_rows

    assert [tail_batch_rows(8192, left) for left in (100_000, 32_768, 16_000, 4_000, 1_000, 0)] == [
        8192, 8192, 4000, 1024, 1024, 1024]
    assert tail_batch_rows(1024, 100) == 256 and tail_batch_rows(64, 10) == 64  # never tasks of a few rows
    rows = [{"image": encode_image((4, 4), "PNG", color=(i % 256, 0, 0)), "i": i} for i in range(4000)]
    folder = write_parquet_dataset(tmp_path / "ds", rows, shards=1, row_group_size=500)
    whole = open_dataset(DatasetRequest(str(folder)))
    assert [len(b) for b in whole.batches(2048, 2**30)] == [2048, 1952]  # not a shard: as before
    leased = open_dataset(DatasetRequest(str(folder))).rows_between(0, 4000, RowLease(lambda upto: upto, 0, 4000, 8))
    sizes = [len(b) for b in leased.batches(2048, 2**30)]
    assert sum(sizes) == 4000 and sizes[0] == 1000 and sizes == sorted(sizes, reverse=True)
    assert min(sizes[:-1]) >= 256 and len(sizes) > 4
