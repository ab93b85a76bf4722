"""The SQL jobs store on SQLite and on a real PostgreSQL: forward-only status, idempotent rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hf_ingest.jobstore import JobStatus, Scene
from hf_ingest.jobstore.sql import SqlJobStore, make_engine, metadata

MIGRATION = Path(__file__).resolve().parents[1] / "supabase" / "migrations" / "20261128000000_hf_ingest_jobs_scenes.sql"


def _fresh_database(postgres_url: str) -> str:
    """A new, empty database on the shared server, so each test starts clean."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(sa.engine.make_url(make_engine(postgres_url).url).set(database=name).render_as_string(hide_password=False))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlJobStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = _fresh_database(request.getfixturevalue("postgres_url"))
    store = SqlJobStore.from_url(url)
    assert store.engine.dialect.name == request.param
    yield store
    store.engine.dispose()


def _scene(job_id: uuid.UUID, row_index: int, dataset: str = "owner/name") -> Scene:
    return Scene(
        job_id=job_id,
        dataset=dataset,
        config="default",
        split="train",
        row_index=row_index,
        object_key=f"images/ab/{row_index:064d}.jpg",
        url=f"file:///x/{row_index}.jpg",
        sha256=f"{row_index:064d}",
        content_type="image/jpeg",
        width=4,
        height=3,
        bytes=100 + row_index,
        metadata={"caption": f"row {row_index}", "score": 0.5},
    )


def test_create_job_is_idempotent_and_starts_queued(store: SqlJobStore) -> None:
    job_id = uuid.uuid4()
    first = store.create_job(job_id, {"dataset": "a/b", "limit": 3})
    again = store.create_job(job_id, {"dataset": "other/params"}, flow_run_id="x")
    assert first.status is JobStatus.QUEUED
    assert again.params == {"dataset": "a/b", "limit": 3}
    assert again.flow_run_id is None
    assert first.created_at is not None and first.started_at is None and first.finished_at is None


def test_status_only_moves_forward_with_timestamps(store: SqlJobStore) -> None:
    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    assert store.advance(job_id, JobStatus.RUNNING)
    running = store.get_job(job_id)
    assert running and running.status is JobStatus.RUNNING and running.started_at is not None
    assert not store.advance(job_id, JobStatus.RUNNING)
    assert store.advance(job_id, JobStatus.FAILED, error="boom: no image column")
    failed = store.get_job(job_id)
    assert failed and failed.status is JobStatus.FAILED and failed.error == "boom: no image column"
    assert failed.finished_at is not None and failed.finished_at >= failed.started_at
    for later in (JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.QUEUED):
        assert not store.advance(job_id, later)
    final = store.get_job(job_id)
    assert final and final.status is JobStatus.FAILED and final.error == "boom: no image column"


def test_queued_job_may_be_cancelled_directly(store: SqlJobStore) -> None:
    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    assert store.advance(job_id, JobStatus.CANCELLED)
    job = store.get_job(job_id)
    assert job and job.status is JobStatus.CANCELLED and job.started_at is None and job.finished_at


def test_progress_flow_run_and_listing(store: SqlJobStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    store.create_job(a, {})
    store.create_job(b, {})
    store.set_flow_run_id(a, "run-a")
    store.update_progress(a, {"rows_seen": 10, "invalid": {"corrupt": 2}})
    store.advance(b, JobStatus.RUNNING)
    job = store.get_job(a)
    assert job and job.flow_run_id == "run-a" and job.progress == {"rows_seen": 10, "invalid": {"corrupt": 2}}
    assert [j.id for j in store.list_jobs([JobStatus.QUEUED])] == [a]
    assert {j.id for j in store.list_jobs([JobStatus.QUEUED, JobStatus.RUNNING])} == {a, b}
    assert store.get_job(uuid.uuid4()) is None


def test_scene_upsert_ignores_rows_already_recorded(store: SqlJobStore) -> None:
    first_job, second_job = uuid.uuid4(), uuid.uuid4()
    store.create_job(first_job, {})
    store.create_job(second_job, {})
    assert store.upsert_scenes([_scene(first_job, i) for i in range(5)]) == 5
    assert store.upsert_scenes([_scene(second_job, i) for i in range(3, 8)]) == 3
    assert store.count_scenes() == 8
    assert store.count_scenes(job_id=first_job) == 5
    assert store.count_scenes(job_id=second_job) == 3
    assert store.count_scenes(dataset="owner/name") == 8
    assert store.upsert_scenes([]) == 0


def test_supabase_migration_matches_the_sql_store(postgres_url: str) -> None:
    """The migration shipped for Supabase creates the same tables, and the store works on them."""
    url = _fresh_database(postgres_url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(MIGRATION.read_text())
    inspector = sa.inspect(engine)
    for table in ("jobs", "scenes"):
        migrated = {c["name"] for c in inspector.get_columns(table)}
        assert migrated == {c.name for c in metadata.tables[table].columns}, table
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("scenes")}
    assert ("dataset", "config", "split", "row_index") in uniques
    store = SqlJobStore(engine)
    job_id = uuid.uuid4()
    store.create_job(job_id, {"dataset": "a/b"})
    assert store.advance(job_id, JobStatus.RUNNING)
    assert store.upsert_scenes([_scene(job_id, 0), _scene(job_id, 0)]) == 1
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("update jobs set status = 'stuck' where id = :id"), {"id": job_id})
    engine.dispose()


def test_batches_recorded_from_several_threads_at_once_all_land(store: SqlJobStore) -> None:
    """The flow's pool records batches concurrently (SQLite: one writer, the others queue)."""
    from concurrent.futures import ThreadPoolExecutor

    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    batches = [[_scene(job_id, b * 500 + i) for i in range(500)] for b in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        recorded = list(pool.map(store.upsert_scenes, batches))
        again = list(pool.map(store.upsert_scenes, batches))  # a retried batch records nothing twice

    assert recorded == [500] * 8 and again == [0] * 8
    assert store.count_scenes(job_id=job_id) == 4000
