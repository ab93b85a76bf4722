"""The platform restarts under a running import, on the stack `make up` starts with its defaults: the Prefect
server down for over a minute (a restart, an upgrade, a Prefect Cloud blip), and the stack's PostgreSQL (Prefect's
database and the jobs and scenes) stopped and started again. The imports wait and go on; each ends
`completed` with exactly one scene per valid image, and no one retries anything. An import whose outage
outlasts its OUTAGE_SECONDS fails saying what was unreachable, and `POST /jobs/{id}/retry` completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from hf_ingest.hub_formats import encode_image, write_parquet_dataset
from tests.live_stack import CHECKOUT, LiveStack, _stack_command
from tests.test_trigger_e2e import _flow_run_id_from


ROWS = 8000  # per import: ~10 s in 64-row batches (the session stack's BATCH_SIZE), two at once

# tests/worker_groups.py runs this module whole on one worker of `make test`, in the "live-stack" group.


def _dataset(stack: LiveStack, name: str, rows: int, files: int) -> str:
    """`rows` distinct PNGs in `files` parquet files, under the trigger's dataset root; returns its path."""
    images = [{"image": encode_image((20, 16), "PNG", color=(i % 256, (i // 256) % 256, 31)), "i": i}
              for i in range(rows)]
    write_parquet_dataset(stack.datasets / name, images, shards=files)
    return str(stack.datasets / name)


def _scenes(stack: LiveStack, dataset: str) -> tuple[int, int]:
    with stack.store.engine.connect() as conn:
        count, distinct = conn.execute(
            sa.text("select count(*), count(distinct row_index) from scenes where dataset = :d"), {"d": dataset}
        ).one()
    return int(count), int(distinct)


def _mid_import(stack: LiveStack, *job_ids: str, timeout: float = 90) -> None:
    """Until every job is running with rows already stored (and none has finished)."""
    deadline = time.monotonic() + timeout
    with stack.client() as client:
        while True:
            answers = [client.get(f"/jobs/{job_id}") for job_id in job_ids]  # 404: a deployment run not started yet
            jobs = [a.json() if a.status_code == 200 else {"status": "queued", "progress": {}} for a in answers]
            if all(j["status"] == "running" and j["progress"].get("rows_seen", 0) > 0 for j in jobs):
                assert all(j["progress"].get("rows_seen", 0) < ROWS for j in jobs), jobs  # not done
                return
            assert all(j["status"] in ("queued", "running") for j in jobs) and time.monotonic() < deadline, jobs
            time.sleep(0.2)


def _stop(stack: LiveStack, name: str, sig: signal.Signals) -> None:
    pid = json.loads((stack.state / "run" / f"{name}.pid").read_text())["pid"]
    os.killpg(pid, sig)


def _up(env: dict[str, str]) -> None:
    up = _stack_command(env, "up")
    assert up.returncode == 0, up.stdout + up.stderr


@pytest.fixture(scope="module")
def stack_defaults(live_stack: LiveStack) -> Iterator[dict[str, str]]:
    """`make up`'s environment with the default zombie automation (no heartbeat for 6 intervals); the session's
    stack has a shorter one for the tests that kill workers, given back afterwards."""
    env = {name: value for name, value in live_stack.env.items() if name != "HF_INGEST_ZOMBIE_SECONDS"}
    _up(env)
    try:
        yield env
    finally:
        _up(live_stack.env)


def _run_deployment(stack: LiveStack, dataset: str, env: dict[str, str]) -> str:
    """`prefect deployment run` with the run's own environment (a job variable, as a user can pass one)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", "hf-ingest/default",
         "-p", f"dataset={dataset}", "--job-variable", f"env={json.dumps(env)}"],
        env={**stack.env, "PREFECT_API_URL": stack.api_url}, cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return _flow_run_id_from(result.stdout)


@pytest.mark.timeout(420)
def test_the_prefect_server_down_for_a_minute_mid_import(live_stack: LiveStack, stack_defaults: dict[str, str]) -> None:
    """Two imports run; the Prefect server is SIGKILLed and `make up` starts it again 60 s later. The one with the
    defaults waits (its batches for their write slots: Prefect's client retries a lost connection for a minute,
    then hf-ingest for OUTAGE_SECONDS) and completes. The other was run for fast failure (OUTAGE_SECONDS=10, and
    Prefect's client retrying once): it fails saying the Prefect API was unreachable, and its retry completes."""
    waits = _dataset(live_stack, "prefect-restart", ROWS, 4)
    gives_up = _dataset(live_stack, "prefect-restart-gives-up", ROWS, 4)
    with live_stack.client() as client:
        waiting = client.post("/process-huggingface", json={"dataset": "prefect-restart"}).json()["job_id"]
    giving_up = _run_deployment(live_stack, gives_up, {"OUTAGE_SECONDS": "10", "PREFECT_CLIENT_MAX_RETRIES": "1"})
    _mid_import(live_stack, waiting, giving_up)  # (a deployment run's job id is its flow run id)
    _stop(live_stack, "server", signal.SIGKILL)
    time.sleep(60)
    _up(stack_defaults)

    job = live_stack.wait_for(waiting, {"completed", "failed", "cancelled"}, timeout=240)
    assert job["status"] == "completed", (job["error"], job["progress"])
    assert _scenes(live_stack, waits) == (ROWS, ROWS) and job["progress"]["rows_seen"] == ROWS
    failed = live_stack.wait_for(giving_up, {"completed", "failed", "cancelled"}, timeout=60)
    assert failed["status"] == "failed", failed
    assert failed["error"].startswith(f"Unreachable: the Prefect API ({live_stack.api_url}) was unreachable for "), \
        failed["error"]
    assert "(OUTAGE_SECONDS=10)" in failed["error"]
    with live_stack.client() as client:
        retried = client.post(f"/jobs/{giving_up}/retry")
    assert retried.status_code == 202, retried.text
    job = live_stack.wait_for(retried.json()["job_id"], {"completed", "failed"}, timeout=180)
    assert job["status"] == "completed", job
    assert _scenes(live_stack, gives_up) == (ROWS, ROWS)


@pytest.mark.timeout(300)
def test_a_restart_of_the_stacks_postgresql_mid_import(live_stack: LiveStack, stack_defaults: dict[str, str]) -> None:
    """The stack's PostgreSQL, which holds Prefect's database and the jobs and scenes, is stopped mid-import as
    `make down` stops it (every connection of the server, the worker's runs and the trigger dropped) and
    started again by `make up` 15 s later: the import waits for it and completes, every image recorded once."""
    dataset = _dataset(live_stack, "database-restart", ROWS, 4)
    with live_stack.client() as client:
        job_id = client.post("/process-huggingface", json={"dataset": "database-restart"}).json()["job_id"]
    _mid_import(live_stack, job_id)
    _stop(live_stack, "prefect-db", signal.SIGTERM)
    deadline = time.monotonic() + 30
    while (live_stack.state / "run" / "prefect-db.url").exists():  # the holder removes it once PostgreSQL stopped
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(15)
    _up(stack_defaults)
    job = live_stack.wait_for(job_id, {"completed", "failed", "cancelled"}, timeout=240)
    assert job["status"] == "completed", (job["error"], job["progress"])
    assert _scenes(live_stack, dataset) == (ROWS, ROWS) and job["progress"]["rows_seen"] == ROWS
