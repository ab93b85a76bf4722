"""The SQL jobs store on SQLite and on a real PostgreSQL: forward-only status, idempotent rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hf_ingest.jobstore import JobStatus, Scene, SceneWrites
from hf_ingest.jobstore.sql import SqlJobStore, make_engine, metadata

MIGRATIONS = sorted((Path(__file__).resolve().parents[1] / "supabase" / "migrations").glob("*.sql"))


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


def _scene(
    job_id: uuid.UUID,
    row_index: int,
    dataset: str = "owner/name",
    *,
    image_column: str = "image",
    revision: str | None = "a" * 40,
    content: int = 0,
) -> Scene:
    digest = f"{row_index + 1000 * content:064d}"
    return Scene(
        job_id=job_id,
        dataset=dataset,
        config="default",
        split="train",
        image_column=image_column,
        row_index=row_index,
        object_key=f"images/ab/{digest}.jpg",
        url=f"file:///x/{digest}.jpg",
        sha256=digest,
        content_type="image/jpeg",
        width=4,
        height=3,
        bytes=100 + row_index,
        metadata={"caption": f"row {row_index}", "score": 0.5, "big": 2**60},
        revision=revision,
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
    assert store.upsert_scenes([_scene(first_job, i) for i in range(5)]) == SceneWrites(5, 0)
    assert store.upsert_scenes([_scene(second_job, i) for i in range(3, 8)]) == SceneWrites(3, 0)
    assert store.count_scenes() == 8
    assert store.count_scenes(job_id=first_job) == 5
    assert store.count_scenes(job_id=second_job) == 3
    assert store.count_scenes(dataset="owner/name") == 8
    assert store.upsert_scenes([]) == SceneWrites(0, 0)


def test_each_image_column_is_its_own_set_of_scenes(store: SqlJobStore) -> None:
    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    assert store.upsert_scenes([_scene(job_id, i, image_column="image") for i in range(3)]).inserted == 3
    assert store.upsert_scenes([_scene(job_id, i, image_column="mask") for i in range(3)]).inserted == 3
    assert store.count_scenes(job_id=job_id) == 6


def test_a_newer_revision_updates_the_rows_that_changed_and_the_same_revision_nothing(store: SqlJobStore) -> None:
    old_job, new_job = uuid.uuid4(), uuid.uuid4()
    store.create_job(old_job, {})
    store.create_job(new_job, {})
    store.upsert_scenes([_scene(old_job, i, revision="1" * 40) for i in range(4)])
    assert store.upsert_scenes([_scene(new_job, i, revision="1" * 40) for i in range(4)]) == SceneWrites(0, 0)

    newer = [_scene(new_job, i, revision="2" * 40, content=1 if i < 2 else 0) for i in range(5)]
    assert store.upsert_scenes(newer) == SceneWrites(1, 4)  # row 4 is new; rows 0-3 now read at the new commit

    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("select row_index, sha256, revision, job_id from scenes order by row_index")).all()
    assert [r.revision for r in rows] == ["2" * 40] * 5
    assert [r.sha256 for r in rows] == [s.sha256 for s in newer]
    assert {uuid.UUID(str(r.job_id)) for r in rows} == {new_job}
    assert store.count_scenes() == 5


def test_a_local_folder_reimported_after_a_change_updates_that_row(store: SqlJobStore) -> None:
    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    store.upsert_scenes([_scene(job_id, i, revision=None) for i in range(3)])
    assert store.upsert_scenes([_scene(job_id, i, revision=None) for i in range(3)]) == SceneWrites(0, 0)
    changed = [_scene(job_id, 0, revision=None, content=7), _scene(job_id, 1, revision=None)]
    assert store.upsert_scenes(changed) == SceneWrites(0, 1)


def test_a_key_twice_in_one_batch_is_written_once(store: SqlJobStore) -> None:
    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    assert store.upsert_scenes([_scene(job_id, 0), _scene(job_id, 0, content=3)]) == SceneWrites(1, 0)
    assert store.count_scenes() == 1


def test_an_old_database_is_migrated_with_its_scenes_kept(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A database of schema v1 (no image_column or revision, unique without the image column) keeps its
    rows, gets the new columns (backfilled from the job's params) and the new identity."""
    for url in (f"sqlite:///{tmp_path / 'old.db'}", _fresh_database(request.getfixturevalue("postgres_url"))):
        engine = make_engine(url)
        with engine.begin() as conn:
            for statement in V1_SCHEMA.split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
            conn.exec_driver_sql(
                "insert into jobs (id, kind, status, params, progress, created_at, updated_at) values "
                "('11111111111111111111111111111111', 'huggingface_import', 'completed', "
                "'{\"dataset\": \"o/n\", \"image_column\": \"photo\"}', '{}', '2026-01-01', '2026-01-01'), "
                "('22222222222222222222222222222222', 'huggingface_import', 'completed', "
                "'{\"dataset\": \"o/m\"}', '{}', '2026-01-01', '2026-01-01')"
            )
            for n, job in ((0, "1" * 32), (1, "2" * 32)):
                conn.exec_driver_sql(
                    "insert into scenes (id, job_id, dataset, config, split, row_index, object_key, url, sha256, "
                    f"content_type, width, height, bytes, metadata, created_at) values ('{n}{'0' * 31}', '{job}', "
                    f"'o/{'n' if n == 0 else 'm'}', 'default', 'train', 0, 'k', 'u', 's', 'image/png', 1, 1, 1, '{{}}', "
                    "'2026-01-01')"
                )
        if engine.dialect.name == "postgresql":  # v1 on PostgreSQL had real uuid/jsonb/timestamptz types
            with engine.begin() as conn:
                conn.exec_driver_sql(V1_POSTGRES_TYPES)
        engine.dispose()

        store = SqlJobStore.from_url(url)
        with store.engine.connect() as conn:
            rows = conn.execute(sa.text("select dataset, image_column, revision from scenes order by dataset")).all()
        assert [(r.dataset, r.image_column, r.revision) for r in rows] == [("o/m", "image", None), ("o/n", "photo", None)]
        job_id = uuid.UUID("1" * 32)
        assert store.upsert_scenes([_scene(job_id, 0, dataset="o/n", image_column="mask")]).inserted == 1
        assert store.upsert_scenes([_scene(job_id, 0, dataset="o/n", image_column="photo")]) == SceneWrites(0, 1)
        assert store.count_scenes() == 3
        SqlJobStore(store.engine)  # a second start finds nothing to migrate
        store.engine.dispose()


V1_SCHEMA = """
create table jobs (id char(32) primary key, kind text not null, status text not null, params json not null,
    flow_run_id text, error text, progress json not null, created_at timestamp not null,
    updated_at timestamp not null, started_at timestamp, finished_at timestamp);
create table scenes (id char(32) primary key, job_id char(32) not null references jobs (id) on delete cascade,
    dataset text not null, config text not null, split text not null, row_index bigint not null,
    object_key text not null, url text not null, sha256 text not null, content_type text not null,
    width integer not null, height integer not null, bytes integer not null, metadata json not null,
    created_at timestamp not null, constraint scenes_source_row_key unique (dataset, config, split, row_index));
create index scenes_job_id_idx on scenes (job_id)
"""
V1_POSTGRES_TYPES = """
alter table scenes drop constraint scenes_job_id_fkey;
alter table jobs alter column id type uuid using id::uuid, alter column params type jsonb using params::jsonb,
    alter column progress type jsonb using progress::jsonb;
alter table scenes alter column id type uuid using id::uuid, alter column job_id type uuid using job_id::uuid,
    alter column metadata type jsonb using metadata::jsonb;
alter table scenes add foreign key (job_id) references jobs (id) on delete cascade
"""


def _apply_migrations(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        for migration in MIGRATIONS:
            conn.exec_driver_sql(migration.read_text())


def test_supabase_migrations_match_the_sql_store(postgres_url: str) -> None:
    """The migrations shipped for Supabase create the same tables, and the store works on them."""
    url = _fresh_database(postgres_url)
    engine = make_engine(url)
    _apply_migrations(engine)
    inspector = sa.inspect(engine)
    for table in ("jobs", "scenes", "job_shards", "split_files"):
        migrated = {c["name"] for c in inspector.get_columns(table)}
        assert migrated == {c.name for c in metadata.tables[table].columns}, table
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("scenes")}
    assert uniques == {("dataset", "config", "split", "image_column", "row_index")}
    store = SqlJobStore(engine)
    job_id = uuid.uuid4()
    store.create_job(job_id, {"dataset": "a/b"})
    assert store.advance(job_id, JobStatus.RUNNING)
    assert store.upsert_scenes([_scene(job_id, 0), _scene(job_id, 0)]) == SceneWrites(1, 0)
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(sa.text("update jobs set status = 'stuck' where id = :id"), {"id": job_id})
    engine.dispose()


def test_the_supabase_upsert_function_writes_what_the_sql_store_writes(postgres_url: str) -> None:
    """`hf_ingest_upsert_scenes` (what the Supabase store calls over PostgREST) on real PostgreSQL."""
    import json

    engine = make_engine(_fresh_database(postgres_url))
    _apply_migrations(engine)
    old_job, new_job = uuid.uuid4(), uuid.uuid4()
    SqlJobStore(engine).create_job(old_job, {})
    SqlJobStore(engine).create_job(new_job, {})

    def call(scenes: list[Scene]) -> tuple[int, int]:
        payload = [{**s.row(), "id": str(s.id), "job_id": str(s.job_id)} for s in scenes]
        with engine.begin() as conn:
            row = conn.execute(
                sa.text("select * from hf_ingest_upsert_scenes(cast(:scenes as jsonb))"), {"scenes": json.dumps(payload)}
            ).one()
        return int(row.inserted), int(row.updated)

    assert call([_scene(old_job, i, revision="1" * 40) for i in range(4)]) == (4, 0)
    assert call([_scene(new_job, i, revision="1" * 40) for i in range(4)]) == (0, 0)
    assert call([_scene(new_job, i, revision="2" * 40, content=1 if i < 2 else 0) for i in range(5)]) == (1, 4)
    assert call([_scene(new_job, 0, image_column="mask")]) == (1, 0)
    with engine.connect() as conn:
        metadata_row = conn.execute(sa.text("select metadata, revision from scenes where row_index = 4")).one()
    assert metadata_row.metadata == {"caption": "row 4", "score": 0.5, "big": 2**60}
    assert metadata_row.revision == "2" * 40
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

    assert recorded == [SceneWrites(500, 0)] * 8 and again == [SceneWrites(0, 0)] * 8
    assert store.count_scenes(job_id=job_id) == 4000


def test_workers_opening_a_fresh_database_at_once_all_start(postgres_url: str) -> None:
    """Shard runs of one import start together on a fresh database: each creates the schema it finds
    missing, and none fails on the others' CREATE TABLE (the store takes an advisory lock for it)."""
    from concurrent.futures import ThreadPoolExecutor

    url = _fresh_database(postgres_url)
    engines = [make_engine(url) for _ in range(6)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            stores = list(pool.map(SqlJobStore, engines))
        job = uuid.uuid4()
        stores[0].create_job(job, {"dataset": "o/n"})
        assert all(s.get_job(job) is not None for s in stores)
    finally:
        for engine in engines:
            engine.dispose()


def test_a_database_from_before_derivatives_gets_their_columns_and_keeps_its_scenes(store: SqlJobStore) -> None:
    """Schema v3: scenes recorded before derivatives keep working; the new columns are added, empty."""
    from hf_ingest.jobstore.schema import V3_COLUMNS

    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    store.upsert_scenes([_scene(job_id, 0)])
    with store.engine.begin() as conn:
        for name in V3_COLUMNS:
            conn.exec_driver_sql(f"alter table scenes drop column {name}")
    migrated = SqlJobStore(store.engine)
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("scenes")}
    assert set(V3_COLUMNS) <= columns
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("select row_index, thumbnail_url, phash, duplicate_of from scenes")).one()
    assert tuple(row) == (0, None, None, None)
    assert migrated.upsert_scenes([_scene(job_id, 0)]) == SceneWrites(0, 0)
