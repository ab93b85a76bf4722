"""Copying what one SQL jobs database holds into another: `hf-ingest copy-db SOURCE_URL TARGET_URL`.

For moving from the SQLite file that `make demo`, `hf-ingest run` and the stack before it had its own
PostgreSQL keep (`.data/hf_ingest.db`) to PostgreSQL: the stack's, or Supabase's. Both databases are
brought to the current schema first; rows go over in chunks, each chunk one insert that skips rows the
target already has (same job id, same shard, same scene key), so a copy stopped half-way is simply run
again, and nothing in the target is ever overwritten. A split's file list (`split_files`, what its next
sync compares with) goes over whole or not at all: a target that has its own for that split keeps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from hf_ingest.jobstore.model import SCENE_KEY
from hf_ingest.jobstore.sql import SqlJobStore, job_shards, jobs, scenes, split_files

CHUNK_ROWS = 5000
# Parents before children (foreign keys), each with the columns that identify a row, and the first of them that
# identify what is copied whole (a row; a split's file list, whose positions only make sense together).
TABLES: tuple[tuple[sa.Table, tuple[str, ...], int], ...] = (
    (jobs, ("id",), 1),
    (job_shards, ("job_id", "shard"), 2),
    (scenes, SCENE_KEY, len(SCENE_KEY)),
    (split_files, ("dataset", "config", "split", "image_column", "position"), 4),
)


@dataclass(frozen=True)
class Copied:
    table: str
    read: int
    written: int


def copy_database(source_url: str, target_url: str) -> list[Copied]:
    """Every job, shard and scene of `source_url` that `target_url` does not have yet; returns the counts."""
    source, target = SqlJobStore.from_url(source_url), SqlJobStore.from_url(target_url)
    report = []
    for table, key, whole in TABLES:
        read = written = 0
        units = key[:whole]
        held = _held(target.engine, table, units) if whole < len(key) else set()
        for chunk in _chunks(source.engine, table):
            read += len(chunk)
            chunk = [row for row in chunk if tuple(row[c] for c in units) not in held]
            if not chunk:
                continue
            statement = (target._insert(table).on_conflict_do_nothing(index_elements=list(key))
                         .returning(table.c[key[0]]))
            with target._writing() as conn:
                written += len(conn.execute(statement, chunk).all())
        report.append(Copied(table.name, read, written))
    return report


def _chunks(engine: sa.Engine, table: sa.Table) -> Iterator[list[dict[str, object]]]:
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=CHUNK_ROWS).execute(sa.select(table))
        for partition in result.mappings().partitions(CHUNK_ROWS):
            yield [dict(row) for row in partition]


def _held(engine: sa.Engine, table: sa.Table, columns: tuple[str, ...]) -> set[tuple[object, ...]]:
    """What the target has of `table`, by `columns`: those are not copied into."""
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.select(*(table.c[c] for c in columns)).distinct())}
