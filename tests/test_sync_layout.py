"""A split's recorded layout and the scene moves and removals of a sync, on SQLite and a real PostgreSQL
(the SQL store), and through the Supabase migration's functions on PostgreSQL (what the REST store calls)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hf_ingest.jobstore import SplitKey
from hf_ingest.jobstore.model import (
    Expected,
    LayoutChanged,
    LayoutFile,
    LayoutWrites,
    RowMove,
    Scene,
    SceneWrites,
    Shard,
    ShardStatus,
    SplitHashes,
    SplitLayout,
)
from hf_ingest.jobstore.sql import SqlJobStore, make_engine
from hf_ingest.jobstore.supabase import (
    RECORD_LAYOUT_FUNCTION,
    REMOVE_SCENES_FUNCTION,
    RESERVE_SHARD_ROWS_FUNCTION,
    SPLIT_SHARD_FUNCTION,
    record_layout_params,
    remove_scenes_params,
)
from tests.test_jobstore_sql import _apply_migrations, _fresh_database

SPLIT = SplitKey("owner/name", "default", "train", "image")


class MigrationFunctions(SqlJobStore):
    """The SQL store on a database made by the Supabase migrations, its sync writes and shard cuts done by the
    migrations' functions with the arguments the Supabase store sends them over PostgREST."""

    def _call(self, function: str, params: dict[str, Any]) -> Any:
        names = ", ".join(f"{name} => :{name}" for name in params)
        values = {name: json.dumps(value) if isinstance(value, (list, dict)) else value for name, value in params.items()}
        casts = {name: "jsonb" for name, value in params.items() if isinstance(value, (list, dict))}
        text = f"select {function}({names})"
        for name, cast in casts.items():
            text = text.replace(f":{name}", f"cast(:{name} as {cast})", 1)
        with self.engine.begin() as conn:
            return conn.execute(sa.text(text), values).scalar_one()

    def record_layout(self, split: SplitKey, layout: SplitLayout | None, moves: Sequence[RowMove],
                      end_row: int | None, revision: str | None, job_id: uuid.UUID,
                      expected: Expected | None = None) -> LayoutWrites:
        params = record_layout_params(split, layout, moves, end_row, revision, job_id, expected)
        try:
            result = self._call(RECORD_LAYOUT_FUNCTION, params)
        except sa.exc.DBAPIError as exc:
            if "layout changed" in str(exc):
                raise LayoutChanged(str(exc)) from None
            raise
        return LayoutWrites(moved=int(result["moved"]), removed=int(result["removed"]))

    def remove_scenes(self, split: SplitKey, rows: Sequence[tuple[str, int]], revision: str | None) -> int:
        return int(self._call(REMOVE_SCENES_FUNCTION, remove_scenes_params(split, rows, revision)))

    def upsert_scenes(self, rows: Sequence[Scene]) -> SceneWrites:
        payload = [{**s.row(), "id": str(s.id), "job_id": str(s.job_id)} for s in rows]
        with self.engine.begin() as conn:
            row = conn.execute(sa.text("select * from hf_ingest_upsert_scenes(cast(:scenes as jsonb))"),
                               {"scenes": json.dumps(payload)}).one()
        return SceneWrites(int(row.inserted), int(row.updated), int(row.backfilled))

    def reserve_shard_rows(self, job_id: uuid.UUID, shard: int, upto: int) -> int:
        return int(self._call(RESERVE_SHARD_ROWS_FUNCTION, {"p_job_id": str(job_id), "p_shard": shard, "p_upto": upto}))

    def split_shard(self, job_id: uuid.UUID, shard: int, at: int, end_row: int) -> Shard | None:
        with self.engine.begin() as conn:
            row = conn.execute(sa.text(f"select * from {SPLIT_SHARD_FUNCTION}(:j, :s, :a, :e)"),
                               {"j": str(job_id), "s": shard, "a": at, "e": end_row}).mappings().first()
        return None if row is None else Shard(job_id=row["job_id"], shard=row["shard"], first_row=row["first_row"],
                                              end_row=row["end_row"], status=ShardStatus(row["status"]))

    def scene_hashes(self, split: SplitKey) -> SplitHashes:
        page = self._call("hf_ingest_scene_hashes", {"p_dataset": split.dataset, "p_config": split.config,
                                                     "p_split": split.split, "p_image_column": split.image_column,
                                                     "p_after_row": -1, "p_limit": 1000})
        return SplitHashes.from_rows((uuid.UUID(i), int(r), h, uuid.UUID(d) if d else None) for i, r, h, d in page)


@pytest.fixture(params=["sqlite", "postgresql", "supabase-functions"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlJobStore]:
    if request.param == "sqlite":
        store = SqlJobStore.from_url(f"sqlite:///{tmp_path / 'jobs.db'}")
    elif request.param == "postgresql":
        store = SqlJobStore.from_url(_fresh_database(request.getfixturevalue("postgres_url")))
    else:
        engine = make_engine(_fresh_database(request.getfixturevalue("postgres_url")))
        _apply_migrations(engine)
        store = MigrationFunctions(engine)
    yield store
    store.engine.dispose()


def _scene(job: uuid.UUID, row: int, content: str, column: str = "image") -> Scene:
    digest = content.rjust(64, "0")
    return Scene(job_id=job, dataset=SPLIT.dataset, config=SPLIT.config, split=SPLIT.split, image_column=column,
                 row_index=row, object_key=f"images/{digest}.jpg", url=f"file:///{digest}.jpg", sha256=digest,
                 content_type="image/jpeg", width=4, height=3, bytes=10, metadata={"content": content},
                 revision="1" * 40, phash="0" * 16)


def _live(store: SqlJobStore) -> dict[tuple[str, int], str]:
    """(image column, row) -> the content of every live scene."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("select image_column, row_index, sha256 from scenes where removed_at is null"))
        return {(r.image_column, r.row_index): r.sha256.lstrip("0") for r in rows}


def _removed(store: SqlJobStore) -> dict[int, str | None]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text("select row_index, removed_in from scenes where removed_at is not null"))
        return {r.row_index: r.removed_in for r in rows}


def _ids(store: SqlJobStore) -> dict[int, str]:
    with store.engine.connect() as conn:
        return {r.row_index: str(r.id) for r in conn.execute(sa.text("select id, row_index from scenes"))}


def _recorded(store: SqlJobStore, contents: dict[int, str]) -> uuid.UUID:
    job = uuid.uuid4()
    store.create_job(job, {"dataset": SPLIT.dataset})
    store.upsert_scenes([_scene(job, row, content) for row, content in contents.items()])
    return job


def test_rows_after_a_grown_file_move_keeping_their_ids_and_a_row_whose_source_had_no_scene_is_removed(
    store: SqlJobStore,
) -> None:
    # rows 0-4: a file that grows by 3 rows; rows 5-9: a file kept as it is, whose row 6 is not a valid image
    job = _recorded(store, {row: f"c{row}" for row in range(10) if row != 6})
    ids = _ids(store)
    writes = store.record_layout(SPLIT, None, [RowMove(5, 10, 3)], 13, "2" * 40, job)
    live = _live(store)
    assert {row: live[("image", row)] for row in range(8, 13) if ("image", row) in live} == {
        8: "c5", 10: "c7", 11: "c8", 12: "c9"}
    assert _removed(store) == {9: "2" * 40}  # its source, row 6, had no scene: the old scene there is gone
    assert writes == LayoutWrites(moved=4, removed=1)
    after = _ids(store)
    assert after[8] == ids[8] and after[9] == ids[9]  # an id stays with its row (as a full import leaves it)
    assert after[10] not in ids.values()  # a row new to the split is a new scene
    assert all(live[("image", row)] == f"c{row}" for row in range(5))  # the grown file's rows wait for their read


def test_a_shrunk_file_moves_the_rows_after_it_down_and_the_rows_past_the_new_end_are_removed(
    store: SqlJobStore,
) -> None:
    job = _recorded(store, {row: f"c{row}" for row in range(10)})
    writes = store.record_layout(SPLIT, None, [RowMove(5, 10, -2)], 8, "2" * 40, job)
    live = _live(store)
    assert [live[("image", row)] for row in range(3, 8)] == ["c5", "c6", "c7", "c8", "c9"]
    assert sorted(_removed(store)) == [8, 9]
    assert writes == LayoutWrites(moved=5, removed=2)


def test_moves_of_several_files_read_every_source_before_any_is_overwritten(store: SqlJobStore) -> None:
    job = _recorded(store, {row: f"c{row}" for row in range(9)})
    store.record_layout(SPLIT, None, [RowMove(3, 6, 2), RowMove(6, 9, 4)], 13, "2" * 40, job)
    live = _live(store)
    assert [live[("image", row)] for row in (5, 6, 7)] == ["c3", "c4", "c5"]
    assert [live[("image", row)] for row in (10, 11, 12)] == ["c6", "c7", "c8"]


def test_the_layout_is_recorded_replaced_and_forgotten(store: SqlJobStore) -> None:
    job = _recorded(store, {})
    assert store.read_layout(SPLIT) is None
    layout = SplitLayout("f" * 32, (LayoutFile("data/a.parquet", "git:1", 5, 0, True, "1" * 40),
                                    LayoutFile("data/b.parquet", "git:2", 7, 5, False, "2" * 40)))
    store.record_layout(SPLIT, layout, [], None, "2" * 40, job)
    assert store.read_layout(SPLIT) == layout
    assert store.read_layout(SplitKey(SPLIT.dataset, SPLIT.config, "test", "image")) is None
    store.record_layout(SPLIT, None, [], None, None, job)
    assert store.read_layout(SPLIT) is None


def test_a_removed_scene_comes_back_when_its_row_is_recorded_again_and_grouping_ignores_it(store: SqlJobStore) -> None:
    job = _recorded(store, {0: "a", 1: "b", 2: "c"})
    assert store.remove_scenes(SPLIT, [("image", 1), ("image", 7)], "2" * 40) == 1
    assert store.remove_scenes(SPLIT, [("image", 1)], "2" * 40) == 0  # already removed: not again
    assert sorted(row for _, row in _live(store)) == [0, 2]
    assert sorted(store.scene_hashes(SPLIT).row_index) == [0, 2]
    again = store.upsert_scenes([_scene(job, 1, "b")])  # the same content at the same revision: it is back
    assert again.updated == 1 and sorted(row for _, row in _live(store)) == [0, 1, 2] and _removed(store) == {}


def test_images_of_a_list_column_move_with_their_row(store: SqlJobStore) -> None:
    job = uuid.uuid4()
    store.create_job(job, {})
    store.upsert_scenes([_scene(job, row, f"{column}{row}", column) for row in range(4)
                         for column in ("image[0]", "image[1]")])
    store.record_layout(SPLIT, None, [RowMove(2, 4, 1)], 5, "2" * 40, job)
    live = _live(store)
    assert live[("image[0]", 4)] == "image[0]3" and live[("image[1]", 3)] == "image[1]2"


def test_a_sync_records_only_over_the_layout_it_planned_from(store: SqlJobStore) -> None:
    """Two imports of one split at once (a schedule's run beside a POST): the second to record finds the layout
    changed and records nothing (it plans again), so no row moves twice."""
    job = _recorded(store, {row: f"c{row}" for row in range(6)})
    first = SplitLayout("f" * 32, (LayoutFile("a", "git:1", 3, 0, True), LayoutFile("b", "git:2", 3, 3, True)))
    store.record_layout(SPLIT, first, [], None, None, job, Expected(None))
    with pytest.raises(LayoutChanged):
        store.record_layout(SPLIT, first, [], None, None, job, Expected(None))  # planned before `first` existed
    moved = SplitLayout("f" * 32, (LayoutFile("a2", "git:3", 4, 0, False), LayoutFile("b", "git:2", 3, 4, True)))
    assert store.record_layout(SPLIT, moved, [RowMove(3, 6, 1)], 7, "2" * 40, job, Expected(first)).moved == 3
    with pytest.raises(LayoutChanged):  # the same plan again, from the layout before: nothing moves twice
        store.record_layout(SPLIT, moved, [RowMove(3, 6, 1)], 7, "2" * 40, job, Expected(first))
    assert [_live(store)[("image", row)] for row in (4, 5, 6)] == ["c3", "c4", "c5"]
    assert store.read_layout(SPLIT) == moved
