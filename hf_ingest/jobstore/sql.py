"""The jobs store on SQLAlchemy: SQLite by default, PostgreSQL (including Supabase's Postgres) in production."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from hf_ingest.jobstore.model import (
    JOB_KIND,
    SCENE_KEY,
    Expected,
    Job,
    JobStatus,
    KnownFile,
    LayoutChanged,
    LayoutWrites,
    RowMove,
    Scene,
    SceneWrites,
    Shard,
    ShardStatus,
    SplitHashes,
    SplitKey,
    SplitLayout,
    known_files_of,
    latest_per_key,
    layout_of,
    predecessors,
    shard_changes,
    utcnow,
)
from hf_ingest.jobstore.schema import create_schema

metadata = sa.MetaData()
_json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ts = sa.DateTime(timezone=True)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False, server_default=JOB_KIND),
    sa.Column("status", sa.Text, nullable=False, server_default=JobStatus.QUEUED.value),
    sa.Column("params", _json, nullable=False),
    sa.Column("flow_run_id", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("progress", _json, nullable=False),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("started_at", _ts),
    sa.Column("finished_at", _ts),
    sa.CheckConstraint(
        "status in ('queued','running','completed','failed','cancelled')", name="jobs_status_check"
    ),
)
sa.Index("jobs_status_idx", jobs.c.status)

scenes = sa.Table(
    "scenes",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("job_id", sa.Uuid, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("dataset", sa.Text, nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("split", sa.Text, nullable=False),
    sa.Column("image_column", sa.Text, nullable=False),
    sa.Column("row_index", sa.BigInteger, nullable=False),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("metadata", _json, nullable=False),
    sa.Column("revision", sa.Text),
    sa.Column("created_at", _ts, nullable=False),
    sa.Column("thumbnail_url", sa.Text),
    sa.Column("preview_url", sa.Text),
    sa.Column("placeholder", sa.Text),
    sa.Column("phash", sa.Text),
    sa.Column("duplicate_of", sa.Uuid),
    sa.Column("removed_at", _ts),
    sa.Column("removed_in", sa.Text),
    sa.UniqueConstraint(*SCENE_KEY, name="scenes_source_image_key"),
)
# Replaced on a new revision or new content (local folders have no revision); the rest of the row follows.
_SCENE_UPDATED = ("job_id", "object_key", "url", "sha256", "content_type", "width", "height", "bytes", "metadata", "revision")
# The derivatives: filled in where missing (a scene recorded before they existed: a backfill), kept where an
# import without them (DERIVATIVES=false) finds the same content, dropped with content that changed.
DERIVED = ("thumbnail_url", "preview_url", "placeholder", "phash")
DUPLICATES_PER_STATEMENT = 50_000
KEYS_PER_STATEMENT = 500  # keys in one `IN (...)`: well under SQLite's bound of variables per statement
sa.Index("scenes_job_id_idx", scenes.c.job_id)

# PostgreSQL gets a batch of scenes as one array per column, turned back into rows by `unnest`: one statement
# of constant text whatever the batch (psycopg parses it once and prepares it), where SQLAlchemy's multi-row
# VALUES (17 parameters a row) was SQL text too long for psycopg's cache, converted again on every batch:
# ~16 % of a shard run's samples, and ~4 KB of memory a row while it was built (measured).
_PG_ARRAY_TYPES = {"id": "uuid", "job_id": "uuid", "row_index": "bigint", "width": "integer", "height": "integer",
                   "bytes": "integer", "metadata": "jsonb"}
_SCENE_COLUMNS = [c.name for c in scenes.columns if c.name not in ("created_at", "duplicate_of", "removed_at", "removed_in")]
# What a moved scene takes along to its new row (its content); the row keeps its id, as a full import leaves it.
_MOVED = ("object_key", "url", "sha256", "content_type", "width", "height", "bytes", "metadata", "revision",
          "thumbnail_url", "preview_url", "placeholder", "phash")
_DERIVED_SET = ", ".join(
    f"{name} = coalesce(excluded.{name}, case when scenes.sha256 = excluded.sha256 then scenes.{name} end)"
    for name in DERIVED
)
_CHANGED = (
    "scenes.revision is distinct from excluded.revision or scenes.sha256 <> excluded.sha256"
    " or scenes.removed_at is not null"
    " or scenes.metadata::text <> excluded.metadata::text"
    " or (scenes.phash is null and excluded.phash is not null)"
)
# The `lacking` CTE reads the rows before the insert changes them (one snapshot for the whole statement):
# which of the batch's scenes had no derivatives, so that their backfill is counted.
_PG_SCENE_UPSERT = (
    "with incoming as (select * from unnest("
    + ", ".join(f"%({name})s::{_PG_ARRAY_TYPES.get(name, 'text')}[]" for name in _SCENE_COLUMNS)
    + f") as u({', '.join(_SCENE_COLUMNS)})), "
    f"lacking as (select s.id from scenes s join incoming i using ({', '.join(SCENE_KEY)}) "
    "where s.phash is null and i.phash is not null), "
    f"written as (insert into scenes ({', '.join(_SCENE_COLUMNS)}, created_at) "
    f"select incoming.*, %(created_at)s from incoming "
    f"on conflict ({', '.join(SCENE_KEY)}) do update set "
    + ", ".join(f"{name} = excluded.{name}" for name in _SCENE_UPDATED)
    + f", {_DERIVED_SET}, removed_at = null, removed_in = null where {_CHANGED} returning scenes.id) "
    "select w.id, w.id in (select id from lacking) from written w"
)


def _values_scene_upsert() -> Any:
    """SQLite's multi-row upsert (SQLAlchemy renders the rows as VALUES)."""
    statement = sqlite.insert(scenes)
    incoming = statement.excluded
    kept = {
        name: sa.func.coalesce(incoming[name], sa.case((scenes.c.sha256 == incoming.sha256, scenes.c[name])))
        for name in DERIVED
    }
    return statement.on_conflict_do_update(
        index_elements=list(SCENE_KEY),
        set_={**{name: incoming[name] for name in _SCENE_UPDATED}, **kept, "removed_at": None, "removed_in": None},
        where=sa.or_(
            scenes.c.revision.is_distinct_from(incoming.revision),
            scenes.c.removed_at.is_not(None),
            scenes.c.sha256 != incoming.sha256,
            sa.cast(scenes.c.metadata, sa.Text) != sa.cast(incoming.metadata, sa.Text),
            sa.and_(scenes.c.phash.is_(None), incoming.phash.is_not(None)),
        ),
    ).returning(scenes.c.id)


def _scene_arrays(rows: Sequence[Scene], created_at: Any) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    columns: dict[str, list[Any]] = {name: [] for name in _SCENE_COLUMNS}
    for scene in rows:
        for name, value in scene.row().items():
            columns[name].append(Jsonb(value) if name == "metadata" else value)
    return {**columns, "created_at": created_at}

job_shards = sa.Table(
    "job_shards",
    metadata,
    sa.Column("job_id", sa.Uuid, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("end_row", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=ShardStatus.PENDING.value),
    sa.Column("checkpoint", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("counts", _json, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("flow_run_id", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("reserved_row", sa.BigInteger),
    sa.CheckConstraint("status in ('pending','running','completed','failed')", name="job_shards_status_check"),
)

# how far a shard's run may read: what it reserved, or nothing past its first row
_reserved_up_to = sa.func.coalesce(job_shards.c.reserved_row, job_shards.c.first_row)


split_files = sa.Table(
    "split_files",
    metadata,
    sa.Column("dataset", sa.Text, primary_key=True),
    sa.Column("config", sa.Text, primary_key=True),
    sa.Column("split", sa.Text, primary_key=True),
    sa.Column("image_column", sa.Text, primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("content_id", sa.Text, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("revision", sa.Text),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("job_id", sa.Uuid),
    sa.Column("updated_at", _ts, nullable=False),
    sa.Column("arrow_schema", sa.Text),
)


def _in_split(split: SplitKey) -> Any:
    """A scene of the split: its image column, or an image of it when it is a list (`images[2]`)."""
    listed = sa.func.substr(scenes.c.image_column, 1, len(split.image_column) + 1) == split.image_column + "["
    return sa.and_(scenes.c.dataset == split.dataset, scenes.c.config == split.config, scenes.c.split == split.split,
                   sa.or_(scenes.c.image_column == split.image_column, listed))


def _layout_key(split: SplitKey) -> Any:
    return sa.and_(split_files.c.dataset == split.dataset, split_files.c.config == split.config,
                   split_files.c.split == split.split, split_files.c.image_column == split.image_column)


def _shift_of(row_index: Any, moves: Sequence[RowMove], at_target: bool) -> Any:
    """The shift of the move whose rows (before moving, or after: `at_target`) hold `row_index` (null: none)."""
    whens = [(sa.and_(row_index >= m.first_row + (m.shift if at_target else 0),
                      row_index < m.end_row + (m.shift if at_target else 0)), m.shift) for m in moves]
    return sa.case(*whens, else_=sa.null())


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so the flow and the trigger can share it."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


class SqlJobStore:
    """`JobStore` over a SQLAlchemy engine; creates its tables if they are missing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_schema(engine, metadata)
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # SQLite has one writer at a time and makes the others poll (sleeping up to 100 ms a try);
        # batches written from several threads queue on this lock instead and go as soon as it is free.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @classmethod
    def from_url(cls, url: str) -> SqlJobStore:
        return cls(make_engine(url))

    def create_job(
        self, job_id: uuid.UUID, params: dict[str, Any], *, flow_run_id: str | None = None
    ) -> Job:
        now = utcnow()
        statement = (
            self._insert(jobs)
            .values(
                id=job_id,
                kind=JOB_KIND,
                status=JobStatus.QUEUED.value,
                params=params,
                flow_run_id=flow_run_id,
                progress={},
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
        )
        with self._writing() as conn:
            conn.execute(statement)
        job = self.get_job(job_id)
        assert job is not None
        return job

    def get_job(self, job_id: uuid.UUID) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return _job(row) if row else None

    def advance(
        self,
        job_id: uuid.UUID,
        status: JobStatus,
        *,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        now = utcnow()
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if status is JobStatus.RUNNING:
            values["started_at"] = now
        if status.is_terminal:
            values["finished_at"] = now
        if error is not None:
            values["error"] = error
        if progress is not None:
            values["progress"] = progress
        statement = (
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in predecessors(status)]))
            .values(**values)
        )
        with self._writing() as conn:
            return conn.execute(statement).rowcount == 1

    def set_flow_run_id(self, job_id: uuid.UUID, flow_run_id: str) -> None:
        queued = jobs.c.status == JobStatus.QUEUED.value
        with self._writing() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(
                    flow_run_id=flow_run_id,
                    error=sa.case((queued, sa.null()), else_=jobs.c.error),
                    updated_at=utcnow(),
                )
            )

    def set_error(self, job_id: uuid.UUID, error: str) -> None:
        with self._writing() as conn:
            conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.QUEUED.value)
                .values(error=error, updated_at=utcnow())
            )

    def update_progress(self, job_id: uuid.UUID, progress: dict[str, Any]) -> None:
        with self._writing() as conn:
            conn.execute(
                jobs.update().where(jobs.c.id == job_id).values(progress=progress, updated_at=utcnow())
            )

    def list_jobs(self, statuses: Sequence[JobStatus]) -> list[Job]:
        query = (
            sa.select(jobs)
            .where(jobs.c.status.in_([s.value for s in statuses]))
            .order_by(jobs.c.created_at)
        )
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def upsert_scenes(self, rows: Sequence[Scene]) -> SceneWrites:
        if not rows:
            return SceneWrites(0)
        now = utcnow()
        latest = latest_per_key(rows)
        proposed = {scene.id for scene in latest}
        with self._writing() as conn:
            if self.engine.dialect.name == "postgresql":
                rows_written = conn.exec_driver_sql(_PG_SCENE_UPSERT, _scene_arrays(latest, now)).all()
                written, backfilled = [row[0] for row in rows_written], sum(1 for row in rows_written if row[1])
            else:
                lacking = self._lacking_derivatives(conn, latest)
                written = [row.id for row in conn.execute(_values_scene_upsert(), [{**s.row(), "created_at": now} for s in latest])]
                backfilled = sum(1 for scene_id in written if scene_id in lacking)
        inserted = sum(1 for scene_id in written if scene_id in proposed)  # an update keeps the row's old id
        return SceneWrites(inserted, len(written) - inserted, backfilled)

    @staticmethod
    def _lacking_derivatives(conn: sa.Connection, batch: Sequence[Scene]) -> set[uuid.UUID]:
        """Ids of recorded scenes in the batch's rows that have no derivatives yet, where the batch brings them
        (and maybe of a few rows between them that it does not bring: the caller counts only those it wrote).
        A range of rows, not a list of them: an IN of a batch's 8,192 row numbers cost more to build than the
        scenes' own upsert."""
        first = next((scene for scene in batch if scene.phash is not None), None)
        if first is None:
            return set()
        split = first.key()[:4]
        rows = [scene.row_index for scene in batch if scene.phash is not None and scene.key()[:4] == split]
        query = sa.select(scenes.c.id).where(
            scenes.c.dataset == first.dataset, scenes.c.config == first.config, scenes.c.split == first.split,
            scenes.c.image_column == first.image_column, scenes.c.phash.is_(None),
            scenes.c.row_index.between(min(rows), max(rows)),
        )
        return set(conn.execute(query).scalars())

    def count_scenes(self, *, job_id: uuid.UUID | None = None, dataset: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(scenes)
        if job_id is not None:
            query = query.where(scenes.c.job_id == job_id)
        if dataset is not None:
            query = query.where(scenes.c.dataset == dataset)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


    def scene_hashes(self, split: SplitKey) -> SplitHashes:
        # ids as text (uuid objects for all of a split cost more than grouping it: 1,000,000 on PostgreSQL, 0.7 s)
        query = sa.select(sa.cast(scenes.c.id, sa.Text), scenes.c.row_index, scenes.c.phash,
                          sa.cast(scenes.c.duplicate_of, sa.Text)).where(
            scenes.c.dataset == split.dataset, scenes.c.config == split.config, scenes.c.split == split.split,
            scenes.c.image_column == split.image_column, scenes.c.phash.is_not(None), scenes.c.removed_at.is_(None),
        )
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":
                return _copied_hashes(conn, query)
            return SplitHashes.from_rows(conn.execute(query))

    def set_duplicates(self, changes: Mapping[uuid.UUID | str, uuid.UUID | str | None]) -> None:
        if not changes:
            return
        items = [(_as_uuid(i), _as_uuid(f) if f is not None else None) for i, f in changes.items()]
        with self._writing() as conn:
            if self.engine.dialect.name == "postgresql":
                for start in range(0, len(items), DUPLICATES_PER_STATEMENT):
                    chunk = items[start:start + DUPLICATES_PER_STATEMENT]
                    conn.exec_driver_sql(
                        "update scenes set duplicate_of = u.duplicate_of from unnest(%(ids)s::uuid[], "
                        "%(firsts)s::uuid[]) as u(id, duplicate_of) where scenes.id = u.id",
                        {"ids": [i for i, _ in chunk], "firsts": [f for _, f in chunk]},
                    )
            else:
                conn.execute(scenes.update().where(scenes.c.id == sa.bindparam("scene_id"))
                             .values(duplicate_of=sa.bindparam("first")),
                             [{"scene_id": i, "first": f} for i, f in items])

    def read_layout(self, split: SplitKey) -> SplitLayout | None:
        with self.engine.connect() as conn:
            return self._layout(conn, split)

    @staticmethod
    def _layout(conn: sa.Connection, split: SplitKey) -> SplitLayout | None:
        query = sa.select(split_files).where(_layout_key(split)).order_by(split_files.c.position)
        return layout_of(list(conn.execute(query).mappings()))

    def record_layout(
        self,
        split: SplitKey,
        layout: SplitLayout | None,
        moves: Sequence[RowMove],
        end_row: int | None,
        revision: str | None,
        job_id: uuid.UUID,
        expected: Expected | None = None,
    ) -> LayoutWrites:
        now = utcnow()
        removed = {"removed_at": now, "removed_in": revision}
        live = sa.and_(_in_split(split), scenes.c.removed_at.is_(None))
        moved = gone = 0
        with self._writing() as conn:
            if expected is not None:
                if self.engine.dialect.name == "postgresql":  # one sync of a split at a time, until commit
                    conn.execute(sa.text("select pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                                 {"key": "|".join((split.dataset, split.config, split.split, split.image_column))})
                if self._layout(conn, split) != expected.layout:
                    raise LayoutChanged(f"the layout of {split} changed while this sync planned")
            if moves:
                source = scenes.alias("source")
                target_shift = _shift_of(scenes.c.row_index, moves, at_target=True)
                orphans = [(r.image_column, r.row_index) for r in conn.execute(  # read before anything moves
                    sa.select(scenes.c.image_column, scenes.c.row_index).where(live, target_shift.is_not(None), ~sa.exists(
                        sa.select(1).where(
                            source.c.dataset == scenes.c.dataset, source.c.config == scenes.c.config,
                            source.c.split == scenes.c.split, source.c.image_column == scenes.c.image_column,
                            source.c.row_index == scenes.c.row_index - target_shift, source.c.removed_at.is_(None))))
                )]
                moved = self._move_scenes(conn, split, moves, job_id, now)
                gone += self._mark_removed(conn, split, orphans, removed)
            if end_row is not None:
                gone += conn.execute(scenes.update().where(live, scenes.c.row_index >= end_row).values(**removed)).rowcount
            conn.execute(split_files.delete().where(_layout_key(split)))
            if layout is not None and layout.files:
                conn.execute(split_files.insert(), [
                    {"dataset": split.dataset, "config": split.config, "split": split.split,
                     "image_column": split.image_column, "position": position, "name": f.name,
                     "content_id": f.content_id, "rows": f.rows, "first_row": f.first_row, "done": f.done,
                     "revision": f.revision, "fingerprint": layout.fingerprint, "job_id": job_id, "updated_at": now,
                     "arrow_schema": f.schema}
                    for position, f in enumerate(layout.files)])
        return LayoutWrites(moved=moved, removed=gone)

    def _move_scenes(self, conn: sa.Connection, split: SplitKey, moves: Sequence[RowMove], job_id: uuid.UUID,
                     now: Any) -> int:
        """One INSERT ... SELECT: the statement reads the scenes as they were before it (PostgreSQL's snapshot;
        SQLite copies a table it reads and writes at once), so overlapping moves never read a moved row."""
        shift = _shift_of(scenes.c.row_index, moves, at_target=False)
        new_id = sa.func.gen_random_uuid() if self.engine.dialect.name == "postgresql" else sa.func.lower(
            sa.func.hex(sa.func.randomblob(16)))
        columns = ["id", "job_id", "dataset", "config", "split", "image_column", "row_index", *_MOVED, "created_at"]
        select = sa.select(
            new_id, sa.literal(job_id, sa.Uuid), scenes.c.dataset, scenes.c.config, scenes.c.split,
            scenes.c.image_column, scenes.c.row_index + shift, *(scenes.c[name] for name in _MOVED),
            sa.literal(now, _ts),
        ).where(_in_split(split), scenes.c.removed_at.is_(None), shift.is_not(None))
        statement = self._insert(scenes).from_select(columns, select)
        statement = statement.on_conflict_do_update(
            index_elements=list(SCENE_KEY),
            set_={"job_id": statement.excluded.job_id, **{name: statement.excluded[name] for name in _MOVED},
                  "duplicate_of": None, "removed_at": None, "removed_in": None},
        ).returning(scenes.c.id)
        return len(conn.execute(statement).all())

    @staticmethod
    def _mark_removed(conn: sa.Connection, split: SplitKey, rows: Sequence[tuple[str, int]], removed: dict[str, Any]) -> int:
        count = 0
        for start in range(0, len(rows), KEYS_PER_STATEMENT):
            chunk = rows[start:start + KEYS_PER_STATEMENT]
            count += conn.execute(scenes.update().where(
                _in_split(split), scenes.c.removed_at.is_(None),
                sa.tuple_(scenes.c.image_column, scenes.c.row_index).in_(chunk)).values(**removed)).rowcount
        return count

    def known_files(self, dataset: str, content_ids: Sequence[str]) -> dict[str, KnownFile]:
        found: dict[str, KnownFile] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(content_ids), KEYS_PER_STATEMENT):
                chunk = content_ids[start:start + KEYS_PER_STATEMENT]
                query = sa.select(split_files.c.content_id, split_files.c.rows, split_files.c.arrow_schema).where(
                    split_files.c.dataset == dataset, split_files.c.content_id.in_(chunk))
                found.update(known_files_of(conn.execute(query).mappings()))
        return found

    def remove_scenes(self, split: SplitKey, rows: Sequence[tuple[str, int]], revision: str | None) -> int:
        if not rows:
            return 0
        with self._writing() as conn:
            return self._mark_removed(conn, split, list(rows), {"removed_at": utcnow(), "removed_in": revision})

    def add_shards(self, shards: Sequence[Shard]) -> list[Shard]:
        if not shards:
            return []
        now = utcnow()
        values = [{**s.row(), "updated_at": now} for s in shards]
        statement = self._insert(job_shards).on_conflict_do_nothing(index_elements=["job_id", "shard"])
        with self._writing() as conn:
            conn.execute(statement, values)
        return self.list_shards(shards[0].job_id)

    def list_shards(self, job_id: uuid.UUID) -> list[Shard]:
        query = sa.select(job_shards).where(job_shards.c.job_id == job_id).order_by(job_shards.c.shard)
        with self.engine.connect() as conn:
            return [_shard(row) for row in conn.execute(query).mappings()]

    def update_shard(
        self,
        job_id: uuid.UUID,
        shard: int,
        *,
        status: ShardStatus | None = None,
        checkpoint: int | None = None,
        counts: dict[str, Any] | None = None,
        flow_run_id: str | None = None,
        error: str | None = None,
        attempt: bool = False,
    ) -> None:
        values: dict[str, Any] = {**shard_changes(status, checkpoint, counts, flow_run_id, error), "updated_at": utcnow()}
        if attempt:
            values["attempts"] = job_shards.c.attempts + 1
        statement = (
            job_shards.update()
            .where(job_shards.c.job_id == job_id, job_shards.c.shard == shard,
                   job_shards.c.status != ShardStatus.COMPLETED.value)
            .values(**values)
        )
        with self._writing() as conn:
            conn.execute(statement)

    def claim_shard(self, job_id: uuid.UUID, shard: int, attempt: int, runner: str) -> Shard | None:
        statement = (
            job_shards.update()
            .where(job_shards.c.job_id == job_id, job_shards.c.shard == shard,
                   job_shards.c.status == ShardStatus.PENDING.value, job_shards.c.attempts == attempt)
            .values(status=ShardStatus.RUNNING.value, flow_run_id=runner, updated_at=utcnow())
            .returning(*job_shards.c)
        )
        with self._writing() as conn:
            row = conn.execute(statement).mappings().first()
        return _shard(row) if row else None

    def reserve_shard_rows(self, job_id: uuid.UUID, shard: int, upto: int) -> int:
        wanted = sa.case((job_shards.c.end_row < upto, job_shards.c.end_row), else_=sa.literal(upto))
        statement = (
            job_shards.update()
            .where(job_shards.c.job_id == job_id, job_shards.c.shard == shard)
            .values(reserved_row=sa.case((_reserved_up_to > wanted, _reserved_up_to), else_=wanted))
            .returning(job_shards.c.reserved_row)
        )
        with self._writing() as conn:
            reserved = conn.execute(statement).scalar_one_or_none()
        if reserved is None:
            raise KeyError(f"job {job_id} has no shard {shard}")
        return int(reserved)

    def split_shard(self, job_id: uuid.UUID, shard: int, at: int, end_row: int) -> Shard | None:
        if at >= end_row:
            return None
        cut = (
            job_shards.update()
            .where(job_shards.c.job_id == job_id, job_shards.c.shard == shard,
                   job_shards.c.status == ShardStatus.RUNNING.value, job_shards.c.end_row == end_row,
                   _reserved_up_to <= at, job_shards.c.first_row < at)
            .values(end_row=at, updated_at=utcnow())
        )
        with self._writing() as conn:
            if conn.execute(cut).rowcount != 1:
                return None
            number = conn.execute(sa.select(sa.func.max(job_shards.c.shard) + 1)
                                  .where(job_shards.c.job_id == job_id)).scalar_one()
            piece = Shard(job_id=job_id, shard=int(number), first_row=at, end_row=end_row)
            conn.execute(job_shards.insert().values(**piece.row(), updated_at=utcnow()))
        return piece


def _copied_hashes(conn: sa.Connection, query: sa.Select[Any]) -> SplitHashes:
    """`query`'s (id, row_index, phash, duplicate_of) rows through COPY, parsed by Arrow's CSV reader: a row per
    scene through the driver cost 2.5x as much (200,000 scenes: 0.75 s against 0.3 s). Every value is a uuid,
    an integer or hex, so COPY's text format needs no unescaping; `\\N` is its NULL."""
    import pyarrow as pa
    import pyarrow.csv as csv

    compiled = query.compile(dialect=conn.dialect)
    with conn.connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
        data = bytearray()  # one copy of the rows (~90 MB for 1,000,000 scenes), not one per chunk and a join
        with cursor.copy(f"copy ({compiled}) to stdout", compiled.params) as copy:
            for chunk in copy:
                data += chunk
    if not data:
        return SplitHashes([], [], [], [])
    names = ["id", "row_index", "phash", "duplicate_of"]
    table = csv.read_csv(pa.py_buffer(data), read_options=csv.ReadOptions(column_names=names),
                         parse_options=csv.ParseOptions(delimiter="\t", quote_char=False),
                         convert_options=csv.ConvertOptions(
                             column_types={"id": pa.string(), "row_index": pa.int64(), "phash": pa.string(),
                                           "duplicate_of": pa.string()},
                             null_values=["\\N"], strings_can_be_null=True))
    return SplitHashes(*(table.column(name).to_pylist() for name in names))


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _shard(row: sa.RowMapping) -> Shard:
    return Shard(
        job_id=row["job_id"], shard=row["shard"], first_row=row["first_row"], end_row=row["end_row"],
        status=ShardStatus(row["status"]), checkpoint=row["checkpoint"], counts=row["counts"] or {},
        attempts=row["attempts"], flow_run_id=row["flow_run_id"], error=row["error"], reserved_row=row["reserved_row"],
    )


def _job(row: sa.RowMapping) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        status=JobStatus(row["status"]),
        params=row["params"] or {},
        flow_run_id=row["flow_run_id"],
        error=row["error"],
        progress=row["progress"] or {},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )
