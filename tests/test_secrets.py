"""No configured secret appears in logs, job rows, errors or anything Prefect stores,
even when the failure is about that very credential."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from flows.import_dataset import hf_ingest
from hf_ingest import runtime
from hf_ingest.sample import write_sample_dataset

pytestmark = pytest.mark.usefixtures("prefect_api")

SECRETS = {
    "WEBHOOK_SECRET": "whsec-4f9c2b7e1d",
    "HF_TOKEN": "hf_tok_8c1e5a9f3b7d",
    "SUPABASE_SERVICE_ROLE_KEY": "sb-service-role-77aa19",
}


@pytest.fixture
def with_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    return dict(SECRETS)


def _prefect_records(flow_run_id: str) -> str:
    """Everything Prefect keeps about the run: its states, logs, artifacts, parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    async def collect() -> str:
        await APILogHandler.aflush()
        async with get_client() as client:
            run_id = uuid.UUID(flow_run_id)
            run = await client.read_flow_run(run_id)
            states = await client.read_flow_run_states(run_id)
            logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            tasks = await client.read_task_runs()
            parts = [run.model_dump_json(), *(s.model_dump_json() for s in states)]
            parts += [log.message for log in logs] + [a.model_dump_json() for a in artifacts]
            parts += [t.model_dump_json() for t in tasks if t.flow_run_id == run_id]
            assert logs, "the run's logs reached the Prefect API"
            return "\n".join(parts)

    return asyncio.run(collect())


def _database_dump() -> str:
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        rows = [dict(r._mapping) for r in conn.execute(sa.text("select * from jobs"))]
        rows += [dict(r._mapping) for r in conn.execute(sa.text("select * from scenes"))]
    return json.dumps(rows, default=str)


def _assert_clean(text: str, secrets: dict[str, str]) -> None:
    for name, value in secrets.items():
        assert value not in text, f"{name} leaked"


def test_a_failure_about_the_token_itself_leaks_it_nowhere(
    with_secrets: dict[str, str], isolated_settings: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import flows.import_tasks as module

    token = with_secrets["HF_TOKEN"]

    def rejected(*_: object, **__: object) -> None:
        raise PermissionError(f"401 Client Error: Unauthorized: token {token} is not valid for owner/private")

    monkeypatch.setattr(module, "open_dataset", rejected)
    caplog.set_level(logging.DEBUG)
    job_id = uuid.uuid4()
    state = asyncio.run(hf_ingest(dataset=str(write_sample_dataset(isolated_settings / "s")), job_id=job_id, return_state=True))

    assert state.is_failed()
    job = runtime.job_store().get_job(job_id)
    assert job and job.status.value == "failed"
    assert "401 Client Error" in (job.error or "") and "***" in (job.error or "")  # still says what went wrong
    _assert_clean(job.error or "", with_secrets)
    _assert_clean(state.message or "", with_secrets)
    _assert_clean(_database_dump(), with_secrets)
    _assert_clean("\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records), with_secrets)
    _assert_clean(_prefect_records(str(job.flow_run_id)), with_secrets)


def test_s3_keys_stay_out_of_everything_on_success_and_on_failure(
    with_secrets: dict[str, str], isolated_settings: Path, s3_settings: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.conftest import S3_KEY_ID, S3_SECRET

    secrets = {**with_secrets, "AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    caplog.set_level(logging.DEBUG)
    dataset = write_sample_dataset(isolated_settings / "s")
    ok, failed = uuid.uuid4(), uuid.uuid4()
    asyncio.run(hf_ingest(dataset=str(dataset), job_id=ok))
    monkeypatch.setenv("STORAGE_URL", "s3://bucket-that-does-not-exist/x")
    runtime.reset()
    state = asyncio.run(hf_ingest(dataset=str(dataset), job_id=failed, return_state=True))
    assert state.is_failed()

    store = runtime.job_store()
    assert store.get_job(ok).status.value == "completed"  # type: ignore[union-attr]
    assert "bucket does not exist" in (store.get_job(failed).error or "")  # type: ignore[union-attr]
    _assert_clean(_database_dump(), secrets)
    _assert_clean("\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records), secrets)
    for job_id in (ok, failed):
        _assert_clean(_prefect_records(str(store.get_job(job_id).flow_run_id)), secrets)  # type: ignore[union-attr]


def test_settings_never_render_secrets(with_secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.settings import Settings

    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db-password-31f7@db.example.com/app")
    settings = Settings()
    text = repr(settings) + str(settings) + settings.model_dump_json()
    _assert_clean(text, {**with_secrets, "password": "db-password-31f7"})
    assert "db-password-31f7" in settings.secret_values()


def test_the_hf_token_reaches_the_hub_and_nothing_else(
    isolated_settings: Path, hub: object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A private imagefolder repo through the real Hub server: with HF_TOKEN every read is authorised and
    the import completes; with a wrong one it fails saying so. Neither token appears anywhere we keep."""
    from hf_ingest.hub_formats import encode_image, write_imagefolder
    from tests.hub_server import HUB_TOKEN

    files = [(f"{i}.png", encode_image((30 + i, 20), "PNG", color=(i, 9, 9)), {"i": i}) for i in range(5)]
    repo = f"tester/private-secret-{uuid.uuid4().hex[:6]}"
    hub.publish(repo, write_imagefolder(isolated_settings / "up", files, metadata_format="jsonl"))  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG)
    wrong = "hf_wrong_token_5d1c9a0e77"
    secrets = {"HF_TOKEN": HUB_TOKEN, "wrong HF_TOKEN": wrong}

    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    runtime.reset()
    ok = uuid.uuid4()
    assert asyncio.run(hf_ingest(dataset=repo, job_id=ok, return_state=True)).is_completed()
    monkeypatch.setenv("HF_TOKEN", wrong)
    runtime.reset()
    refused = uuid.uuid4()
    assert asyncio.run(hf_ingest(dataset=repo, job_id=refused, return_state=True)).is_failed()

    store = runtime.job_store()
    assert store.get_job(ok).progress["scenes_recorded"] == 5  # type: ignore[union-attr]
    assert "HF_TOKEN's account must have access" in (store.get_job(refused).error or "")  # type: ignore[union-attr]
    _assert_clean(_database_dump(), secrets)
    _assert_clean("\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records), secrets)
    for job_id in (ok, refused):
        _assert_clean(_prefect_records(str(store.get_job(job_id).flow_run_id)), secrets)  # type: ignore[union-attr]
