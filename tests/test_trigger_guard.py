"""The trigger's front door: the token before any body, bodies capped on the stream, failing clients slowed.

In-process (Starlette's TestClient over the real ASGI app: it hands a body over whole, so what the
server reads of a streamed body, and its memory under hostile load, are measured against the real
uvicorn process in test_trigger_e2e.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deployments.guard import FailedAuthLimiter
from hf_ingest import runtime

SECRET = "guard-secret-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def client(isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MAX_REQUEST_BYTES", "4096")
    monkeypatch.setenv("RECONCILE_INTERVAL_SECONDS", "0")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    runtime.reset()
    from deployments.trigger import app, failed_auth

    failed_auth.failures.clear()
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _chunked_body(kilobytes: int) -> Iterator[bytes]:
    for _ in range(kilobytes):
        yield b"x" * 1024


def test_a_wrong_token_is_refused_before_the_body_is_read(client: TestClient) -> None:
    response = client.post("/process-huggingface", content=b"{not json", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "missing or invalid bearer token"}  # not a 422: never parsed
    assert response.headers["connection"] == "close"  # the rest of a body is never received


def test_a_declared_body_over_the_limit_is_413_before_it_is_read(client: TestClient) -> None:
    response = client.post(
        "/process-huggingface", content=b"{" + b" " * 5000 + b"}", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and "MAX_REQUEST_BYTES=4096" in response.json()["detail"]


def test_a_chunked_body_is_cut_off_at_the_limit(client: TestClient) -> None:
    response = client.post("/process-huggingface", content=_chunked_body(100), headers=AUTH)
    assert response.status_code == 413 and "MAX_REQUEST_BYTES=4096" in response.json()["detail"]
    assert client.post("/process-huggingface", content=_chunked_body(3), headers=AUTH).status_code == 422


def test_a_body_within_the_limit_reaches_the_app(client: TestClient) -> None:
    response = client.post("/process-huggingface", json={"dataset": "../etc"}, headers=AUTH)
    assert response.status_code == 422  # validated by the app, as before


def test_open_paths_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000").status_code == 401


def test_a_client_that_keeps_failing_gets_429_and_a_valid_token_still_passes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses = [client.get("/jobs/x", headers={"Authorization": f"Bearer wrong-{i}"}).status_code for i in range(25)]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
    limited = client.get("/jobs/x", headers={"Authorization": "Bearer wrong"})
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert client.get("/jobs/00000000-0000-0000-0000-000000000000", headers=AUTH).status_code == 404


def test_the_limiter_forgets_failures_after_its_window() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(limit=lambda: 3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.record_failure("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None  # per client
    now[0] += 30
    assert limiter.retry_after("10.0.0.1") == 30
    now[0] += 31
    assert limiter.retry_after("10.0.0.1") is None


def test_no_secret_configured_is_503_for_everyone(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET")
    runtime.reset()
    response = client.post("/process-huggingface", json={"dataset": "a/b"}, headers=AUTH)
    assert response.status_code == 503 and "WEBHOOK_SECRET is not configured" in response.json()["detail"]
