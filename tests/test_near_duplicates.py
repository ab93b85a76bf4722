"""Near-duplicate grouping: what links and what does not, on planted hashes and on real photographs'
copies; the pass over a split's scenes on SQLite and PostgreSQL (only changes written); the Supabase
functions on real PostgreSQL; the Supabase client's requests at the HTTP layer."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import httpx
import numpy as np
import pytest
import respx
import sqlalchemy as sa

from blocks.settings import Settings
from hf_ingest.derivatives import DerivativeSizes, summarize
from hf_ingest.images import inspect_image
from hf_ingest.jobstore import SplitHashes, SplitKey
from hf_ingest.jobstore.sql import SqlJobStore, make_engine
from hf_ingest.jobstore.supabase import SupabaseJobStore
from hf_ingest.near_duplicates import group, regroup
from tests import photos
from tests.test_jobstore_sql import _apply_migrations, _fresh_database, _scene, store  # noqa: F401 (fixture)

SPLIT = SplitKey("owner/name", "default", "train", "image")


def _flipped(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << int(bit)
    return value


def test_planted_near_duplicates_among_random_hashes_are_found_and_nothing_else() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    halves = rng.integers(0, 2**32, size=(n, 2), dtype=np.uint64)
    hashes = (halves[:, 0] << np.uint64(32)) | halves[:, 1]
    planted = {}
    for i, distance in enumerate([0, 1, 2, 4, 6, 8, 10] * 20):
        source, copy = 2 * i, n - 1 - 2 * i
        hashes[copy] = np.uint64(_flipped(int(hashes[source]), list(rng.choice(64, distance, replace=False))))
        planted[copy] = source
    rows = rng.permutation(n)  # the order given is not the row order
    grouping = group(rows, hashes, max_distance=10)
    found = sum(1 for copy, source in planted.items() if grouping.first[copy] == grouping.first[source])
    assert found >= 0.97 * len(planted)
    for copy, source in planted.items():  # the first of a group is its lowest row
        if grouping.first[copy] == grouping.first[source]:
            assert rows[grouping.first[copy]] == min(rows[copy], rows[source])
    # nothing else links but hashes within 10 bits (random ones are ~32 apart; ~2 pairs of 20,000 are closer)
    assert found <= grouping.duplicates <= found + 6
    for i in np.flatnonzero(grouping.first != np.arange(n)):
        members = np.flatnonzero(grouping.first == grouping.first[i])
        others = members[members != i]
        assert min(bin(int(hashes[i]) ^ int(hashes[j])).count("1") for j in others) <= 10


def test_exact_copies_and_chains_group_under_the_lowest_row() -> None:
    base = 0x0123_4567_89AB_CDEF
    hashes = np.array([base, _flipped(base, [1, 2, 3]), base, _flipped(base, [1, 2, 3, 40, 41, 42]),
                       0xFFFF_0000_FFFF_0000], dtype=np.uint64)
    rows = np.array([5, 3, 9, 7, 1])
    grouping = group(rows, hashes, max_distance=3)
    # rows 5 and 9 are equal, 3 is 3 bits from them, 7 is 3 bits from 3: one group whose first is row 3
    assert grouping.first.tolist() == [1, 1, 1, 1, 4]
    assert grouping.duplicates == 3
    assert group(rows, hashes, max_distance=0).first.tolist() == [0, 1, 0, 3, 4]  # 0: byte-equal hashes only


def test_copies_of_real_photos_are_within_the_default_distance_and_different_photos_are_not() -> None:
    distance = Settings().near_duplicate_distance
    sizes = DerivativeSizes()

    def phash(data: bytes) -> int:
        rendered = inspect_image(data, 10**9, sizes).rendered
        assert rendered is not None
        return int(summarize([rendered])[0].phash, 16)

    originals = {}
    for name in photos.PHOTOS:
        image = photos.photo(name).convert("RGB")
        w, h = image.size
        originals[name] = phash(photos.encode(image, "PNG"))
        copies = [photos.encode(image.resize((w // 2, h // 2)), "JPEG", quality=90),
                  photos.encode(image, "JPEG", quality=40),
                  photos.encode(image.crop((w // 50, h // 50, w - w // 50, h - h // 50)), "WEBP", quality=80)]
        for copy in copies:
            assert bin(phash(copy) ^ originals[name]).count("1") <= distance, name
    names = list(originals)
    closest = min(bin(originals[a] ^ originals[b]).count("1") for i, a in enumerate(names) for b in names[i + 1:])
    assert closest > distance + 4, closest


def _hashed(job_id: uuid.UUID, row: int, phash: str) -> object:
    return replace(_scene(job_id, row), phash=phash, thumbnail_url=f"t{row}", preview_url=f"p{row}", placeholder="x")


def test_the_pass_writes_only_what_changed(store: SqlJobStore) -> None:  # noqa: F811
    job_id = uuid.uuid4()
    store.create_job(job_id, {})
    store.upsert_scenes([_hashed(job_id, 0, "00000000000000ff"), _hashed(job_id, 1, "00000000000000fe"),
                         _hashed(job_id, 2, "ffffffff00000000"), _scene(job_id, 3)])
    written: list[dict[uuid.UUID, uuid.UUID | None]] = []
    real_set = store.set_duplicates

    def recording(changes: dict[uuid.UUID, uuid.UUID | None]) -> None:
        written.append(dict(changes))
        real_set(changes)

    store.set_duplicates = recording  # type: ignore[method-assign]
    assert len(store.scene_hashes(replace(SPLIT, split="test"))) == 0  # a split with no scenes reads empty
    assert regroup(store, SPLIT, 4) == 1
    hashes = store.scene_hashes(SPLIT)
    id_of, duplicate_of = dict(zip(hashes.row_index, hashes.ids, strict=True)), dict(zip(hashes.row_index, hashes.duplicate_of, strict=True))
    assert sorted(id_of) == [0, 1, 2]  # row 3 has no hash
    assert duplicate_of[1] == id_of[0] and duplicate_of[0] is None
    assert regroup(store, SPLIT, 4) == 1
    assert written[-1] == {}  # nothing changed, nothing written
    # row 1's content changes to another picture: it is no longer a duplicate
    store.upsert_scenes([replace(_hashed(job_id, 1, "0f0f0f0f0f0f0f0f"), sha256="9" * 64)])
    assert regroup(store, SPLIT, 4) == 0
    assert written[-1] == {id_of[1]: None}


def test_the_supabase_functions_on_real_postgresql(postgres_url: str) -> None:
    engine = make_engine(_fresh_database(postgres_url))
    _apply_migrations(engine)
    job_id = uuid.uuid4()
    SqlJobStore(engine).create_job(job_id, {})

    def call(function: str, **args: object) -> object:
        placeholders = ", ".join(f"{k} => cast(:{k} as {t})" for k, t in (
            (k, "jsonb" if k in ("scenes", "changes") else "bigint" if k == "p_after_row" else
            "integer" if k == "p_limit" else "text")
            for k in args))
        with engine.begin() as conn:
            return conn.execute(sa.text(f"select * from {function}({placeholders})"), args).one()

    def upsert(scenes: list[object]) -> tuple[int, int, int]:
        payload = json.dumps([{**s.row(), "id": str(s.id), "job_id": str(s.job_id)} for s in scenes])  # type: ignore[attr-defined]
        row = call("hf_ingest_upsert_scenes", scenes=payload)
        return int(row.inserted), int(row.updated), int(row.backfilled)  # type: ignore[attr-defined]

    assert upsert([_scene(job_id, i) for i in range(3)]) == (3, 0, 0)  # recorded before derivatives
    assert upsert([_hashed(job_id, i, f"{i:016x}") for i in range(3)]) == (0, 3, 3)  # a backfill
    assert upsert([_hashed(job_id, i, f"{i:016x}") for i in range(3)]) == (0, 0, 0)  # nothing to write
    assert upsert([_scene(job_id, i) for i in range(3)]) == (0, 0, 0)  # without derivatives: kept

    def page(after: int, limit: int) -> list[list[object]]:
        return call("hf_ingest_scene_hashes", p_dataset="owner/name", p_config="default", p_split="train",
                    p_image_column="image", p_after_row=after, p_limit=limit)[0]  # type: ignore[index]

    assert [r[1] for r in page(-1, 2)] == [0, 1] and [r[1] for r in page(1, 2)] == [2] and page(2, 2) == []
    first, second = page(-1, 2)
    assert call("hf_ingest_set_duplicates", changes=json.dumps([{"id": second[0], "duplicate_of": first[0]}]))[0] == 1
    assert page(0, 1)[0][3] == first[0]
    engine.dispose()


def test_app_users_read_scenes_and_jobs_and_jobs_are_published_to_realtime(postgres_url: str) -> None:
    """Roles and publication as Supabase creates them; then the migrations, then each role's view."""
    engine = make_engine(_fresh_database(postgres_url))
    with engine.begin() as conn:
        for role in ("anon", "authenticated", "service_role"):
            conn.exec_driver_sql(f"do $$ begin create role {role} nologin; exception when duplicate_object then null; end $$")
        conn.exec_driver_sql("alter role service_role bypassrls")
        conn.exec_driver_sql("grant usage on schema public to anon, authenticated, service_role")
        conn.exec_driver_sql("alter default privileges in schema public grant all on tables to anon, authenticated, service_role")
        conn.exec_driver_sql("create publication supabase_realtime")
    _apply_migrations(engine)
    job_id = uuid.uuid4()
    store = SqlJobStore(engine)
    store.create_job(job_id, {"dataset": "owner/name"})
    store.upsert_scenes([_hashed(job_id, 0, "00000000000000ff")])
    with engine.begin() as conn:
        published = conn.exec_driver_sql(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'").scalars().all()
        assert published == ["jobs"]
        conn.exec_driver_sql("set local role authenticated")
        assert conn.exec_driver_sql("select count(*) from scenes").scalar() == 1
        assert conn.exec_driver_sql("select thumbnail_url from scenes").scalar() == "t0"
        assert conn.exec_driver_sql("select count(*) from jobs").scalar() == 1
    for statement in ("update jobs set status = 'failed'", "delete from scenes",
                      "select hf_ingest_set_duplicates('[]'::jsonb)"):
        with engine.begin() as conn:
            conn.exec_driver_sql("set local role authenticated")
            if statement.startswith("select"):
                with pytest.raises(sa.exc.ProgrammingError):  # no execute right
                    conn.exec_driver_sql(statement)
            else:
                assert conn.exec_driver_sql(statement).rowcount == 0  # RLS: no row to write
    with engine.begin() as conn:
        conn.exec_driver_sql("set local role anon")
        assert conn.exec_driver_sql("select count(*) from scenes").scalar() == 0
        assert conn.exec_driver_sql("select count(*) from jobs").scalar() == 0
    engine.dispose()


def test_the_supabase_client_pages_hashes_and_sends_changes_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hf_ingest.jobstore.supabase.SCENE_HASHES_PER_CALL", 2)
    monkeypatch.setattr("hf_ingest.jobstore.supabase.DUPLICATES_PER_CALL", 2)
    ids = [uuid.uuid4() for _ in range(3)]
    pages = [[[str(ids[0]), 0, "00000000000000ff", None], [str(ids[1]), 4, "00000000000000fe", str(ids[0])]],
             [[str(ids[2]), 9, "ffffffff00000000", None]]]
    with respx.mock(base_url="https://project.supabase.co", assert_all_called=True) as api:
        hashes = api.post("/rest/v1/rpc/hf_ingest_scene_hashes").mock(
            side_effect=[httpx.Response(200, json=page) for page in pages])
        sets = api.post("/rest/v1/rpc/hf_ingest_set_duplicates").mock(return_value=httpx.Response(200, json=2))
        store = SupabaseJobStore.from_credentials("https://project.supabase.co", "service-key")
        got = store.scene_hashes(SPLIT)
        store.set_duplicates({ids[1]: ids[0], ids[2]: None, ids[0]: None})
    assert got == SplitHashes(ids, [0, 4, 9], ["00000000000000ff", "00000000000000fe", "ffffffff00000000"], [None, ids[0], None])
    bodies = [json.loads(call.request.content) for call in hashes.calls]
    assert [b["p_after_row"] for b in bodies] == [-1, 4]
    assert {(b["p_dataset"], b["p_config"], b["p_split"], b["p_image_column"], b["p_limit"]) for b in bodies} == {
        ("owner/name", "default", "train", "image", 2)}
    sent = [json.loads(call.request.content)["changes"] for call in sets.calls]
    assert sent == [[{"id": str(ids[1]), "duplicate_of": str(ids[0])}, {"id": str(ids[2]), "duplicate_of": None}],
                    [{"id": str(ids[0]), "duplicate_of": None}]]
    assert all(call.request.headers["Authorization"] == "Bearer service-key" for call in sets.calls)
