"""The jobs store over Supabase's REST gateway (PostgREST), for apps that only hold a service role key.

Same semantics as the SQL store: forward-only status through a filtered PATCH,
idempotent scene inserts through `Prefer: resolution=ignore-duplicates`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import httpx
from postgrest.exceptions import APIError
from supabase import Client, ClientOptions, create_client

from hf_ingest.jobstore.model import (
    JOB_KIND,
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
from hf_ingest.transient import PermanentIngestError

T = TypeVar("T")

# PostgREST codes for "the database is unreachable or busy": worth a retry.
_TRANSIENT_POSTGREST_CODES = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "40001", "40P01")


UPSERT_SCENES_FUNCTION = "hf_ingest_upsert_scenes"  # supabase/migrations/20261202000000_scenes_for_the_app.sql
SCENE_HASHES_FUNCTION = "hf_ingest_scene_hashes"  # the same migration
SET_DUPLICATES_FUNCTION = "hf_ingest_set_duplicates"
RECORD_LAYOUT_FUNCTION = "hf_ingest_record_layout"  # supabase/migrations/20261203000000_keep_datasets_current.sql
REMOVE_SCENES_FUNCTION = "hf_ingest_remove_scenes"
RESERVE_SHARD_ROWS_FUNCTION = "hf_ingest_reserve_shard_rows"  # supabase/migrations/20261203120000_shard_split.sql
SPLIT_SHARD_FUNCTION = "hf_ingest_split_shard"
KNOWN_FILES_PER_CALL = 100
LAYOUT_ROWS_PER_CALL = 1000  # Supabase's default `max-rows`: a layout longer than that is read in pages
SCENE_HASHES_PER_CALL = 100_000  # one JSON value of ~10 MB per call
DUPLICATES_PER_CALL = 10_000
UPSERT_SCENES_PER_CALL = 2048  # a batch of small images holds up to BATCH_SIZE (8192) rows: a few MB of JSON a call


class SupabaseUnavailable(ConnectionError):
    """Supabase answered with a retryable error (gateway 5xx/429, database connection trouble)."""


class SupabaseRequestError(PermanentIngestError):
    """Supabase refused the request in a way retrying will not fix (bad key, schema mismatch, ...)."""


def _call(request: Callable[[], T]) -> T:
    """Run one PostgREST request, mapping its failures onto transient vs permanent errors."""
    try:
        return request()
    except APIError as exc:
        code = str(exc.code or "")
        text = f"Supabase request failed ({code or 'no code'}): {exc.message or 'no message'}"
        if code in _TRANSIENT_POSTGREST_CODES or code.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            raise SupabaseUnavailable(text) from None
        if code.isdigit() and (code in {"408", "425", "429"} or code.startswith("5")):
            raise SupabaseUnavailable(text) from None
        if code in {"401", "403", "PGRST301", "PGRST302"}:
            text += " (check SUPABASE_SERVICE_ROLE_KEY)"
        raise SupabaseRequestError(text) from None
    except httpx.TransportError as exc:
        raise SupabaseUnavailable(f"Supabase unreachable: {type(exc).__name__}") from None


class SupabaseJobStore:
    """`JobStore` over the Supabase client; needs the tables of `supabase/migrations/`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @classmethod
    def from_credentials(cls, url: str, service_role_key: str, timeout: float = 30.0) -> SupabaseJobStore:
        options = ClientOptions(postgrest_client_timeout=timeout, auto_refresh_token=False, persist_session=False)
        return cls(create_client(url, service_role_key, options))

    def create_job(
        self, job_id: uuid.UUID, params: dict[str, Any], *, flow_run_id: str | None = None
    ) -> Job:
        now = utcnow().isoformat()
        row = {
            "id": str(job_id),
            "kind": JOB_KIND,
            "status": JobStatus.QUEUED.value,
            "params": params,
            "flow_run_id": flow_run_id,
            "progress": {},
            "created_at": now,
            "updated_at": now,
        }
        _call(
            lambda: self.client.table("jobs")
            .upsert(row, on_conflict="id", ignore_duplicates=True, returning="minimal")
            .execute()
        )
        job = self.get_job(job_id)
        if job is None:
            raise SupabaseRequestError(f"job {job_id} was not readable right after it was created")
        return job

    def get_job(self, job_id: uuid.UUID) -> Job | None:
        response = _call(
            lambda: self.client.table("jobs").select("*").eq("id", str(job_id)).limit(1).execute()
        )
        return _job(response.data[0]) if response.data else None

    def advance(
        self,
        job_id: uuid.UUID,
        status: JobStatus,
        *,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> bool:
        now = utcnow().isoformat()
        values: dict[str, Any] = {"status": status.value, "updated_at": now}
        if status is JobStatus.RUNNING:
            values["started_at"] = now
        if status.is_terminal:
            values["finished_at"] = now
        if error is not None:
            values["error"] = error
        if progress is not None:
            values["progress"] = progress
        allowed = sorted(s.value for s in predecessors(status))
        response = _call(
            lambda: self.client.table("jobs")
            .update(values)
            .eq("id", str(job_id))
            .in_("status", allowed)
            .execute()
        )
        return len(response.data) == 1

    def set_flow_run_id(self, job_id: uuid.UUID, flow_run_id: str) -> None:
        now = utcnow().isoformat()
        _call(
            lambda: self.client.table("jobs")
            .update({"flow_run_id": flow_run_id, "updated_at": now}, returning="minimal")
            .eq("id", str(job_id))
            .execute()
        )
        _call(
            lambda: self.client.table("jobs")
            .update({"error": None}, returning="minimal")
            .eq("id", str(job_id))
            .eq("status", JobStatus.QUEUED.value)
            .execute()
        )

    def set_error(self, job_id: uuid.UUID, error: str) -> None:
        _call(
            lambda: self.client.table("jobs")
            .update({"error": error, "updated_at": utcnow().isoformat()}, returning="minimal")
            .eq("id", str(job_id))
            .eq("status", JobStatus.QUEUED.value)
            .execute()
        )

    def update_progress(self, job_id: uuid.UUID, progress: dict[str, Any]) -> None:
        _call(
            lambda: self.client.table("jobs")
            .update({"progress": progress, "updated_at": utcnow().isoformat()}, returning="minimal")
            .eq("id", str(job_id))
            .execute()
        )

    def list_jobs(self, statuses: Sequence[JobStatus]) -> list[Job]:
        response = _call(
            lambda: self.client.table("jobs")
            .select("*")
            .in_("status", [s.value for s in statuses])
            .order("created_at")
            .execute()
        )
        return [_job(row) for row in response.data]

    def upsert_scenes(self, rows: Sequence[Scene]) -> SceneWrites:
        """One call of the migration's `hf_ingest_upsert_scenes` function: PostgREST's own upsert cannot
        say which rows were new and which replaced, nor replace only rows of another revision."""
        if not rows:
            return SceneWrites(0)
        payload = [
            {**scene.row(), "id": str(scene.id), "job_id": str(scene.job_id)} for scene in latest_per_key(rows)
        ]
        inserted = updated = backfilled = 0
        for first in range(0, len(payload), UPSERT_SCENES_PER_CALL):  # each call idempotent: a retry repeats it
            chunk = payload[first:first + UPSERT_SCENES_PER_CALL]
            response = _call(lambda chunk=chunk: self.client.rpc(UPSERT_SCENES_FUNCTION, {"scenes": chunk}).execute())
            counts = response.data[0] if isinstance(response.data, list) else response.data
            inserted, updated = inserted + int(counts["inserted"]), updated + int(counts["updated"])
            backfilled += int(counts.get("backfilled") or 0)
        return SceneWrites(inserted, updated, backfilled)

    def scene_hashes(self, split: SplitKey) -> SplitHashes:
        """Page by page (by row_index) through the migration's `hf_ingest_scene_hashes`."""
        found: list[tuple[uuid.UUID, int, str, uuid.UUID | None]] = []
        after = -1
        while True:
            params = {"p_dataset": split.dataset, "p_config": split.config, "p_split": split.split,
                      "p_image_column": split.image_column, "p_after_row": after, "p_limit": SCENE_HASHES_PER_CALL}
            page = _call(lambda params=params: self.client.rpc(SCENE_HASHES_FUNCTION, params).execute()).data or []
            found += [(uuid.UUID(i), int(r), h, uuid.UUID(d) if d else None) for i, r, h, d in page]
            if len(page) < SCENE_HASHES_PER_CALL:
                return SplitHashes.from_rows(found)
            after = found[-1][1]

    def set_duplicates(self, changes: Mapping[uuid.UUID | str, uuid.UUID | str | None]) -> None:
        items = [{"id": str(i), "duplicate_of": str(f) if f else None} for i, f in changes.items()]
        for first in range(0, len(items), DUPLICATES_PER_CALL):  # idempotent: a retry sets the same values
            chunk = items[first:first + DUPLICATES_PER_CALL]
            _call(lambda chunk=chunk: self.client.rpc(SET_DUPLICATES_FUNCTION, {"changes": chunk}).execute())

    def count_scenes(self, *, job_id: uuid.UUID | None = None, dataset: str | None = None) -> int:
        def request() -> Any:
            query = self.client.table("scenes").select("id", count="exact", head=True)  # type: ignore[arg-type]
            if job_id is not None:
                query = query.eq("job_id", str(job_id))
            if dataset is not None:
                query = query.eq("dataset", dataset)
            return query.execute()

        return int(_call(request).count or 0)

    def read_layout(self, split: SplitKey) -> SplitLayout | None:
        """Page by page (by position): PostgREST answers at most its `max-rows` (Supabase: 1,000) rows a
        request, and an imagefolder's layout has a row per image. Pages end at the first empty one, whatever
        the server's cap."""
        rows: list[dict[str, Any]] = []
        while True:
            after = rows[-1]["position"] if rows else -1
            page = _call(
                lambda after=after: self.client.table("split_files").select("*").eq("dataset", split.dataset)
                .eq("config", split.config).eq("split", split.split).eq("image_column", split.image_column)
                .gt("position", after).order("position").limit(LAYOUT_ROWS_PER_CALL).execute()
            ).data or []
            if not page:
                return layout_of(rows)
            rows += page

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
        """One call of the migration's `hf_ingest_record_layout` (one transaction: a retry finds it all or nothing)."""
        params = record_layout_params(split, layout, moves, end_row, revision, job_id, expected)
        try:
            data = _call(lambda: self.client.rpc(RECORD_LAYOUT_FUNCTION, params).execute()).data or {}
        except SupabaseRequestError as exc:
            if "layout changed" in str(exc):
                raise LayoutChanged(str(exc)) from None
            raise
        return LayoutWrites(moved=int(data.get("moved") or 0), removed=int(data.get("removed") or 0))

    def known_files(self, dataset: str, content_ids: Sequence[str]) -> dict[str, KnownFile]:
        found: dict[str, KnownFile] = {}
        for start in range(0, len(content_ids), KNOWN_FILES_PER_CALL):  # ids go in the URL: a few at a time
            chunk = list(content_ids[start:start + KNOWN_FILES_PER_CALL])
            response = _call(lambda chunk=chunk: self.client.table("split_files")
                             .select("content_id,rows,arrow_schema").eq("dataset", dataset).in_("content_id", chunk)
                             .execute())
            found.update(known_files_of(response.data or []))
        return found

    def remove_scenes(self, split: SplitKey, rows: Sequence[tuple[str, int]], revision: str | None) -> int:
        if not rows:
            return 0
        params = remove_scenes_params(split, rows, revision)
        return int(_call(lambda: self.client.rpc(REMOVE_SCENES_FUNCTION, params).execute()).data or 0)

    def add_shards(self, shards: Sequence[Shard]) -> list[Shard]:
        if not shards:
            return []
        now = utcnow().isoformat()
        rows = [{**s.row(), "job_id": str(s.job_id), "updated_at": now} for s in shards]
        _call(
            lambda: self.client.table("job_shards")
            .upsert(rows, on_conflict="job_id,shard", ignore_duplicates=True, returning="minimal")
            .execute()
        )
        return self.list_shards(shards[0].job_id)

    def list_shards(self, job_id: uuid.UUID) -> list[Shard]:
        response = _call(
            lambda: self.client.table("job_shards").select("*").eq("job_id", str(job_id)).order("shard").execute()
        )
        return [_shard(row) for row in response.data]

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
        values: dict[str, Any] = {
            **shard_changes(status, checkpoint, counts, flow_run_id, error), "updated_at": utcnow().isoformat()
        }
        if attempt:  # one writer per shard (the parent run): a read, then the write
            current = next((s for s in self.list_shards(job_id) if s.shard == shard), None)
            values["attempts"] = (current.attempts if current else 0) + 1
        _call(
            lambda: self.client.table("job_shards")
            .update(values, returning="minimal")
            .eq("job_id", str(job_id))
            .eq("shard", shard)
            .neq("status", ShardStatus.COMPLETED.value)
            .execute()
        )


    def claim_shard(self, job_id: uuid.UUID, shard: int, attempt: int, runner: str) -> Shard | None:
        response = _call(
            lambda: self.client.table("job_shards")
            .update({"status": ShardStatus.RUNNING.value, "flow_run_id": runner, "updated_at": utcnow().isoformat()})
            .eq("job_id", str(job_id))
            .eq("shard", shard)
            .eq("status", ShardStatus.PENDING.value)
            .eq("attempts", attempt)
            .execute()
        )
        return _shard(response.data[0]) if response.data else None

    def reserve_shard_rows(self, job_id: uuid.UUID, shard: int, upto: int) -> int:
        params = {"p_job_id": str(job_id), "p_shard": shard, "p_upto": upto}
        reserved = _call(lambda: self.client.rpc(RESERVE_SHARD_ROWS_FUNCTION, params).execute()).data
        if reserved is None:
            raise KeyError(f"job {job_id} has no shard {shard}")
        return int(reserved)

    def split_shard(self, job_id: uuid.UUID, shard: int, at: int, end_row: int) -> Shard | None:
        params = {"p_job_id": str(job_id), "p_shard": shard, "p_at": at, "p_end_row": end_row}
        rows = _call(lambda: self.client.rpc(SPLIT_SHARD_FUNCTION, params).execute()).data or []
        return _shard(rows[0]) if rows else None


def _files_json(layout: SplitLayout) -> list[dict[str, Any]]:
    return [{"name": f.name, "content_id": f.content_id, "rows": f.rows, "first_row": f.first_row, "done": f.done,
             "revision": f.revision} for f in layout.files]


def record_layout_params(split: SplitKey, layout: SplitLayout | None, moves: Sequence[RowMove], end_row: int | None,
                         revision: str | None, job_id: uuid.UUID, expected: Expected | None = None) -> dict[str, Any]:
    """The arguments of `hf_ingest_record_layout`, as JSON."""
    before = expected.layout if expected is not None else None
    return {
        "p_dataset": split.dataset, "p_config": split.config, "p_split": split.split,
        "p_image_column": split.image_column, "p_fingerprint": layout.fingerprint if layout else "",
        "p_files": [{**entry, "schema": f.schema} for entry, f in zip(_files_json(layout), layout.files, strict=True)]
        if layout else None,
        "p_moves": [{"first_row": m.first_row, "end_row": m.end_row, "shift": m.shift} for m in moves],
        "p_end_row": end_row, "p_revision": revision, "p_job": str(job_id), "p_check": expected is not None,
        "p_expected": {"fingerprint": before.fingerprint if before else None,
                       "files": _files_json(before) if before else []},
    }


def remove_scenes_params(split: SplitKey, rows: Sequence[tuple[str, int]], revision: str | None) -> dict[str, Any]:
    """The arguments of `hf_ingest_remove_scenes`, as JSON."""
    return {"p_dataset": split.dataset, "p_config": split.config, "p_split": split.split, "p_revision": revision,
            "p_rows": [{"image_column": column, "row_index": row} for column, row in rows]}


def _shard(row: dict[str, Any]) -> Shard:
    return Shard(
        job_id=uuid.UUID(row["job_id"]), shard=int(row["shard"]), first_row=int(row["first_row"]),
        end_row=int(row["end_row"]), status=ShardStatus(row["status"]), checkpoint=int(row.get("checkpoint") or 0),
        counts=row.get("counts") or {}, attempts=int(row.get("attempts") or 0), flow_run_id=row.get("flow_run_id"),
        error=row.get("error"), reserved_row=None if row.get("reserved_row") is None else int(row["reserved_row"]),
    )


def _parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _job(row: dict[str, Any]) -> Job:
    return Job(
        id=uuid.UUID(row["id"]),
        kind=row.get("kind") or JOB_KIND,
        status=JobStatus(row["status"]),
        params=row.get("params") or {},
        flow_run_id=row.get("flow_run_id"),
        error=row.get("error"),
        progress=row.get("progress") or {},
        created_at=_parse_ts(row["created_at"]) or utcnow(),
        updated_at=_parse_ts(row.get("updated_at")) or utcnow(),
        started_at=_parse_ts(row.get("started_at")),
        finished_at=_parse_ts(row.get("finished_at")),
    )
