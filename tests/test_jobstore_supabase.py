"""The Supabase (REST) jobs store, checked at the HTTP layer: what it sends and how it reads failures.

No Supabase gateway can run here, so PostgREST's side is played by respx; the SQL the
migration creates is tested on real PostgreSQL in test_jobstore_sql.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from collections.abc import Iterator

import httpx
import pytest
import respx

from hf_ingest.jobstore import JobStatus, Scene, SceneWrites
from hf_ingest.jobstore.supabase import SupabaseJobStore, SupabaseRequestError, SupabaseUnavailable
from hf_ingest.transient import is_transient

URL = "https://project-ref.supabase.co"
KEY = "service-role-key-0123456789abcdef"
REST = f"{URL}/rest/v1"


def _job_row(job_id: uuid.UUID, status: str = "queued") -> dict:
    return {
        "id": str(job_id),
        "kind": "huggingface_import",
        "status": status,
        "params": {"dataset": "a/b"},
        "flow_run_id": None,
        "error": None,
        "progress": {},
        "created_at": "2026-11-28T10:00:00+00:00",
        "updated_at": "2026-11-28T10:00:00+00:00",
        "started_at": None,
        "finished_at": None,
    }


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=REST, assert_all_called=False) as router:
        yield router


@pytest.fixture
def store() -> SupabaseJobStore:
    return SupabaseJobStore.from_credentials(URL, KEY)


def _prefer(request: httpx.Request) -> set[str]:
    return {p.strip() for p in request.headers.get("prefer", "").split(",") if p.strip()}


def test_create_job_upserts_ignoring_duplicates_then_reads_it(api: respx.MockRouter, store: SupabaseJobStore) -> None:
    job_id = uuid.uuid4()
    insert = api.post("/jobs").mock(return_value=httpx.Response(201))
    read = api.get("/jobs").mock(return_value=httpx.Response(200, json=[_job_row(job_id)]))
    job = store.create_job(job_id, {"dataset": "a/b"})
    assert job.id == job_id and job.status is JobStatus.QUEUED
    sent = insert.calls.last.request
    assert sent.url.params["on_conflict"] == "id"
    assert {"resolution=ignore-duplicates", "return=minimal"} <= _prefer(sent)
    assert json.loads(sent.content)["status"] == "queued"
    assert sent.headers["apikey"] == KEY and sent.headers["authorization"] == f"Bearer {KEY}"
    assert read.calls.last.request.url.params["id"] == f"eq.{job_id}"


def test_advance_filters_on_allowed_predecessors(api: respx.MockRouter, store: SupabaseJobStore) -> None:
    job_id = uuid.uuid4()
    route = api.patch("/jobs").mock(return_value=httpx.Response(200, json=[_job_row(job_id, "completed")]))
    assert store.advance(job_id, JobStatus.COMPLETED, progress={"stored": 3})
    sent = route.calls.last.request
    assert sent.url.params["id"] == f"eq.{job_id}"
    assert sent.url.params["status"] == "in.(queued,running)"
    body = json.loads(sent.content)
    assert body["status"] == "completed" and body["finished_at"] and body["progress"] == {"stored": 3}
    assert "return=representation" in _prefer(sent)

    route.mock(return_value=httpx.Response(200, json=[]))  # the filter matched nothing: already terminal
    assert not store.advance(job_id, JobStatus.RUNNING)
    assert route.calls.last.request.url.params["status"] == "in.(queued)"


def test_scene_upsert_calls_the_migration_function_once_per_batch(api: respx.MockRouter, store: SupabaseJobStore) -> None:
    """PostgREST's own upsert cannot replace only rows of another revision nor tell inserted from replaced
    rows: the store calls `hf_ingest_upsert_scenes` (its SQL is tested on PostgreSQL in test_jobstore_sql)."""
    job_id = uuid.uuid4()
    scenes = [
        Scene(job_id, "a/b", "default", "train", "image", i, f"images/{i}.jpg", f"https://cdn/{i}.jpg", "0" * 64,
              "image/jpeg", 2, 2, 10, {"caption": "x"}, revision="c" * 40)
        for i in (0, 1, 2, 2)
    ]
    route = api.post("/rpc/hf_ingest_upsert_scenes").mock(
        return_value=httpx.Response(200, json=[{"inserted": 2, "updated": 1}])
    )
    assert store.upsert_scenes(scenes) == SceneWrites(2, 1)
    assert route.call_count == 1
    body = json.loads(route.calls.last.request.content)
    assert [r["row_index"] for r in body["scenes"]] == [0, 1, 2]  # a key twice in a batch is sent once
    first = body["scenes"][0]
    assert first["metadata"] == {"caption": "x"} and first["image_column"] == "image" and first["revision"] == "c" * 40
    assert first["job_id"] == str(job_id) and uuid.UUID(first["id"])
    assert store.upsert_scenes([]) == SceneWrites(0, 0) and route.call_count == 1


def test_a_large_batch_of_scenes_goes_in_calls_of_a_few_thousand_rows(
    api: respx.MockRouter, store: SupabaseJobStore
) -> None:
    """A batch of small images holds up to BATCH_SIZE rows; the gateway gets them UPSERT_SCENES_PER_CALL at a time."""
    from hf_ingest.jobstore.supabase import UPSERT_SCENES_PER_CALL

    job_id = uuid.uuid4()
    scenes = [Scene(job_id, "a/b", "default", "train", "image", i, f"images/{i}.jpg", f"https://cdn/{i}.jpg", "0" * 64,
                    "image/jpeg", 2, 2, 10, {}) for i in range(2 * UPSERT_SCENES_PER_CALL + 5)]
    route = api.post("/rpc/hf_ingest_upsert_scenes").mock(
        return_value=httpx.Response(200, json=[{"inserted": 7, "updated": 1}])
    )
    assert store.upsert_scenes(scenes) == SceneWrites(21, 3)
    sent = [json.loads(call.request.content)["scenes"] for call in route.calls]
    assert [len(rows) for rows in sent] == [UPSERT_SCENES_PER_CALL, UPSERT_SCENES_PER_CALL, 5]
    assert [r["row_index"] for rows in sent for r in rows] == list(range(len(scenes)))  # every row once, in order


def test_count_scenes_asks_for_an_exact_count(api: respx.MockRouter, store: SupabaseJobStore) -> None:
    job_id = uuid.uuid4()
    route = api.head("/scenes").mock(return_value=httpx.Response(200, headers={"content-range": "*/42"}))
    assert store.count_scenes(job_id=job_id) == 42
    sent = route.calls.last.request
    assert "count=exact" in _prefer(sent) and sent.url.params["job_id"] == f"eq.{job_id}"


@pytest.mark.parametrize(
    ("response", "transient"),
    [
        (httpx.Response(503, text="<html>upstream unavailable</html>"), True),
        (httpx.Response(429, text="slow down"), True),
        (httpx.Response(503, json={"code": "PGRST001", "message": "Database client error"}), True),
        (httpx.Response(401, json={"code": "PGRST301", "message": "JWT invalid"}), False),
        (httpx.Response(400, json={"code": "42703", "message": "column jobs.nope does not exist"}), False),
    ],
)
def test_errors_are_mapped_to_transient_or_permanent(
    api: respx.MockRouter, store: SupabaseJobStore, response: httpx.Response, transient: bool
) -> None:
    api.patch("/jobs").mock(return_value=response)
    with pytest.raises((SupabaseUnavailable, SupabaseRequestError)) as raised:
        store.update_progress(uuid.uuid4(), {"rows_seen": 1})
    assert is_transient(raised.value) is transient
    assert KEY not in str(raised.value)


def test_connection_failure_is_transient(api: respx.MockRouter, store: SupabaseJobStore) -> None:
    api.get("/jobs").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(SupabaseUnavailable) as raised:
        store.get_job(uuid.uuid4())
    assert is_transient(raised.value)


def test_settings_choose_supabase_only_when_url_and_key_are_both_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.settings import Settings
    from hf_ingest.jobstore import open_job_store
    from hf_ingest.jobstore.sql import SqlJobStore

    monkeypatch.setenv("SUPABASE_URL", URL)
    assert isinstance(open_job_store(Settings()), SqlJobStore)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    assert isinstance(open_job_store(Settings()), SupabaseJobStore)


def test_a_sync_records_its_layout_with_one_function_call_and_reads_it_back(
    api: respx.MockRouter, store: SupabaseJobStore
) -> None:
    """What a sync sends over PostgREST (the functions' SQL runs on PostgreSQL in test_sync_layout.py)."""
    from hf_ingest.jobstore import SplitKey
    from hf_ingest.jobstore.model import Expected, KnownFile, LayoutChanged, LayoutFile, LayoutWrites, RowMove, SplitLayout

    split = SplitKey("a/b", "default", "train", "image")
    before = SplitLayout("f" * 32, (LayoutFile("data/x.parquet", "git:1", 10, 0, True, "1" * 40, "c2NoZW1h"),))
    after = SplitLayout("f" * 32, (LayoutFile("data/w.parquet", "git:0", 5, 0, False, "2" * 40, "c2NoZW1h"),
                                   LayoutFile("data/x.parquet", "git:1", 10, 5, True, "1" * 40, "c2NoZW1h")))
    record = api.post("/rpc/hf_ingest_record_layout").mock(return_value=httpx.Response(200, json={"moved": 9, "removed": 1}))
    job = uuid.uuid4()
    assert store.record_layout(split, after, [RowMove(0, 10, 5)], 15, "2" * 40, job, Expected(before)) == LayoutWrites(9, 1)
    body = json.loads(record.calls.last.request.content)
    assert body["p_moves"] == [{"first_row": 0, "end_row": 10, "shift": 5}] and body["p_end_row"] == 15
    assert [f["name"] for f in body["p_files"]] == ["data/w.parquet", "data/x.parquet"] and body["p_files"][0]["schema"]
    assert body["p_check"] is True and body["p_expected"]["files"][0]["content_id"] == "git:1"
    assert "schema" not in body["p_expected"]["files"][0]  # compared with what the table holds, as the SQL builds it
    assert body["p_job"] == str(job) and body["p_image_column"] == "image"

    record.mock(return_value=httpx.Response(400, json={"code": "P0001", "message": "hf_ingest: layout changed"}))
    with pytest.raises(LayoutChanged):
        store.record_layout(split, after, [], None, None, job, Expected(before))

    rows = [{"position": p, "name": f.name, "content_id": f.content_id, "rows": f.rows, "first_row": f.first_row,
             "done": f.done, "revision": f.revision, "fingerprint": after.fingerprint, "arrow_schema": f.schema}
            for p, f in enumerate(after.files)]
    read = api.get("/split_files").mock(side_effect=_postgrest_pages(rows))
    assert store.read_layout(split) == after
    assert "image_column=eq.image" in str(read.calls.last.request.url)
    read.mock(return_value=httpx.Response(200, json=[{"content_id": "git:1", "rows": 10, "arrow_schema": "c2NoZW1h"}]))
    assert store.known_files("a/b", ["git:1", "git:9"]) == {"git:1": KnownFile(10, "c2NoZW1h")}
    assert read.calls.last.request.url.params["content_id"] == 'in.("git:1","git:9")'
    assert read.calls.last.request.url.params["dataset"] == "eq.a/b"

    remove = api.post("/rpc/hf_ingest_remove_scenes").mock(return_value=httpx.Response(200, json=2))
    assert store.remove_scenes(split, [("image", 3), ("image", 4)], "2" * 40) == 2
    assert json.loads(remove.calls.last.request.content)["p_rows"] == [
        {"image_column": "image", "row_index": 3}, {"image_column": "image", "row_index": 4}]


def _postgrest_pages(rows: list[dict[str, Any]], max_rows: int = 1000) -> Any:
    """`split_files` as PostgREST serves it: `position=gt.N`, `order=position`, at most `max_rows` a response."""
    def answer(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["position"].removeprefix("gt."))
        limit = min(int(request.url.params.get("limit", max_rows)), max_rows)
        return httpx.Response(200, json=[r for r in rows if r["position"] > after][:limit])
    return answer


def test_a_layout_longer_than_postgrests_max_rows_is_read_whole(api: respx.MockRouter, store: SupabaseJobStore) -> None:
    """An imagefolder's layout has a row per image: Supabase answers 1,000 rows a request (its default
    `max-rows`; here a server capped at 700), so the layout comes in pages, none lost."""
    from hf_ingest.jobstore import SplitKey

    rows = [{"position": p, "name": f"train/{p:05d}.jpg", "content_id": f"row:{p}", "rows": 1, "first_row": p,
             "done": True, "revision": None, "fingerprint": "f" * 32, "arrow_schema": None} for p in range(2500)]
    read = api.get("/split_files").mock(side_effect=_postgrest_pages(rows, max_rows=700))
    layout = store.read_layout(SplitKey("a/b", "default", "train", "image"))
    assert layout is not None and [f.first_row for f in layout.files] == list(range(2500))
    assert read.call_count == 5  # 700, 700, 700, 400, and the empty page that ends it
