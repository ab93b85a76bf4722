"""`hf-ingest copy-db`: what an earlier stack (or `make demo`) kept in SQLite moves into PostgreSQL, the
stack's database now, without losing or overwriting anything."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from hf_ingest.cli import main
from hf_ingest.jobstore import JobStatus, Shard, ShardStatus
from hf_ingest.jobstore.sql import SqlJobStore, job_shards, jobs, scenes
from tests.test_jobstore_sql import _fresh_database, _scene


def _rows(store: SqlJobStore, table: sa.Table) -> list[dict[str, object]]:
    key = [c for c in table.primary_key.columns] or [table.c.id]
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(*key)).mappings()]


def _comparable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Times as UTC instants (SQLite hands them back naive), everything else as is."""
    from hf_ingest.jobstore import as_utc

    return [{k: as_utc(v) if hasattr(v, "tzinfo") else v for k, v in row.items()} for row in rows]


def test_copy_db_moves_jobs_shards_and_scenes_into_postgresql_once(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'old.db'}"
    old = SqlJobStore.from_url(sqlite_url)
    done, failed = uuid.uuid4(), uuid.uuid4()
    old.create_job(done, {"dataset": "owner/name", "limit": 3}, flow_run_id="run-1")
    old.advance(done, JobStatus.RUNNING)
    old.advance(done, JobStatus.COMPLETED, progress={"rows_seen": 3, "invalid": {"corrupt": 1}})
    old.create_job(failed, {"dataset": "owner/other"})
    old.advance(failed, JobStatus.FAILED, error="crashed: no heartbeat")
    old.add_shards([Shard(done, 0, 0, 2, status=ShardStatus.COMPLETED, checkpoint=2, counts={"stored": 2}),
                    Shard(done, 1, 2, 3)])
    old.upsert_scenes([_scene(done, n) for n in range(3)])

    target_url = _fresh_database(postgres_url)
    target = SqlJobStore.from_url(target_url)
    kept = uuid.uuid4()  # the target's own rows stay as they are, even one with the same scene key
    target.create_job(kept, {"dataset": "owner/name"})
    target.upsert_scenes([_scene(kept, 0, revision="b" * 40)])

    assert main(["copy-db", sqlite_url, target_url]) == 0
    printed = capsys.readouterr().out
    assert "jobs                 2 read,          2 new" in printed
    assert "scenes               3 read,          2 new" in printed

    assert _comparable(_rows(old, jobs)) == [r for r in _comparable(_rows(target, jobs)) if r["id"] != kept]
    assert _comparable(_rows(old, job_shards)) == _comparable(_rows(target, job_shards))
    copied = {r["row_index"]: r for r in _rows(target, scenes)}
    assert copied[0]["job_id"] == kept and copied[0]["revision"] == "b" * 40  # not overwritten
    originals = {r["row_index"]: r for r in _rows(old, scenes)}
    for n in (1, 2):
        assert {k: v for k, v in copied[n].items() if k != "created_at"} == \
            {k: v for k, v in originals[n].items() if k != "created_at"}
    assert copied[1]["metadata"] == {"caption": "row 1", "score": 0.5, "big": 2**60}
    assert target.get_job(done).status is JobStatus.COMPLETED and target.get_job(failed).error == "crashed: no heartbeat"

    assert main(["copy-db", sqlite_url, target_url]) == 0  # again: nothing new
    assert "scenes               3 read,          0 new" in capsys.readouterr().out
    assert target.count_scenes() == 3


def test_copy_db_brings_each_splits_file_list_whole_so_the_next_import_is_a_sync(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A split's file list goes over whole, or not at all where the target has its own for that split."""
    from hf_ingest.jobstore import SplitKey
    from hf_ingest.jobstore.model import LayoutFile, SplitLayout

    old = SqlJobStore.from_url(f"sqlite:///{tmp_path / 'old.db'}")
    mine, theirs = SplitKey("owner/name", "default", "train", "image"), SplitKey("owner/other", "default", "train", "image")
    layout = SplitLayout("f" * 32, tuple(LayoutFile(f"data/{n}.parquet", f"git:{n}", 10, 10 * n, True, "1" * 40)
                                         for n in range(3)))
    job = uuid.uuid4()
    old.create_job(job, {"dataset": "owner/name"})
    old.record_layout(mine, layout, [], None, "1" * 40, job)
    old.record_layout(theirs, layout, [], None, "1" * 40, job)

    target_url = _fresh_database(postgres_url)
    target = SqlJobStore.from_url(target_url)
    own = SplitLayout("e" * 32, (LayoutFile("data/x.parquet", "git:x", 5, 0, True, "2" * 40),))
    target.record_layout(theirs, own, [], None, "2" * 40, uuid.uuid4())

    assert main(["copy-db", f"sqlite:///{tmp_path / 'old.db'}", target_url]) == 0
    assert "split_files          6 read,          3 new" in capsys.readouterr().out
    assert target.read_layout(mine) == layout and target.read_layout(theirs) == own
