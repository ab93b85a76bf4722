"""Bringing an existing jobs/scenes database up to the current schema (the SQL store runs this at start).

Version 2 (2026-11-29) gave scenes their image column and revision, and made the image column part
of a scene's identity: `(dataset, config, split, image_column, row_index)`. Rows recorded before
it get the image column their job asked for, or `image` (the usual name) when the job used the
default, and no revision. Supabase gets the same change as a migration file under
`supabase/migrations/`.

Version 3 (2026-12-02) gave scenes what an app shows (`thumbnail_url`, `preview_url`, `placeholder`) and
their near-duplicates (`phash`, `duplicate_of`): new nullable columns; rows recorded before keep
working and get them from the next import of their dataset (a backfill).

Version 4 (2026-12-03) keeps datasets current: scenes get `removed_at`/`removed_in` (set when a newer
revision no longer has their row; never deleted), and `split_files` records the data files each split's
scenes were recorded from (a new table, made by `create_all`), so that a sync reads only what changed.

Version 5 (2026-12-03) lets a run take part of another's shard: `job_shards.reserved_row` (nullable), how
far the run importing a shard may read; the rows after it may be split off.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

_OLD_UNIQUE = "scenes_source_row_key"
_BACKFILL_IMAGE_COLUMN = (
    "coalesce((select j.params ->> 'image_column' from jobs j where j.id = scenes.job_id), 'image')"
)


SCHEMA_LOCK = 0x6866_696E_6765_7374  # "hfingest": PostgreSQL advisory lock held while the schema is made


def create_schema(engine: Engine, metadata: sa.MetaData) -> None:
    """Create the missing tables and apply the migrations, in one transaction. On PostgreSQL it holds an
    advisory lock: workers that start together on a fresh database (shard runs do) would otherwise race
    to create the same tables and all but one fail."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("select pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        metadata.create_all(conn, checkfirst=True)
        migrate(conn, metadata)


V4_COLUMNS = {"removed_at": "timestamptz", "removed_in": "text"}  # 2026-12-03: rows a newer revision no longer has
V3_COLUMNS = {"thumbnail_url": "text", "preview_url": "text", "placeholder": "text", "phash": "text",
              "duplicate_of": "uuid"}


def migrate(conn: Connection, metadata: sa.MetaData) -> None:
    """Apply what is missing; a current database is left as it is (one inspection per table)."""
    if "reserved_row" not in {column["name"] for column in sa.inspect(conn).get_columns("job_shards")}:
        conn.exec_driver_sql("alter table job_shards add column reserved_row bigint")
    columns = {column["name"] for column in sa.inspect(conn).get_columns("scenes")}
    if "image_column" not in columns:
        if conn.dialect.name == "sqlite":
            _rebuild_sqlite_scenes(conn, metadata, columns)  # makes the current table: v3 included
            return
        _alter_postgresql_scenes(conn)
    files = {column["name"] for column in sa.inspect(conn).get_columns("split_files")}
    if "arrow_schema" not in files:  # split_files as the first build of v4 made it
        conn.exec_driver_sql("alter table split_files add column arrow_schema text")
    sqlite_types = {"uuid": "char(32)", "timestamptz": "datetime"}
    for name, kind in {**V3_COLUMNS, **V4_COLUMNS}.items():
        if name not in columns:
            sql_type = kind if conn.dialect.name == "postgresql" else sqlite_types.get(kind, kind)
            conn.exec_driver_sql(f"alter table scenes add column {name} {sql_type}")


def _alter_postgresql_scenes(conn: Connection) -> None:
    conn.exec_driver_sql("alter table scenes add column if not exists image_column text")
    conn.exec_driver_sql("alter table scenes add column if not exists revision text")
    conn.exec_driver_sql(f"update scenes set image_column = {_BACKFILL_IMAGE_COLUMN} where image_column is null")
    conn.exec_driver_sql("alter table scenes alter column image_column set not null")
    conn.exec_driver_sql(f"alter table scenes drop constraint if exists {_OLD_UNIQUE}")
    conn.exec_driver_sql(
        "alter table scenes add constraint scenes_source_image_key "
        "unique (dataset, config, split, image_column, row_index)"
    )


def _rebuild_sqlite_scenes(conn: Connection, metadata: sa.MetaData, old_columns: set[str]) -> None:
    """SQLite cannot drop a table constraint: build the new table, copy the rows, drop the old one."""
    table = metadata.tables["scenes"]
    copied = [c.name for c in table.columns if c.name in old_columns]
    conn.exec_driver_sql("alter table scenes rename to scenes_before_v2")
    for index in table.indexes:
        conn.exec_driver_sql(f"drop index if exists {index.name}")
    table.create(conn)
    conn.exec_driver_sql(
        f"insert into scenes ({', '.join(copied)}, image_column) "
        f"select {', '.join(copied)}, "
        f"coalesce((select json_extract(j.params, '$.image_column') from jobs j where j.id = s.job_id), 'image') "
        f"from scenes_before_v2 s"
    )
    conn.exec_driver_sql("drop table scenes_before_v2")
