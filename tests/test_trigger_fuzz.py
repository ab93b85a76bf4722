"""Hostile input at the trigger, generated with hypothesis: never a 500, never a job from a rejected request.

The app runs in-process (no Prefect API configured, so an accepted request answers 503 and
records a failed job, as designed); bodies are arbitrary JSON shaped like the schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_ingest import runtime

SECRET = "fuzz-secret-0123456789"
FIELDS = ["dataset", "config", "split", "image_column", "limit", "type", "table", "record", "schema", "extra"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
    st.sampled_from(["owner/name", "../..", "/etc/passwd", "a" * 5000, "train", "INSERT", "jobs", "\u202e\u0000x"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=10)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
    st.fixed_dictionaries({"dataset": st.text(max_size=2000)}, optional={"split": st.text(max_size=100), "limit": st.integers()}),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["INSERT", "UPDATE", "DELETE", "x"]), "table": st.text(max_size=20)},
        optional={"record": st.dictionaries(st.sampled_from(["id", "params", "kind", "status"]), values, max_size=4)},
    ),
    values,
)
headers = st.dictionaries(
    st.sampled_from(["Idempotency-Key", "Content-Type", "X-Other"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300),
    max_size=2,
)


@pytest.fixture
def client(isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    (isolated_settings / "datasets" / "ok").mkdir(parents=True)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("LOCAL_DATASET_ROOT", str(isolated_settings / "datasets"))
    monkeypatch.setenv("RECONCILE_INTERVAL_SECONDS", "0")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    runtime.reset()
    from deployments.trigger import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _jobs() -> int:
    with runtime.job_store().engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.execute(sa.text("select count(*) from jobs")).scalar_one())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, extra_headers=headers, authorized=st.booleans())
def test_no_500_and_no_job_from_a_rejected_request(client: TestClient, body: object, extra_headers: dict, authorized: bool) -> None:
    before = _jobs()
    request_headers = {k: v.encode("latin-1") for k, v in extra_headers.items()}
    if authorized:
        request_headers["Authorization"] = f"Bearer {SECRET}".encode()
    response = client.post("/process-huggingface", json=body, headers=request_headers)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code == 503:  # accepted, but no Prefect to run it here: the job waits, saying why
        assert response.json()["detail"].startswith("waiting for Prefect: ")
        assert _jobs() <= before + 1
    else:
        assert response.status_code in (401, 409, 415, 422, 429), response.text
        assert _jobs() == before
    assert SECRET not in response.text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(job_id=st.text(max_size=80), method=st.sampled_from(["GET", "POST"]))
def test_job_paths_never_500(client: TestClient, job_id: str, method: str) -> None:
    from urllib.parse import quote

    path = f"/jobs/{quote(job_id, safe='')}" + ("" if method == "GET" else "/cancel")
    response = client.request(method, path, headers={"Authorization": f"Bearer {SECRET}"})
    assert response.status_code in (404, 405, 422, 307, 200), (path, response.status_code, response.text)


def test_raw_garbage_bodies_are_422(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    for raw in (b"", b"{", b"\xff\xfe", b"[1,2", b'{"dataset": "owner/name"' + b" " * 10, b"null"):
        response = client.post("/process-huggingface", content=raw, headers=auth)
        assert response.status_code == 422, (raw, response.text)
    assert _jobs() == 0


def test_a_repeat_while_prefect_is_unreachable_tries_again_and_the_job_waits_queued(client: TestClient) -> None:
    """Prefect down is not the job's fault: it stays `queued` with the reason, a repeat with the same
    Idempotency-Key tries to start it again (the reconciler does too), and no second job is made."""
    auth = {"Authorization": f"Bearer {SECRET}", "Idempotency-Key": "repeat-after-503"}
    first = client.post("/process-huggingface", json={"dataset": "owner/name"}, headers=auth)
    assert first.status_code == 503  # no Prefect to take the run here
    job_id = first.json()["job_id"]
    job = client.get(f"/jobs/{job_id}", headers={"Authorization": f"Bearer {SECRET}"}).json()
    assert job["status"] == "queued" and job["error"].startswith("waiting for Prefect: ")
    again = client.post("/process-huggingface", json={"dataset": "owner/name"}, headers=auth)
    assert again.status_code == 503 and again.json()["job_id"] == job_id
    assert _jobs() == 1
